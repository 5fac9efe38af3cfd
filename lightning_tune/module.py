"""The LightningModule: step logic, loss with regularization, metrics and logging; nothing else.

The network, the optimizer and the schedule are built elsewhere and handed in.
"""

import functools
from typing import Any, Callable, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer

from lightning_tune.errors import TrainingDiverged
from lightning_tune.metrics import OptimizedMetric, classification_metrics
from lightning_tune.optim import ScheduleSpec, build_optimizer, build_scheduler
from lightning_tune.regularization import Regularization, split_parameters


class ClassificationModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        num_classes: int,
        regularization: Optional[Regularization] = None,
        schedule: Optional[ScheduleSpec] = None,
        optimized_metric: str = "val/acc",
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.regularization = regularization or Regularization()
        self.schedule = schedule
        self.optimized_metric = OptimizedMetric.parse(optimized_metric)
        # `lr` is an attribute so that Lightning's learning-rate finder can set it.
        self.lr = optimizer.keywords.get("lr") if isinstance(optimizer, functools.partial) else None
        self.penalized = split_parameters(net, self.regularization.exclude_bias_and_norm)[0]
        metrics = classification_metrics(num_classes)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(logits.detach(), y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss.detach(), on_step=on_step, on_epoch=True, batch_size=len(y), sync_dist=not on_step)
        self.log_dict(metrics, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._shared_step(batch, "train")
        if self.regularization.has_loss_penalty:
            penalty = self.regularization.penalty(self.penalized)
            self.log("train/penalty", penalty.detach(), on_step=True, on_epoch=True, batch_size=len(batch[1]))
            loss = loss + penalty
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"training loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step}")
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.optimizer_factory, self.net, self.regularization, lr=self.lr)
        if self.schedule is None:
            return optimizer
        max_epochs = max(1, self.trainer.max_epochs or 1)
        steps_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // max_epochs)
        scheduler = build_scheduler(
            self.schedule,
            optimizer,
            max_epochs=max_epochs,
            steps_per_epoch=steps_per_epoch,
            monitor=self.optimized_metric.name,
            mode=self.optimized_metric.mode,
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
