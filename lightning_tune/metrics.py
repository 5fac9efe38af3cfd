"""The classification metrics, and the one place that knows which direction each improves in."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning_tune.errors import ConfigError

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

METRICS = ("acc", "precision", "recall", "f1", "loss")
EVAL_STAGES = ("val", "test")
# What a fit logs at every validation, for a callback's `monitor` (EarlyStopping's, ModelCheckpoint's).
VALIDATED = tuple(f"val/{metric}" for metric in METRICS)


def classification_metrics(num_classes: int) -> "MetricCollection":
    """Accuracy (micro) and macro precision, recall and F1.

    torchmetrics is imported here, not above: the sweeper's process reads objective names from this
    module, and a SLURM or joblib sweep's own process has no use for torch (1 s of its start).
    """
    from torchmetrics import MetricCollection
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        }
    )


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
