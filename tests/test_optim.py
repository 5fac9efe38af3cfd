"""Optimizers and schedules: every option of both groups builds and steps, and the fit-time fills are right."""

import functools
import math
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from conftest import group_options
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR, ReduceLROnPlateau, SequentialLR

from lightning_tune.errors import ConfigError
from lightning_tune.metrics import OptimizedMetric
from lightning_tune.module import ClassificationModule
from lightning_tune.optim import ScheduleSpec, build_optimizer, build_scheduler
from lightning_tune.trust import trusted
from lightning_tune.regularization import Regularization

LR = 0.1


class SignSGD(Optimizer):
    """A user's own optimizer: steps by the sign of the gradient."""

    def __init__(self, params, lr: float = 0.01, weight_decay: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.add_((param.grad + group["weight_decay"] * param).sign(), alpha=-group["lr"])


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def take_step(optimizer: Optimizer, net: nn.Module) -> None:
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2] * 2)
    optimizer.zero_grad()
    F.cross_entropy(net(x), y).backward()
    optimizer.step()


def sgd(net: nn.Module) -> Optimizer:
    return build_optimizer(functools.partial(torch.optim.SGD, lr=LR), net, Regularization())


def lrs_per_epoch(cfg: DictConfig, max_epochs: int, steps_per_epoch: int = 1) -> tuple[list[float], dict]:
    """The lr at the start of each epoch and after the last, stepping as Lightning does."""
    net = tiny_net()
    optimizer = sgd(net)
    spec = ScheduleSpec.from_config(cfg.scheduler)
    config = build_scheduler(
        spec, optimizer, max_epochs=max_epochs, steps_per_epoch=steps_per_epoch, monitor="val/acc", mode="max"
    )
    lrs = []
    for _ in range(max_epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        for _ in range(steps_per_epoch):
            take_step(optimizer, net)
            if config["interval"] == "step":
                config["scheduler"].step()
        if config["interval"] == "epoch":
            config["scheduler"].step()
    lrs.append(optimizer.param_groups[0]["lr"])
    return lrs, config


@pytest.mark.parametrize("option", group_options("scheduler"))
def test_every_scheduler_option_builds_and_steps(make_cfg, option: str) -> None:
    cfg = make_cfg(f"scheduler={option}")
    spec = ScheduleSpec.from_config(cfg.get("scheduler"))
    if spec is None:
        assert not cfg.get("scheduler"), f"scheduler={option} has settings but builds no schedule"
        return
    net = tiny_net()
    optimizer = sgd(net)
    config = build_scheduler(spec, optimizer, max_epochs=3, steps_per_epoch=4, monitor="val/acc", mode="max")
    assert config["interval"] == cfg.scheduler.interval and config["monitor"] == "val/acc"
    scheduler = config["scheduler"]
    for step in range(12 if config["interval"] == "step" else 3):
        take_step(optimizer, net)
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(0.5)  # the monitored metric
        else:
            scheduler.step()
        lr = optimizer.param_groups[0]["lr"]
        assert math.isfinite(lr) and lr >= 0, f"step {step}: lr={lr}"


@pytest.mark.parametrize("option", ["step", "cosine", "exponential"])
def test_warmup_ramps_the_lr_linearly_over_the_first_epochs(make_cfg, option: str) -> None:
    lrs, _ = lrs_per_epoch(make_cfg(f"scheduler={option}", "scheduler.warmup_epochs=2"), max_epochs=6)
    assert lrs[:3] == pytest.approx([LR / 3, 2 * LR / 3, LR])
    assert max(lrs) == pytest.approx(LR)


def test_warmup_counts_steps_when_the_interval_is_step(make_cfg) -> None:
    cfg = make_cfg("scheduler=cosine", "scheduler.warmup_epochs=2", "scheduler.interval=step")
    lrs, config = lrs_per_epoch(cfg, max_epochs=5, steps_per_epoch=4)
    assert lrs[:3] == pytest.approx([LR / 9, 5 * LR / 9, LR])  # 8 warm-up steps: (k + 1) / 9 of the lr
    assert config["scheduler"]._schedulers[1].T_max == 5 * 4 - 2 * 4


@pytest.mark.parametrize("warmup_epochs, t_max", [(0, 6), (2, 4)])
def test_cosine_without_t_max_spans_the_epochs_after_warmup(make_cfg, warmup_epochs: int, t_max: int) -> None:
    lrs, config = lrs_per_epoch(make_cfg("scheduler=cosine", f"scheduler.warmup_epochs={warmup_epochs}"), max_epochs=6)
    scheduler = config["scheduler"]
    cosine = scheduler._schedulers[1] if isinstance(scheduler, SequentialLR) else scheduler
    assert isinstance(cosine, CosineAnnealingLR) and cosine.T_max == t_max
    expected = [LR * (1 + math.cos(math.pi * k / t_max)) / 2 for k in range(t_max + 1)]
    assert lrs[warmup_epochs:] == pytest.approx(expected, abs=1e-9)


def test_cosine_keeps_an_explicit_t_max(make_cfg) -> None:
    _, config = lrs_per_epoch(make_cfg("scheduler=cosine", "scheduler.T_max=10"), max_epochs=6)
    assert config["scheduler"].T_max == 10


def test_onecycle_fills_max_lr_and_total_steps(make_cfg) -> None:
    net = tiny_net()
    optimizer = sgd(net)
    spec = ScheduleSpec.from_config(make_cfg("scheduler=onecycle").scheduler)
    scheduler = build_scheduler(spec, optimizer, max_epochs=3, steps_per_epoch=7, monitor="val/acc", mode="max")
    onecycle = scheduler["scheduler"]
    assert isinstance(onecycle, OneCycleLR) and scheduler["interval"] == "step"
    assert onecycle.total_steps == 3 * 7
    assert [group["max_lr"] for group in optimizer.param_groups] == [LR, LR]
    lrs = []
    for _ in range(3 * 7 - 1):
        take_step(optimizer, net)
        onecycle.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert max(lrs) == pytest.approx(LR, rel=0.02) and lrs[-1] < LR / 100


def test_onecycle_keeps_an_explicit_max_lr(make_cfg) -> None:
    optimizer = sgd(tiny_net())
    spec = ScheduleSpec.from_config(make_cfg("scheduler=onecycle", "scheduler.max_lr=0.5").scheduler)
    build_scheduler(spec, optimizer, max_epochs=2, steps_per_epoch=3, monitor="val/acc", mode="max")
    assert [group["max_lr"] for group in optimizer.param_groups] == [0.5, 0.5]


class FakeTrainer:
    """What `configure_optimizers` reads from the Trainer."""

    max_epochs = 4
    estimated_stepping_batches = 4 * 5


@pytest.mark.parametrize("metric, mode", [("val/acc", "max"), ("val/f1", "max"), ("val/loss", "min")])
def test_plateau_mode_follows_the_optimized_metric(make_cfg, metric: str, mode: str) -> None:
    assert OptimizedMetric.parse(metric).mode == mode
    module = ClassificationModule(
        tiny_net(),
        instantiate(make_cfg("optimizer=sgd").optimizer, _convert_="all"),
        num_classes=3,
        schedule=ScheduleSpec.from_config(make_cfg("scheduler=plateau").scheduler),
        optimized_metric=metric,
    )
    trainer = FakeTrainer()
    module.trainer = trainer
    config = module.configure_optimizers()
    plateau = config["lr_scheduler"]["scheduler"]
    assert isinstance(plateau, ReduceLROnPlateau)
    assert plateau.mode == mode and config["lr_scheduler"]["monitor"] == metric
    assert plateau.factor == 0.1 and plateau.patience == 5


@pytest.mark.parametrize("option", ["plateau", "onecycle"])
def test_warmup_with_plateau_or_onecycle_is_refused(make_cfg, option: str) -> None:
    with pytest.raises(ConfigError) as error:
        ScheduleSpec.from_config(make_cfg(f"scheduler={option}", "scheduler.warmup_epochs=2").scheduler)
    message = str(error.value)
    assert "scheduler.warmup_epochs=2" in message and "set it to 0" in message and "\n" not in message


@pytest.mark.parametrize(
    "override, key",
    [
        ("scheduler.interval=batch", "scheduler.interval='batch'"),
        ("scheduler.warmup_epochs=-1", "scheduler.warmup_epochs"),
    ],
)
def test_bad_schedule_keys_raise_config_error(make_cfg, override: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        ScheduleSpec.from_config(make_cfg("scheduler=step", override).scheduler)
    assert key in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("option", group_options("optimizer"))
def test_every_optimizer_option_builds_and_steps(make_cfg, option: str) -> None:
    cfg = make_cfg(f"optimizer={option}")
    net = tiny_net()
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = build_optimizer(instantiate(cfg.optimizer, _convert_="all"), net, Regularization(l2=1e-2))
    assert [group["lr"] for group in optimizer.param_groups] == [cfg.optimizer.lr] * 2
    assert [group["weight_decay"] for group in optimizer.param_groups] == [1e-2, 0.0]
    take_step(optimizer, net)
    for old, new in zip(before, net.parameters()):
        assert torch.isfinite(new).all() and not torch.equal(old, new)


def test_sgd_with_nesterov_steps(make_cfg) -> None:
    net = tiny_net()
    before = [p.detach().clone() for p in net.parameters()]
    factory = instantiate(make_cfg("optimizer=sgd", "optimizer.nesterov=true").optimizer, _convert_="all")
    optimizer = build_optimizer(factory, net, Regularization())
    assert optimizer.defaults["nesterov"] is True and optimizer.defaults["momentum"] == 0.9
    take_step(optimizer, net)
    take_step(optimizer, net)
    assert all(not torch.equal(old, new) for old, new in zip(before, net.parameters()))


@pytest.mark.parametrize(
    "overrides",
    [
        *[[f"optimizer={option}", "optimizer.lr=-1"] for option in group_options("optimizer")],
        ["optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0"],
    ],
    ids=[*group_options("optimizer"), "nesterov-without-momentum"],
)
def test_invalid_optimizer_settings_raise_one_line_config_error(make_cfg, overrides: list[str]) -> None:
    factory = instantiate(make_cfg(*overrides).optimizer, _convert_="all")
    with pytest.raises(ConfigError) as error:
        build_optimizer(factory, tiny_net(), Regularization())
    assert str(error.value).startswith("optimizer: ") and "\n" not in str(error.value)


def test_lr_override_replaces_the_configured_lr_and_is_checked(make_cfg) -> None:
    """`lr_find` passes its suggestion as `lr`."""
    factory = instantiate(make_cfg("optimizer=adam").optimizer, _convert_="all")
    optimizer = build_optimizer(factory, tiny_net(), Regularization(), lr=0.02)
    assert [group["lr"] for group in optimizer.param_groups] == [0.02, 0.02]
    with pytest.raises(ConfigError, match="^optimizer: "):
        build_optimizer(factory, tiny_net(), Regularization(), lr=-1.0)


def test_a_users_optimizer_class_works_by_target() -> None:
    with trusted([f"{__name__}.SignSGD"]):  # as a user's `execution_whitelist` admits it
        factory = instantiate(OmegaConf.create({"_target_": f"{__name__}.SignSGD", "_partial_": True, "lr": 0.1}))
    net = tiny_net()
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = build_optimizer(factory, net, Regularization(l2=0.5))
    assert isinstance(optimizer, SignSGD)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.5, 0.0]
    take_step(optimizer, net)
    for old, new in zip(before, net.parameters()):
        step = (old - new.detach()).abs()
        torch.testing.assert_close(step[step > 0], torch.full_like(step[step > 0], 0.1))
    with pytest.raises(ConfigError, match="Invalid learning rate"):
        build_optimizer(factory, net, Regularization(), lr=0.0)
