"""The classification metrics, and the one place that knows which direction each improves in."""

from dataclasses import dataclass

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


@dataclass(frozen=True)
class OptimizedMetric:
    """`optimized_metric`, e.g. `val/acc`: a validation metric, and whether higher is better."""

    stage: str
    metric: str

    @classmethod
    def parse(cls, name: str) -> "OptimizedMetric":
        stage, _, metric = str(name).partition("/")
        if stage != "val" or metric not in METRICS:
            valid = ", ".join(f"val/{m}" for m in METRICS)
            raise ConfigError(
                f"optimized_metric={name!r} is not valid; choose one of: {valid} (test metrics are reported, never optimized)"
            )
        return cls(stage, metric)

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.metric}"

    @property
    def mode(self) -> str:
        return "min" if self.metric == "loss" else "max"
