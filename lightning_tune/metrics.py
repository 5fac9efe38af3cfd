"""The classification metrics, and the one place that knows which direction each improves in."""

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision, MulticlassRecall

from lightning_tune.errors import ConfigError

METRICS = ("acc", "precision", "recall", "f1", "loss")
EVAL_STAGES = ("val", "test")


def classification_metrics(num_classes: int) -> MetricCollection:
    """Accuracy (micro) and macro precision, recall and F1."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        }
    )


class EpochOutputs:
    """A training epoch's step outputs, kept where they were computed: predictions, targets, losses.

    A step appends a few tensors, with no host sync and no metric object to update: updating four
    torchmetrics objects and calling `self.log` on every step cost more than the forward and backward
    pass of a small net. The epoch's metrics are computed from them once, at its end.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.batches: list[int] = []
        self.sizes: list[int] = []
        self.predictions: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []
        self.penalties: list[torch.Tensor] = []
        self.checked = 0  # steps already checked for a non-finite loss

    def add(
        self,
        batch: int,
        logits: torch.Tensor,
        targets: torch.Tensor,
        loss: torch.Tensor,
        penalty: Optional[torch.Tensor],
    ) -> None:
        self.batches.append(batch)
        self.sizes.append(len(targets))
        self.predictions.append(logits.argmax(dim=1))
        self.targets.append(targets)
        self.losses.append(loss)
        if penalty is not None:
            self.penalties.append(penalty)

    def first_non_finite(self) -> Optional[tuple[int, float]]:
        """(batch, loss) of the first step not checked before whose loss, penalty included, is NaN or infinite."""
        if self.checked == len(self.losses):
            return None
        totals = torch.stack(self.losses[self.checked :])
        if self.penalties:
            totals = totals + torch.stack(self.penalties[self.checked :])
        bad = torch.nonzero(~torch.isfinite(totals)).flatten().tolist()  # the one host sync
        first, self.checked = self.checked, len(self.losses)
        return (self.batches[first + bad[0]], totals[bad[0]].item()) if bad else None

    def labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All of the epoch's (predictions, targets)."""
        return torch.cat(self.predictions), torch.cat(self.targets)

    def mean(self, values: list[torch.Tensor]) -> torch.Tensor:
        """The mean of per-step `losses` or `penalties` over samples, as Lightning's `on_epoch` mean weights them."""
        sizes = torch.tensor(self.sizes, dtype=values[0].dtype, device=values[0].device)
        return (torch.stack(values) * sizes).sum() / sizes.sum()


MODEL_OBJECTIVES = ("model/params", "model/latency_ms")  # smaller is better


def objective_names(cfg: Any) -> list[str]:
    """What a sweep optimizes: `objectives` for a multi-objective sweep, else `optimized_metric`."""
    names = list(cfg.get("objectives") or [cfg.optimized_metric])
    for name in names:
        if name not in MODEL_OBJECTIVES:
            OptimizedMetric.parse(name, key="objectives" if cfg.get("objectives") else "optimized_metric")
    return names


def objective_direction(name: str) -> str:
    """Optuna's direction for an objective name."""
    if name in MODEL_OBJECTIVES:
        return "minimize"
    return "maximize" if OptimizedMetric.parse(name).mode == "max" else "minimize"


@dataclass(frozen=True)
class OptimizedMetric:
    """`optimized_metric`, e.g. `val/acc`: a validation metric, and whether higher is better."""

    stage: str
    metric: str

    @classmethod
    def parse(cls, name: str, key: str = "optimized_metric") -> "OptimizedMetric":
        stage, _, metric = str(name).partition("/")
        if stage != "val" or metric not in METRICS:
            valid = ", ".join([f"val/{m}" for m in METRICS] + (list(MODEL_OBJECTIVES) if key == "objectives" else []))
            raise ConfigError(
                f"{key}: {name!r} is not valid; choose one of: {valid} (test metrics are reported, never optimized)"
            )
        return cls(stage, metric)

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.metric}"

    @property
    def mode(self) -> str:
        return "min" if self.metric == "loss" else "max"
