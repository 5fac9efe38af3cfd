"""What a finished run leaves behind: metrics.json, a table on the console, the TensorBoard hparams view."""

import json
import logging
import os
import re
from contextlib import closing
from pathlib import Path
from typing import Any, Mapping, Optional

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from torch.utils.tensorboard import FileWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from lightning_tune.metrics import EVAL_STAGES, METRICS

log = logging.getLogger(__name__)

Results = dict[str, dict[str, float]]  # {"val": {"acc": ...}, "test": {...}}


def collect_results(stage_outputs: Mapping[str, Mapping[str, float]]) -> Results:
    """Keep the five metrics of each evaluation stage, as plain floats."""
    return {
        stage: {metric: float(values[f"{stage}/{metric}"]) for metric in METRICS if f"{stage}/{metric}" in values}
        for stage, values in stage_outputs.items()
    }


def write_metrics(path: Path, results: Results, extra: Mapping[str, Any]) -> None:
    """Written to a temporary name of this process's own and renamed, so a reader never sees half a file."""
    payload = {**results, **extra}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def format_table(results: Results) -> str:
    """The val and test metrics as the console shows them: a column each, apart however large (a diverging loss)."""
    header = f"{'':6}" + "".join(f" {m:>10}" for m in METRICS)
    rows = [
        f"{stage:6}" + "".join(f" {table_number(results[stage].get(m, float('nan'))):>10}" for m in METRICS)
        for stage in EVAL_STAGES
        if stage in results
    ]
    return "\n".join([header, *rows])


def table_number(value: float) -> str:
    """4 decimals, or 4 significant digits from 100,000 up: a column stays 10 characters wide."""
    return f"{value:.4f}" if not abs(value) >= 1e5 else f"{value:.4g}"


# What `run_settings` reports, and what it never does.
KEYED_GROUPS = ("data", "model", "optimizer", "scheduler", "regularization")  # each one's option and keys
SETTINGS = ("trainer", "seed", "cv.folds", "trainer.max_epochs", "trainer.precision")  # besides those
NOT_SETTINGS = {"hydra", "trial", "logger", "launcher", "callbacks"}  # Hydra's, the sweep's, where logs go
PLUMBING = {"_target_", "_partial_", "num_workers", "pin_memory", "eval_batch_size", "download"}  # same results
PATH_SUFFIXES = ("dir", "path", "file", "root", "storage")  # output_dir, data.data_dir, trial.storage, ...


def run_settings(cfg: DictConfig, lr: Optional[float]) -> dict[str, Any]:
    """The settings that tell the runs of a sweep apart, for TensorBoard's HPARAMS view and the loggers' hparams.

    Each group's option and its keys (no plumbing), seed, cv.folds, the trainer's option, max_epochs and
    precision, and every key set on the command line, which in a sweep trial holds its swept params; never a
    path, nor Hydra's, the sweep's, the logger's or the launcher's settings. The options and the command line
    come from Hydra's runtime config, where there is one. `lr` is the learning rate trained with.
    """
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    choices = dict(hydra.runtime.choices) if hydra else {}
    command_line = [override.split("=", 1)[0].lstrip("+~") for override in hydra.overrides.task] if hydra else []
    group_keys = [f"{group}.{key}" for group in KEYED_GROUPS for key in cfg.get(group) or {}]
    settings: dict[str, Any] = {}
    for key in [*KEYED_GROUPS, *group_keys, *SETTINGS, *command_line]:
        name = key.rsplit(".", 1)[-1]
        if re.split(r"[./@]", key)[0] in NOT_SETTINGS or name in PLUMBING or name.endswith(PATH_SUFFIXES):
            continue
        value = choices[key] if key in choices else OmegaConf.select(cfg, key)
        if not isinstance(value, DictConfig):  # a whole group is no setting; its option is, where Hydra knows it
            settings[key] = value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
    settings["optimizer.lr"] = lr
    return settings


def log_hparams(loggers: list[Logger], settings: dict[str, Any], results: Results) -> None:
    """One hparams entry per run, with the final metrics, so runs compare side by side.

    TensorBoard gets each run's session start (its settings) and end, and no experiment summary, which
    Lightning's `log_hyperparams` writes for every run: TensorBoard then shows the first run's keys only,
    where without one it shows the union of the runs' keys, those that differ between runs first.
    """
    metrics = {f"final/{stage}_{m}": v for stage, values in results.items() for m, v in values.items()}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            _, start, end = hparams_summaries(settings, metrics)  # torch's; None values are left out
            with closing(FileWriter(logger.log_dir)) as writer:  # an event file of its own, in the run's directory
                writer.add_summary(start)
                logger.log_metrics(metrics)
                writer.add_summary(end)
        else:
            logger.log_hyperparams(settings)
            logger.log_metrics(metrics)
        logger.save()
