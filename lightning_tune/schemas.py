"""Typed schemas behind the config groups we own, with the valid values of every numeric setting.

Each YAML option lists its schema first in its defaults, so a typo in a key or a wrong type
(`optimizer.lr=abc`) fails when Hydra composes the config, with Hydra's own message, before any
work starts. A value of the right type but out of range (`optimizer.lr=0`, `trainer.max_epochs=-1`)
is refused by `lightning_tune.validation` before anything runs, from the `Valid` each field carries
here. The values themselves live once, in the YAML files, next to a comment saying why.
This module must stay free of torch: Hydra imports it while discovering plugins.
"""

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass(frozen=True)
class Valid:
    """The valid values of a setting: a test, the words that say which, and one value outside (for tests)."""

    test: Callable[[Any], bool]
    text: str
    outside: Any


def between(low: Optional[float] = None, high: Optional[float] = None, *, open_low: bool = False,
            open_high: bool = False, integer: bool = False) -> Valid:  # fmt: skip
    """Finite numbers from `low` to `high` (either end may be open or absent); `integer` for int settings."""

    def test(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = low is None or (value > low if open_low else value >= low)
        below = high is None or (value < high if open_high else value <= high)
        return above and below

    def shown(bound: float) -> str:
        return str(bound) if isinstance(bound, int) else f"{bound:g}"

    if high is None:
        text = f"{'>' if open_low else '>='} {shown(low)}"
    elif low is None:
        text = f"{'<' if open_high else '<='} {shown(high)}"
    else:
        text = f"in {'(' if open_low else '['}{shown(low)}, {shown(high)}{')' if open_high else ']'}"
    step = 1 if integer else 0.5
    outside = (low if open_low else low - step) if low is not None else (high if open_high else high + step)
    return Valid(test, text, int(outside) if integer else outside)


def each(valid: Valid) -> Valid:
    """A list (or tuple) whose every item is `valid`."""
    return Valid(
        lambda values: isinstance(values, (list, tuple)) and all(valid.test(v) for v in values),
        f"a list of numbers {valid.text}",
        [valid.outside, valid.outside],  # two: a pair such as Adam's betas is a typed 2-tuple
    )


def setting(valid: Valid, default: Any = MISSING) -> Any:
    """A schema field and its valid values (`lightning_tune.validation` checks them)."""
    return field(default=default, metadata={"valid": valid})


POSITIVE = between(0, open_low=True)  # > 0
NON_NEGATIVE = between(0)  # >= 0
AT_LEAST_1 = between(1, integer=True)
COUNT = between(0, integer=True)  # >= 0
FRACTION = between(0, 1, open_high=True)  # a probability or decay that must stay below 1: [0, 1)
SHARE = between(0, 1)  # [0, 1]
OPEN_FRACTION = between(0, 1, open_low=True, open_high=True)  # (0, 1)
DECAY = between(0, 1, open_low=True)  # a multiplier that shrinks: (0, 1]
SEED = between(0, 2**32 - 1, integer=True)  # what numpy's seeding takes (Lightning's seed_everything seeds it)
JOBS = Valid(
    lambda n: isinstance(n, int) and not isinstance(n, bool) and n != 0,
    "a positive int, or -1 for one per core (-2: all but one, ...)",
    0,
)


@dataclass
class Target:
    _target_: str = MISSING


@dataclass
class PartialTarget(Target):
    _partial_: bool = True


# --- optimizer -----------------------------------------------------------------------------------
@dataclass
class AdamSchema(PartialTarget):
    lr: float = setting(POSITIVE)
    betas: Tuple[float, float] = setting(each(FRACTION))
    eps: float = setting(POSITIVE)
    amsgrad: bool = MISSING


@dataclass
class SGDSchema(PartialTarget):
    lr: float = setting(POSITIVE)
    momentum: float = setting(FRACTION)
    nesterov: bool = MISSING
    dampening: float = setting(SHARE, 0.0)


@dataclass
class RMSpropSchema(PartialTarget):
    lr: float = setting(POSITIVE)
    alpha: float = setting(FRACTION)
    momentum: float = setting(FRACTION)
    eps: float = setting(POSITIVE)
    centered: bool = MISSING


# --- scheduler -----------------------------------------------------------------------------------
@dataclass
class SchedulerSchema(PartialTarget):
    interval: str = MISSING  # "epoch" or "step": when Lightning calls scheduler.step()
    warmup_epochs: int = setting(COUNT, 0)  # linear warm-up before the schedule starts


@dataclass
class StepSchema(SchedulerSchema):
    step_size: int = setting(AT_LEAST_1)
    gamma: float = setting(DECAY)


@dataclass
class ExponentialSchema(SchedulerSchema):
    gamma: float = setting(DECAY)


@dataclass
class CosineSchema(SchedulerSchema):
    T_max: Optional[int] = setting(AT_LEAST_1, None)
    eta_min: float = setting(NON_NEGATIVE)


@dataclass
class OneCycleSchema(SchedulerSchema):
    max_lr: Optional[float] = setting(POSITIVE, None)
    total_steps: Optional[int] = setting(AT_LEAST_1, None)
    pct_start: float = setting(OPEN_FRACTION)
    anneal_strategy: str = MISSING


@dataclass
class PlateauSchema(SchedulerSchema):
    factor: float = setting(OPEN_FRACTION)
    patience: int = setting(COUNT)
    threshold: float = setting(NON_NEGATIVE)


# --- regularization ------------------------------------------------------------------------------
@dataclass
class RegularizationSchema(Target):
    l1: float = setting(NON_NEGATIVE)
    l2: float = setting(NON_NEGATIVE)
    dropout: float = setting(FRACTION)
    l2_mode: str = MISSING
    exclude_bias_and_norm: bool = MISSING


@dataclass
class SklearnRegularizationSchema(Target):
    C: float = setting(POSITIVE)
    penalty: str = MISSING
    l1_ratio: float = setting(SHARE)
    dropout: float = setting(FRACTION)
    exclude_bias_and_norm: bool = MISSING


# --- data ----------------------------------------------------------------------------------------
@dataclass
class DataSchema(Target):
    batch_size: int = setting(AT_LEAST_1)
    eval_batch_size: Optional[int] = setting(AT_LEAST_1, None)
    num_workers: int = setting(COUNT)
    pin_memory: bool = MISSING
    val_fraction: float = setting(OPEN_FRACTION)
    test_fraction: float = setting(FRACTION)
    split_seed: int = setting(SEED)


@dataclass
class SyntheticDataSchema(DataSchema):
    input_shape: List[int] = setting(each(AT_LEAST_1))
    num_classes: int = setting(between(2, integer=True))
    num_samples: int = setting(AT_LEAST_1)
    noise: float = setting(NON_NEGATIVE)


@dataclass
class VisionDataSchema(DataSchema):
    data_dir: str = MISSING
    download: bool = MISSING


# --- model ---------------------------------------------------------------------------------------
@dataclass
class CNNSchema(Target):
    depth: int = setting(AT_LEAST_1)
    width: int = setting(AT_LEAST_1)
    channels: Optional[List[int]] = setting(each(AT_LEAST_1), None)
    kernel_sizes: Any = MISSING  # one int for every layer, or a list with one per layer
    pool: str = MISSING
    norm: str = MISSING
    activation: str = MISSING
    head_hidden: int = setting(COUNT)  # 0: a linear head


@dataclass
class ResNetSchema(Target):
    stem: str = MISSING
    depth: int = setting(AT_LEAST_1)
    blocks_per_stage: Any = MISSING  # one int for every stage, or a list with one per stage
    width: int = setting(AT_LEAST_1)
    block: str = MISSING
    zero_init_residual: bool = MISSING


@dataclass
class MLPSchema(Target):
    depth: int = setting(AT_LEAST_1)
    width: int = setting(AT_LEAST_1)
    hidden_sizes: Optional[List[int]] = setting(each(AT_LEAST_1), None)
    activation: str = MISSING
    norm: str = MISSING


@dataclass
class LinearSchema(Target):
    pass


# --- trainer: the pytorch_lightning.Trainer arguments conf/trainer sets; +trainer.<name> adds any other -----
@dataclass
class TrainerSchema(Target):
    accelerator: str = MISSING
    devices: Any = MISSING  # an int, a list of device indices, or "auto"
    strategy: str = MISSING
    precision: Any = MISSING  # Lightning checks it: "32-true", "16-mixed", "bf16-mixed", ...
    max_epochs: int = setting(AT_LEAST_1)
    min_epochs: int = setting(COUNT)
    gradient_clip_val: Optional[float] = setting(NON_NEGATIVE, None)
    accumulate_grad_batches: int = setting(AT_LEAST_1)
    check_val_every_n_epoch: Optional[int] = setting(AT_LEAST_1, None)
    log_every_n_steps: int = setting(AT_LEAST_1)
    deterministic: bool = MISSING
    benchmark: bool = MISSING
    enable_progress_bar: bool = MISSING
    enable_model_summary: bool = MISSING
    num_sanity_val_steps: int = setting(between(-1, integer=True))  # -1: all of the validation set
    sync_batchnorm: bool = False


# --- launcher: the keys users set as launcher.<name>, passed on to hydra.launcher --------------------
@dataclass
class JoblibLauncherSchema:
    n_jobs: int = setting(JOBS)


@dataclass
class SlurmLauncherSchema:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    timeout_min: int = setting(AT_LEAST_1)
    gpus_per_task: Optional[int] = setting(COUNT, None)
    cpus_per_task: Optional[int] = setting(AT_LEAST_1, None)
    mem_gb: Optional[int] = setting(AT_LEAST_1, None)
    tasks_per_node: int = setting(AT_LEAST_1)
    array_parallelism: int = setting(AT_LEAST_1)
    setup: List[str] = field(default_factory=list)
    additional_parameters: Dict[str, Any] = field(default_factory=dict)
    signal_delay_s: int = setting(COUNT)
    max_num_timeout: int = setting(COUNT)


SCHEMAS = {
    "optimizer": {"adam": AdamSchema, "sgd": SGDSchema, "rmsprop": RMSpropSchema},
    "scheduler": {
        "step": StepSchema,
        "exponential": ExponentialSchema,
        "cosine": CosineSchema,
        "onecycle": OneCycleSchema,
        "plateau": PlateauSchema,
    },
    "regularization": {"regularization": RegularizationSchema, "sklearn": SklearnRegularizationSchema},
    "data": {"array": DataSchema, "synthetic": SyntheticDataSchema, "vision": VisionDataSchema},
    "model": {"cnn": CNNSchema, "resnet": ResNetSchema, "mlp": MLPSchema, "linear": LinearSchema},
    "trainer": {"trainer": TrainerSchema},
    "launcher": {"joblib": JoblibLauncherSchema, "slurm": SlurmLauncherSchema},
}


def register_schemas() -> None:
    """Store every schema as `schema/<group>/<name>`, the sweeper's configs under `hydra/sweeper` and
    the SLURM launcher's under `hydra/launcher`."""
    from lightning_tune.slurm import register_launcher_config
    from lightning_tune.sweeping.config import register_sweeper_configs

    register_sweeper_configs()
    register_launcher_config()
    store = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node, provider="lightning-tune", replace=True)
