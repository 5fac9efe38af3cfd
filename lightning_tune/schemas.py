"""Typed schemas behind the config groups we own.

Each YAML option lists its schema first in its defaults, so a typo in a key or a wrong type
(`optimizer.lr=abc`) fails when Hydra composes the config, with Hydra's own message, before any
work starts. The values themselves live once, in the YAML files, next to a comment saying why.
This module must stay free of torch: Hydra imports it while discovering plugins.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class Target:
    _target_: str = MISSING


@dataclass
class PartialTarget(Target):
    _partial_: bool = True


# --- optimizer -----------------------------------------------------------------------------------
@dataclass
class AdamSchema(PartialTarget):
    lr: float = MISSING
    betas: Tuple[float, float] = MISSING
    eps: float = MISSING
    amsgrad: bool = MISSING


@dataclass
class SGDSchema(PartialTarget):
    lr: float = MISSING
    momentum: float = MISSING
    nesterov: bool = MISSING
    dampening: float = 0.0


@dataclass
class RMSpropSchema(PartialTarget):
    lr: float = MISSING
    alpha: float = MISSING
    momentum: float = MISSING
    eps: float = MISSING
    centered: bool = MISSING


# --- scheduler -----------------------------------------------------------------------------------
@dataclass
class SchedulerSchema(PartialTarget):
    interval: str = MISSING  # "epoch" or "step": when Lightning calls scheduler.step()
    warmup_epochs: int = 0  # linear warm-up before the schedule starts


@dataclass
class StepSchema(SchedulerSchema):
    step_size: int = MISSING
    gamma: float = MISSING


@dataclass
class ExponentialSchema(SchedulerSchema):
    gamma: float = MISSING


@dataclass
class CosineSchema(SchedulerSchema):
    T_max: Optional[int] = None
    eta_min: float = MISSING


@dataclass
class OneCycleSchema(SchedulerSchema):
    max_lr: Optional[float] = None
    total_steps: Optional[int] = None
    pct_start: float = MISSING
    anneal_strategy: str = MISSING


@dataclass
class PlateauSchema(SchedulerSchema):
    factor: float = MISSING
    patience: int = MISSING
    threshold: float = MISSING


# --- regularization ------------------------------------------------------------------------------
@dataclass
class RegularizationSchema(Target):
    l1: float = MISSING
    l2: float = MISSING
    dropout: float = MISSING
    l2_mode: str = MISSING
    exclude_bias_and_norm: bool = MISSING


@dataclass
class SklearnRegularizationSchema(Target):
    C: float = MISSING
    penalty: str = MISSING
    l1_ratio: float = MISSING
    dropout: float = MISSING
    exclude_bias_and_norm: bool = MISSING


# --- data ----------------------------------------------------------------------------------------
@dataclass
class DataSchema(Target):
    batch_size: int = MISSING
    eval_batch_size: Optional[int] = None
    num_workers: int = MISSING
    pin_memory: bool = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING
    split_seed: int = MISSING


@dataclass
class SyntheticDataSchema(DataSchema):
    input_shape: List[int] = MISSING
    num_classes: int = MISSING
    num_samples: int = MISSING
    noise: float = MISSING


@dataclass
class VisionDataSchema(DataSchema):
    data_dir: str = MISSING
    download: bool = MISSING


# --- model ---------------------------------------------------------------------------------------
@dataclass
class CNNSchema(Target):
    depth: int = MISSING
    width: int = MISSING
    channels: Optional[List[int]] = None
    kernel_sizes: Any = MISSING  # one int for every layer, or a list with one per layer
    pool: str = MISSING
    norm: str = MISSING
    activation: str = MISSING
    head_hidden: int = MISSING


@dataclass
class ResNetSchema(Target):
    stem: str = MISSING
    depth: int = MISSING
    blocks_per_stage: Any = MISSING  # one int for every stage, or a list with one per stage
    width: int = MISSING
    block: str = MISSING
    zero_init_residual: bool = MISSING


@dataclass
class MLPSchema(Target):
    depth: int = MISSING
    width: int = MISSING
    hidden_sizes: Optional[List[int]] = None
    activation: str = MISSING
    norm: str = MISSING


@dataclass
class LinearSchema(Target):
    pass


# --- launcher: the keys users set as launcher.<name>, passed on to hydra.launcher --------------------
@dataclass
class JoblibLauncherSchema:
    n_jobs: int = MISSING


@dataclass
class SlurmLauncherSchema:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    timeout_min: int = MISSING
    gpus_per_task: Optional[int] = None
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[int] = None
    tasks_per_node: int = MISSING
    array_parallelism: int = MISSING
    setup: List[str] = field(default_factory=list)
    additional_parameters: Dict[str, Any] = field(default_factory=dict)
    signal_delay_s: int = MISSING
    max_num_timeout: int = MISSING


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
            store.store(group=f"schema/{group}", name=name, node=node, provider="lightning-tune")
