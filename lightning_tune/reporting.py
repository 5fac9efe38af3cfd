"""What a finished run leaves behind: metrics.json, a table on the console, the TensorBoard hparams view."""

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger

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
    header = f"{'':6}" + "".join(f"{m:>11}" for m in METRICS)
    rows = [
        f"{stage:6}" + "".join(f"{results[stage].get(m, float('nan')):>11.4f}" for m in METRICS)
        for stage in EVAL_STAGES
        if stage in results
    ]
    return "\n".join([header, *rows])


def flatten_config(cfg: DictConfig) -> dict[str, Any]:
    """`model.channels` -> "[32, 64]": the scalar form TensorBoard's hparams view accepts."""
    flat: dict[str, Any] = {}

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{prefix}.{key}" if prefix else str(key))
        elif node is None or isinstance(node, (bool, int, float, str)):
            flat[prefix] = "None" if node is None else node
        else:
            flat[prefix] = str(node)

    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    visit(container, "")
    return flat


def log_hparams(loggers: list[Logger], cfg: DictConfig, results: Results) -> None:
    """One hparams entry per run, with the final metrics, so runs compare side by side."""
    metrics = {f"final/{stage}_{m}": v for stage, values in results.items() for m, v in values.items()}
    params = flatten_config(cfg)
    for logger in loggers:
        if "metrics" in inspect.signature(logger.log_hyperparams).parameters:  # TensorBoard's hparams view
            logger.log_hyperparams(params, metrics=metrics)
        else:
            logger.log_hyperparams(params)
            logger.log_metrics(metrics)
        logger.save()
