"""The trial's side of a sweep, inside the training process: pruning through the study's storage.

The sweeper passes `trial.number`, `trial.study_name` and `trial.storage` as overrides, so a trial
reaches the study the same way in-process, in a joblib worker or in a SLURM job.
"""

from typing import Any

import optuna
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from lightning_tune.sweeping.study import PRUNER_ATTR, open_storage


class PruningCallback(pl.Callback):
    """Reports the monitored metric after each validation; stops the trial when the pruner says so."""

    def __init__(self, trial: optuna.trial.Trial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.monitor}={value:.4f}")


def trial_callbacks(trial_cfg: DictConfig, monitor: str) -> list[Any]:
    """The pruning callback of this trial, or nothing for a plain run or a multi-objective study."""
    if trial_cfg is None or trial_cfg.get("number") is None:
        return []
    storage = open_storage(trial_cfg.storage)
    study = optuna.load_study(study_name=trial_cfg.study_name, storage=storage)
    pruner_cfg = study.user_attrs.get(PRUNER_ATTR)
    if len(study.directions) > 1 or not pruner_cfg:
        return []  # Optuna prunes single-objective studies only
    study.pruner = instantiate(pruner_cfg)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, trial_cfg.number)
    return [PruningCallback(optuna.trial.Trial(study, trial_id), monitor)]
