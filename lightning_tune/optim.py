"""Optimizers and learning-rate schedules from the `optimizer` and `scheduler` config groups.

Both groups instantiate to partials (`_partial_: true`); this module completes them with what is
only known at fit time: the parameter groups, the number of steps, the monitored metric.
"""

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LinearLR, OneCycleLR, ReduceLROnPlateau, SequentialLR

from lightning_tune.errors import ConfigError
from lightning_tune.regularization import Regularization, split_parameters

INTERVALS = ("epoch", "step")


def build_optimizer(
    factory: Callable[..., Optimizer], net: nn.Module, regularization: Regularization, lr: Optional[float] = None
) -> Optimizer:
    """Two parameter groups: penalized tensors get the L2 weight decay, biases and norms none."""
    penalized, exempt = split_parameters(net, regularization.exclude_bias_and_norm)
    groups = [{"params": penalized, "weight_decay": regularization.weight_decay}]
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0})
    try:
        return factory(groups, **({"lr": lr} if lr is not None else {}))
    except ValueError as error:  # torch's own checks: "Invalid learning rate: -1.0"
        raise ConfigError(f"optimizer: {error}") from None


@dataclass(frozen=True)
class ScheduleSpec:
    """A scheduler partial plus the keys Lightning and our warm-up need, read out of the config."""

    factory: Callable[..., Any]
    interval: str = "epoch"
    warmup_epochs: int = 0

    @classmethod
    def from_config(cls, cfg: Optional[DictConfig]) -> Optional["ScheduleSpec"]:
        """None for `scheduler=none`; `interval` and `warmup_epochs` are ours, the rest the scheduler's."""
        if not cfg:
            return None
        kwargs = OmegaConf.to_container(cfg, resolve=True)
        interval = kwargs.pop("interval", "epoch")
        warmup_epochs = kwargs.pop("warmup_epochs", 0)
        if interval not in INTERVALS:
            raise ConfigError(f"scheduler.interval={interval!r} is not valid; choose one of: {', '.join(INTERVALS)}")
        if warmup_epochs < 0:
            raise ConfigError(f"scheduler.warmup_epochs={warmup_epochs} must be >= 0")
        factory = instantiate(kwargs, _partial_=True)
        scheduler_class = factory.func if isinstance(factory, functools.partial) else factory
        if warmup_epochs and scheduler_class in (ReduceLROnPlateau, OneCycleLR):
            raise ConfigError(
                f"scheduler.warmup_epochs={warmup_epochs} does not combine with {scheduler_class.__name__}; "
                "set it to 0 (onecycle warms up by itself: scheduler.pct_start)"
            )
        return cls(factory, interval, warmup_epochs)


def build_scheduler(
    spec: ScheduleSpec,
    optimizer: Optimizer,
    *,
    max_epochs: int,
    steps_per_epoch: int,
    monitor: str,
    mode: str,
) -> dict[str, Any]:
    """Lightning's lr-scheduler dict; `None` horizons and rates are filled from the Trainer."""
    per_unit = steps_per_epoch if spec.interval == "step" else 1
    warmup = spec.warmup_epochs * per_unit
    fill = {
        "T_max": max(1, max_epochs * per_unit - warmup),  # cosine over what is left after warm-up
        "total_steps": max_epochs * steps_per_epoch,
        "max_lr": [group["lr"] for group in optimizer.param_groups],
    }
    keywords = spec.factory.keywords if isinstance(spec.factory, functools.partial) else {}
    accepted = inspect.signature(spec.factory).parameters
    missing = {k: v for k, v in fill.items() if k in accepted and keywords.get(k) is None}
    scheduler_class = spec.factory.func if isinstance(spec.factory, functools.partial) else spec.factory
    if isinstance(scheduler_class, type) and issubclass(scheduler_class, ReduceLROnPlateau) and "mode" not in keywords:
        missing["mode"] = mode  # follow the monitored metric: max for acc, min for loss
    try:
        scheduler = spec.factory(optimizer, **missing)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"scheduler: {error}") from None
    if warmup:
        ramp = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
        scheduler = SequentialLR(optimizer, [ramp, scheduler], milestones=[warmup])
    return {"scheduler": scheduler, "interval": spec.interval, "monitor": monitor, "strict": True}
