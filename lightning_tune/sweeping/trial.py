"""The trial's side of a sweep, inside the training process: pruning through the study's storage.

The sweeper passes `trial.number` and `trial.study_name` as overrides and the storage's URL in the
environment (`study.STORAGE_ENV`: a URL may hold a password, and overrides are written down), so a trial
reaches the study the same way in-process, in a joblib worker or in a SLURM job. `trial.storage`, when set,
is used instead: a run started by hand that reports to a study.

Without cross-validation a trial reports after each validation (step = epoch). With `cv.folds=k` it
reports once per finished fold instead (step = fold index) the running mean of the folds so far: the
epochs of different folds would clash under the same steps. At its end it records the standard
deviation over the folds as the trial's user attr `cv_std` ({objective: std}).
"""

import logging
import os
from typing import Any, Optional

import optuna
import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from omegaconf import DictConfig

from lightning_tune.errors import ConfigError, TrainingDiverged
from lightning_tune.sweeping.private_optuna import running_trial
from lightning_tune.sweeping.results import CV_STD_ATTR
from lightning_tune.sweeping.study import NO_PRUNER, PRUNER_ATTR, STORAGE_ENV, build_pruner, open_storage


class PruningCallback(pl.Callback):
    """Reports the monitored metric after each validation of the training; stops the trial when the pruner says
    so. A validation of the best checkpoint after fit (where one is needed: `run.BestEpochMetrics`) neither reports
    nor prunes: training is over."""

    def __init__(self, trial: optuna.trial.Trial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        if not fitting or trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.monitor}={value:.4f}")


def open_trial(trial_cfg: DictConfig) -> tuple[optuna.trial.Trial, bool]:
    """This trial, through the study's storage, and whether it is to be pruned: a pruner other than
    `pruner=none` (Optuna's NopPruner) is configured and the study has one objective (Optuna prunes
    single-objective studies only). A trial that is not pruned reports nothing: each report is a write to
    the storage, and nothing would read it."""
    url = trial_cfg.get("storage") or os.environ.get(STORAGE_ENV)
    if not url:
        raise ConfigError(
            f"trial.number={trial_cfg.number}, but this process has no study storage: {STORAGE_ENV} is not in its "
            f"environment (a SLURM job submitted with sbatch --export that leaves it out?), nor trial.storage set"
        )
    storage = open_storage(url)
    study = optuna.load_study(study_name=trial_cfg.study_name, storage=storage)
    pruner_cfg = study.user_attrs.get(PRUNER_ATTR)
    prunes = len(study.directions) == 1 and bool(pruner_cfg) and pruner_cfg.get("_target_") != NO_PRUNER
    if prunes:
        study.pruner = build_pruner(pruner_cfg)
    return running_trial(study, storage, trial_cfg.number), prunes


def trial_callbacks(trial_cfg: DictConfig, monitor: str) -> list[Any]:
    """The pruning callback of this trial, or nothing for a plain run, a multi-objective study or a sweep
    without a pruner (`trial.pruning=false`, which the sweeper sets, so the trial need not load the study)."""
    if trial_cfg is None or trial_cfg.get("number") is None or trial_cfg.get("pruning") is False:
        return []
    trial, prunes = open_trial(trial_cfg)
    return [PruningCallback(trial, monitor)] if prunes else []


class FoldReporter:
    """With `cv.folds`: the running mean after each fold to the pruner; the folds' spread at the end."""

    def __init__(self, trial: optuna.trial.Trial, prunes: bool, monitor: str, folds: int) -> None:
        self.trial, self.prunes, self.monitor, self.folds = trial, prunes, monitor, folds

    def fold_done(self, fold: int, running_mean: float) -> None:
        """Report the mean of folds 0..`fold`; raise `optuna.TrialPruned` if the pruner stops the trial.

        After the last fold there is nothing left to save: the trial completes."""
        if not self.prunes:
            return
        self.trial.report(running_mean, step=fold)
        if fold + 1 < self.folds and self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned after fold {fold + 1} of {self.folds}: mean {self.monitor}={running_mean:.4f}"
            )

    def finished(self, stds: dict[str, float]) -> None:
        self.trial.set_user_attr(CV_STD_ATTR, stds)


def fold_reporter(trial_cfg: DictConfig, monitor: str, folds: int) -> Optional[FoldReporter]:
    """This trial's `FoldReporter`, or None for a plain run."""
    if trial_cfg is None or trial_cfg.get("number") is None:
        return None
    trial, prunes = open_trial(trial_cfg)
    return FoldReporter(trial, prunes, monitor, folds)


class OneLineTrialEnds(logging.Filter):
    """Hydra writes a failed job's traceback into its log file ("Job failed"). A trial's expected ends are no
    crash: a pruned trial gets the pruner's reason on one line instead, and an invalid config or a diverged run,
    which the run has logged on one line already, nothing more."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if record.msg != "Job failed" or not isinstance(error, (optuna.TrialPruned, ConfigError, TrainingDiverged)):
            return True
        if isinstance(error, optuna.TrialPruned):
            record.msg, record.args, record.exc_info, record.exc_text = "Trial %s", (error,), None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
            return True
        return False


def log_trial_ends_on_one_line() -> None:
    """Put `OneLineTrialEnds` on the job's log files (Hydra makes them anew for each job)."""
    for handler in logging.getLogger().handlers:
        filtered = any(isinstance(kept, OneLineTrialEnds) for kept in handler.filters)
        if isinstance(handler, logging.FileHandler) and not filtered:
            handler.addFilter(OneLineTrialEnds())
