"""The sweeper's config: the released Optuna sweeper's, plus pruning, budgets and warm starts.

Imported while Hydra discovers plugins, so it stays free of torch and optuna.
"""

import hashlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import MISSING, OmegaConf

from lightning_tune.schemas import AT_LEAST_1, COUNT, POSITIVE, SHARE, between, setting


@dataclass
class PrunerConf:
    _target_: str = MISSING


@dataclass
class MedianPrunerConf(PrunerConf):
    """Stop a trial whose metric is worse than the median of earlier trials at the same epoch."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = setting(COUNT, 5)  # trials that always finish, to build the median
    n_warmup_steps: int = setting(COUNT, 0)  # epochs reported before a trial may be pruned (Optuna's default)
    interval_steps: int = setting(AT_LEAST_1, 1)


@dataclass
class ASHAPrunerConf(PrunerConf):
    """Asynchronous successive halving: keep the top 1/reduction_factor at each rung."""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = 1  # epochs before the first rung ("auto" lets Optuna choose)
    reduction_factor: int = setting(between(2, integer=True), 3)
    min_early_stopping_rate: int = setting(COUNT, 0)


@dataclass
class HyperbandPrunerConf(PrunerConf):
    """Several successive-halving brackets with different aggressiveness."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = setting(AT_LEAST_1, 1)
    max_resource: Any = "auto"  # epochs of a full trial; "auto": learned from the first trials
    reduction_factor: int = setting(between(2, integer=True), 3)


@dataclass
class NopPrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class TuningSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.lightning_tune.LightningTuneSweeper"
    # conf/hydra/sweeper/sampler/tpe_multivariate.yaml: the tpe preset's TPE, not the Optuna sweeper's older defaults
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe_multivariate"}, {"pruner": "none"}])

    # null: maximize or minimize each objective as its name says (acc up, loss and params down)
    direction: Any = None
    # null: SQLite in the sweep directory, so that the same command resumes the sweep
    storage: Optional[Any] = None
    study_name: Optional[str] = "lightning-tune"
    n_trials: int = setting(AT_LEAST_1, 20)
    # trials in flight at once; with the joblib or SLURM launcher, its n_jobs or array_parallelism when larger
    n_jobs: int = setting(AT_LEAST_1, 1)
    # false: a slot that frees gets the next trial at once; true: the slots' trials are asked together and the
    # next ones only once all have ended, so that the same seed gives the same trials with parallel slots too
    wait_for_batch: bool = False
    # joblib worker processes that share one GPU, on a machine with several: small trials packed k to a GPU
    workers_per_gpu: int = setting(AT_LEAST_1, 1)
    # with launcher=slurm: this many SLURM jobs that each take trials from the study until it holds n_trials
    # finished ones, and go on if this command ends (0: each trial its own job, from this command)
    workers: int = setting(COUNT, 0)
    # with workers: submit them and return at once; the same command re-attaches, and shows progress
    detach: bool = False
    # with workers: a trial whose heartbeat (database storages) stops this long while its worker's job runs is
    # taken for hung or cut off: the job is cancelled and the trial retried. The heartbeat: every quarter of it
    heartbeat_grace_s: int = setting(AT_LEAST_1, 120)
    # the sweep stops once more than this share of n_trials has failed
    max_failure_rate: float = setting(SHARE, 0.5)
    pruner: Any = MISSING  # Any, not PrunerConf: the chosen pruner keeps its own schema, and its valid values
    # the search space, nested so that `hydra.sweeper.params.optimizer.lr=...` overrides one entry;
    # `_option_` under a group's name sweeps the group's option: {optimizer: {_option_: choice(adam, sgd)}}
    params: Optional[Dict[str, Any]] = None
    # wall-time budget in seconds: no trial starts after it (null: none)
    timeout_s: Optional[float] = setting(POSITIVE, None)
    # known-good configurations to try first: [{optimizer.lr: 0.01, model.width: 32}, ...]
    enqueue_trials: List[Dict[str, Any]] = field(default_factory=list)
    # an earlier sweep's best.yaml (or its directory): its values of the swept params go first
    warm_start: Optional[str] = None


PRUNERS = {"median": MedianPrunerConf, "asha": ASHAPrunerConf, "hyperband": HyperbandPrunerConf, "none": NopPrunerConf}


# Overrides that change how much or where a sweep runs, not what it searches: resuming with a larger
# n_trials or another launcher keeps the same study.
NOT_IN_SWEEP_ID = ("hydra.sweeper.n_trials", "hydra.sweeper.timeout_s", "hydra.sweeper.n_jobs",
                   "hydra.sweeper.wait_for_batch", "hydra.sweeper.workers", "hydra.sweeper.detach",
                   "hydra.sweeper.heartbeat_grace_s", "hydra.launcher", "hydra/launcher", "launcher", "hydra.sweep.",
                   "hydra.job_logging", "hydra.verbose")  # fmt: skip


def sweep_id(*override_lists: Any) -> str:
    """A short hash of the command's overrides: the same command finds the same sweep directory."""
    overrides = [o for overrides in override_lists for o in overrides]
    kept = sorted(o for o in overrides if not o.lstrip("+~").startswith(NOT_IN_SWEEP_ID))
    return hashlib.sha1("\n".join(kept).encode()).hexdigest()[:8]


def register_sweeper_configs() -> None:
    OmegaConf.register_resolver("lt.sweep_id", sweep_id, replace=True)
    store = ConfigStore.instance()
    store.store(
        group="hydra/sweeper", name="lightning_tune", node=TuningSweeperConf, provider="lightning-tune", replace=True
    )
    for name, node in PRUNERS.items():
        store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="lightning-tune", replace=True)
