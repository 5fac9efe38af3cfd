"""k-fold cross-validation (`cv.folds=k`): a run trains one model per fold and reports their mean.

The folds are `data.fold_indices` of the data's CV pool (every sample outside the test split), fixed
by `data.split_seed`, so every trial of a sweep is scored on the same folds. Every fold starts from
the same `seed` with a fresh network, module and Trainer: folds differ by their data only. Fold i
trains in `<output_dir>/fold_<i>/` (checkpoints, logs, its own metrics.json); `<output_dir>/metrics.json`
holds the folds' means and, under `cv`, each fold's value and the standard deviation. In a sweep the
trial reports the running mean after each fold (step = fold index), so a pruner can stop it early.
"""

import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig

from lightning_tune.metrics import OptimizedMetric
from lightning_tune.reporting import Results, format_table, write_metrics
from lightning_tune.requeue import armed

log = logging.getLogger(__name__)


def cv_folds(cfg: DictConfig) -> Optional[int]:
    """`cv.folds`: None (no cross-validation) or the number of folds, which `check_settings` has checked."""
    return (cfg.get("cv") or {}).get("folds")


def fold_dir(output_dir: Path, index: int) -> Path:
    return output_dir / f"fold_{index}"


@dataclass
class RunOutcome:
    """What a run (or one fold of it) returns: objective values, evaluated metrics (val, test, model), epochs,
    and the learning rate it trained with."""

    values: list[float]
    results: Results
    epochs: int
    lr: Optional[float]

    @classmethod
    def read(cls, path: Path, objectives: list[str]) -> "RunOutcome":
        """From the fold's metrics.json, as `fit_and_evaluate` wrote it."""
        saved = json.loads(path.read_text())
        results = {stage: saved[stage] for stage in ("val", "test", "model") if stage in saved}
        values = [results[name.split("/")[0]][name.split("/")[1]] for name in objectives]
        return cls(values, results, saved["epochs"], saved.get("lr"))


def mean_std(values: list[float]) -> tuple[float, float]:
    """The mean and the population standard deviation (numpy's and scikit-learn's `std_test_score`)."""
    return statistics.fmean(values), statistics.pstdev(values)


def summarize(outcomes: list[RunOutcome]) -> tuple[Results, dict[str, dict[str, float]]]:
    """Each metric's mean and standard deviation over the folds, by stage."""
    means: Results = {}
    stds: dict[str, dict[str, float]] = {}
    for stage in outcomes[0].results:
        if not all(stage in outcome.results for outcome in outcomes):
            continue
        for name in outcomes[0].results[stage]:
            mean, std = mean_std([outcome.results[stage][name] for outcome in outcomes])
            means.setdefault(stage, {})[name] = mean
            stds.setdefault(stage, {})[name] = std
    return means, stds


def cross_validate(
    cfg: DictConfig,
    folds: int,
    objectives: list[str],
    fit_fold: Callable[[int, Path], RunOutcome],
) -> list[float]:
    """Fit every fold with `fit_fold(index, fold_dir)`, write the mean metrics.json, return each objective's mean.

    A requeued SLURM job (the same trial, in the same directory) skips the folds that finished before.
    """
    metric = OptimizedMetric.parse(cfg.optimized_metric)
    output_dir = Path(cfg.output_dir)
    reporter = None
    if cfg.get("trial") and cfg.trial.get("number") is not None:
        from lightning_tune.sweeping.trial import fold_reporter

        reporter = fold_reporter(cfg.trial, metric.name, folds)
    outcomes: list[RunOutcome] = []
    for index in range(folds):
        finished = fold_dir(output_dir, index) / "metrics.json"
        if armed() and finished.is_file():
            outcomes.append(RunOutcome.read(finished, objectives))
            log.info("Fold %d of %d finished before the requeue: %s", index + 1, folds, finished)
        else:
            outcomes.append(fit_fold(index, fold_dir(output_dir, index)))
        running = statistics.fmean(outcome.values[0] for outcome in outcomes)
        latest = outcomes[-1].values[0]
        log.info("Fold %d of %d: %s=%.4f, running mean %.4f", index + 1, folds, objectives[0], latest, running)
        if reporter is not None:
            reporter.fold_done(index, running)  # raises optuna.TrialPruned when the pruner says so

    per_objective = {name: [outcome.values[i] for outcome in outcomes] for i, name in enumerate(objectives)}
    summary = {
        name: dict(zip(("mean", "std"), mean_std(values)), values=values) for name, values in per_objective.items()
    }
    results, stds = summarize(outcomes)
    values = [summary[name]["mean"] for name in objectives]
    optimized = [outcome.results["val"][metric.metric] for outcome in outcomes]
    cv: dict[str, Any] = {
        "folds": folds,
        "split_seed": (cfg.get("data") or {}).get("split_seed"),
        "values": optimized,  # optimized_metric of each fold
        "std": mean_std(optimized)[1],
        **{f"{stage}_std": stage_stds for stage, stage_stds in stds.items()},
        "objectives": summary,
        "fold_dirs": [fold_dir(output_dir, index).name for index in range(folds)],
    }
    extra: dict[str, Any] = {
        "optimized_metric": metric.name,
        "value": results["val"][metric.metric],
        "epochs": [outcome.epochs for outcome in outcomes],
        "lr": [outcome.lr for outcome in outcomes],  # each fold's: lr_find may find a different one per fold
    }
    if cfg.get("objectives"):
        extra["objectives"] = dict(zip(objectives, values))
    write_metrics(output_dir / "metrics.json", results, {**extra, "cv": cv})
    if reporter is not None:
        reporter.finished({name: entry["std"] for name, entry in summary.items()})
    log.info(
        "%d-fold cross-validation: %s = %.4f +- %.4f (std over folds); mean metrics:\n%s",
        folds, metric.name, extra["value"], cv["std"], format_table(results),
    )  # fmt: skip
    return values
