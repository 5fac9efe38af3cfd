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


class ClassificationModule(pl.LightningModule):
    """Training steps only keep their outputs (no metric object, no `self.log`, no host sync): the
    epoch's train metrics are computed from them once, the step loss is logged only on the steps
    Lightning writes to the loggers, and a NaN or infinite loss is looked for there and at the epoch's
    end. Validation and test update torchmetrics and log on every batch, as usual."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        num_classes: int,
        regularization: Optional[Regularization] = None,
        schedule: Optional[ScheduleSpec] = None,
        optimized_metric: str = "val/acc",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.regularization = regularization or Regularization()
        self.schedule = schedule
        self.optimized_metric = OptimizedMetric.parse(optimized_metric)
        self.channels_last = channels_last
        if channels_last:  # NHWC weights, and inputs in `forward`: faster convolutions on recent CPUs and GPUs
            net.to(memory_format=torch.channels_last)
        # `lr` is an attribute so that Lightning's learning-rate finder can set it.
        self.lr = optimizer.keywords.get("lr") if isinstance(optimizer, functools.partial) else None
        self.penalized = split_parameters(net, self.regularization.exclude_bias_and_norm)[0]
        metrics = classification_metrics(num_classes)
        self.train_outputs = EpochOutputs()
        self.train_metrics = metrics.clone(prefix="train/")  # updated once per epoch, from `train_outputs`
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.forward(x)  # not `self(x)`: the hooks of `__call__` are unused here, and cost time every step
        loss = F.cross_entropy(logits, y)
        penalty = self.regularization.penalty(self.penalized) if self.regularization.has_loss_penalty else None
        kept_penalty = None if penalty is None else penalty.detach()
        self.train_outputs.add(batch_idx, logits.detach(), y, loss.detach(), kept_penalty)
        if self._trainer is not None:  # None when a test calls `training_step` by itself
            self._log_step(loss, penalty, last_batch=batch_idx + 1 == self.trainer.num_training_batches)
        return loss if penalty is None else loss + penalty

    def _log_step(self, loss: torch.Tensor, penalty: Optional[torch.Tensor], last_batch: bool) -> None:
        """On the steps Lightning writes to the loggers, log the step's losses; there and on the epoch's last
        batch, before validation, look for divergence: the host waits for the device only then."""
        every = self.trainer.log_every_n_steps
        logged = every > 0 and (self.global_step + 1) % every == 0
        if logged:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False)
            if penalty is not None:
                self.log("train/penalty_step", penalty.detach(), on_step=True, on_epoch=False)
        if logged or last_batch:
            self._stop_if_diverged()

    def _stop_if_diverged(self) -> None:
        diverged = self.train_outputs.first_non_finite()
        if diverged is not None:
            batch, value = diverged
            raise TrainingDiverged(f"training loss is {value} at epoch {self.current_epoch}, batch {batch}")

    def on_train_start(self) -> None:  # also where a run resumed in the middle of an epoch starts
        self.epoch_first_step = self.global_step

    def on_train_epoch_start(self) -> None:
        self.train_outputs.reset()
        self.epoch_first_step = self.global_step

    def _logs_epoch(self) -> bool:
        """Whether this epoch's train metrics are logged: when a logging step fell in it (every epoch of
        `log_every_n_steps` steps or more), and at the last epoch. An epoch of one full batch, 600 times
        over, would otherwise spend more time in Lightning's `log` than in training."""
        every, trainer = self.trainer.log_every_n_steps, self.trainer
        last = trainer.should_stop or (trainer.max_epochs is not None and self.current_epoch + 1 >= trainer.max_epochs)
        return every <= 0 or last or self.global_step // every > self.epoch_first_step // every

    def on_train_epoch_end(self) -> None:
        self._stop_if_diverged()
        outputs = self.train_outputs
        if not outputs.losses or not self._logs_epoch():  # no step here this epoch, e.g. resumed after its last batch
            return
        self.train_metrics.update(*outputs.labels())
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        self.log("train/loss_epoch", outputs.mean(outputs.losses), on_step=False, on_epoch=True)
        if outputs.penalties:
            self.log("train/penalty_epoch", outputs.mean(outputs.penalties), on_step=False, on_epoch=True)

    def _eval_step(self, batch: Any, stage: str) -> None:
        x, y = batch
        logits = self.forward(x)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(logits, y)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

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
