"""What a sweep leaves in its directory, read from its Optuna study.

While it runs, after every batch: `trials.csv`, `best.yaml` and `optimization_results.yaml`, each
written to a temporary file and renamed, so that a crash loses nothing and no reader sees half a
file. At its end: `report.md` with `plots/*.png`. `scripts/report.py` rewrites all of them for any
existing study.
"""

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import optuna
from omegaconf import OmegaConf
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from lightning_tune.console import first_line
from lightning_tune.errors import ConfigError
from lightning_tune.sweeping.study import JOURNAL, check_journal, open_storage, upgrade_schema

log = logging.getLogger(__name__)

REPORTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)  # not WAITING
PLOTS = {  # file in plots/ -> its title in report.md
    "optimization_history.png": "Optimization history",
    "param_importances.png": "Parameter importances",
    "parallel_coordinates.png": "Parallel coordinates",
    "pareto_front.png": "Pareto front",
}
TOP_TRIALS = 10  # rows in report.md's table of the best trials
CV_STD_ATTR = "cv_std"  # trial user attr with cv.folds: {objective: standard deviation over the folds}
WORKER_JOB = "worker_job"  # trial user attr of a worker's trial: the worker's SLURM job id, its job_id in trials.csv


def write_atomic(path: Path, data: str | bytes) -> None:
    """Written beside `path`, flushed to disk, then renamed over it: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder: the rename cannot cross disks
    try:
        with open(tmp, "wb") as file:
            file.write(data.encode() if isinstance(data, str) else data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def objective_names(study: optuna.Study) -> list[str]:
    """The names our sweeper stores in the study; `value`, or `value_0`, `value_1`, ... in any other study."""
    names = study.user_attrs.get("objectives")
    count = len(study.directions)
    if isinstance(names, list) and len(names) == count and all(isinstance(name, str) for name in names):
        return names
    return ["value"] if count == 1 else [f"value_{i}" for i in range(count)]


def maximizes(study: optuna.Study) -> list[bool]:
    return [direction == StudyDirection.MAXIMIZE for direction in study.directions]


def reported_trials(study: optuna.Study) -> list[FrozenTrial]:
    """One snapshot of the trials worth reporting, in trial order: WAITING ones have not started."""
    return sorted(study.get_trials(deepcopy=False, states=REPORTED), key=lambda trial: trial.number)


def pareto_front(complete: Sequence[FrozenTrial], maximize: Sequence[bool]) -> list[FrozenTrial]:
    """The COMPLETE trials no other trial beats in every objective (computed on the same snapshot)."""
    signs = [1.0 if up else -1.0 for up in maximize]
    scores = [[sign * value for sign, value in zip(signs, trial.values)] for trial in complete]

    def dominated(a: list[float]) -> bool:
        return any(all(o >= s for o, s in zip(other, a)) and other != a for other in scores)

    return [trial for trial, score in zip(complete, scores) if not dominated(score)]


def best_trial(trials: Sequence[FrozenTrial], maximize: Sequence[bool]) -> Optional[FrozenTrial]:
    """The best COMPLETE trial; with several objectives, the Pareto-front trial best in the first one."""
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    candidates = complete if len(maximize) == 1 else pareto_front(complete, maximize)
    sign = 1.0 if maximize[0] else -1.0
    return max(candidates, key=lambda trial: (sign * trial.values[0], -trial.number), default=None)


def param_names(trials: Sequence[FrozenTrial]) -> list[str]:
    """Every swept parameter of any trial, in the order they first appear."""
    return list(dict.fromkeys(name for trial in trials for name in trial.params))


def fail_reason(trial: FrozenTrial) -> Optional[str]:
    """Ours, or the one Optuna records itself when an objective raises."""
    return trial.user_attrs.get("fail_reason") or trial.system_attrs.get("fail_reason")


def duration_s(trial: FrozenTrial) -> Optional[float]:
    """The job's own wall time, timed in its process (None where none timed it: a job that SLURM ended);
    in a study another sweeper made, Optuna's start-to-finish time."""
    if "duration_s" in trial.user_attrs:
        return trial.user_attrs["duration_s"]
    return None if trial.duration is None else round(trial.duration.total_seconds(), 3)


def cv_stds(trial: FrozenTrial) -> Optional[dict[str, float]]:
    """With `cv.folds`: each objective's standard deviation over the folds, as the trial's process recorded
    it in the study (user attr `cv_std`); else None."""
    stds = trial.user_attrs.get(CV_STD_ATTR)
    return stds if isinstance(stds, dict) else None


def run_dir(trial: FrozenTrial, sweep_dir: Path) -> Optional[str]:
    """Where the trial ran: the directory its number names in the sweep directory, or the one it recorded
    (`hydra.sweep.subdir` set to another); None for a trial that never ran (its config did not compose)."""
    if recorded := trial.user_attrs.get("run_dir"):
        return recorded
    default = sweep_dir / str(trial.number)
    return str(default.resolve()) if default.is_dir() else None


def trials_csv(trials: Sequence[FrozenTrial], names: Sequence[str], sweep_dir: Path) -> str:
    """One row per trial; a blank cell where a trial has no value, param or attribute.

    With cross-validation (`cv.folds`), the value is the folds' mean and `cv_std` (one objective) or
    `<objective>_cv_std` (several) their standard deviation."""
    value_columns = ["value"] if len(names) == 1 else list(names)
    params = param_names(trials)
    stds = {trial.number: cv_stds(trial) for trial in trials}
    std_columns = [] if not any(stds.values()) else ["cv_std"] if len(names) == 1 else [f"{n}_cv_std" for n in names]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["number", "state", *value_columns, *std_columns, *params, "trial_seed", "duration_s", "run_dir",
         "fail_reason", "job_id", "log"]
    )  # fmt: skip
    for trial in trials:
        trial_stds = stds[trial.number] or {}
        row = [
            trial.number,
            trial.state.name,
            *(trial.values or [None] * len(value_columns)),
            *(trial_stds.get(name) for name in names[: len(std_columns)]),
            *(trial.params.get(param) for param in params),
            trial.user_attrs.get("trial_seed"),
            duration_s(trial),
            run_dir(trial, sweep_dir),
            fail_reason(trial),
            trial.user_attrs.get("job_id", trial.user_attrs.get(WORKER_JOB)),
            trial.user_attrs.get("log"),
        ]
        writer.writerow(["" if cell is None else cell for cell in row])
    return buffer.getvalue()


def optimization_results(trials: Sequence[FrozenTrial], maximize: Sequence[bool]) -> str:
    """The released Optuna sweeper's `optimization_results.yaml`, from the same snapshot as the rest."""
    if len(maximize) == 1:
        best = best_trial(trials, maximize)
        results: dict[str, Any] = {"name": "optuna", "best_params": best.params, "best_value": best.value}
    else:
        complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
        front = pareto_front(complete, maximize)
        results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in front]}
    return OmegaConf.to_yaml(OmegaConf.create(results))


def best_config(trial: FrozenTrial, study_name: str, names: Sequence[str], sweep_dir: Path) -> Optional[str]:
    """The best trial's composed job config, its `trial` node nulled so a rerun reports to no study. It is read
    from the run directory the trial recorded, or, where that has gone (the sweep directory was moved or copied),
    from the one of its number in `sweep_dir`."""
    recorded = Path(trial.user_attrs.get("run_dir") or sweep_dir / str(trial.number))
    candidates = [recorded / ".hydra" / "config.yaml", sweep_dir / str(trial.number) / ".hydra" / "config.yaml"]
    config_path = next((path for path in candidates if path.is_file()), None)
    if config_path is None:
        log.warning("best.yaml not written: trial %d has no composed config at %s", trial.number, candidates[0])
        return None
    cfg = OmegaConf.load(config_path)
    if OmegaConf.is_dict(cfg.get("trial")):
        for key in cfg.trial:
            cfg.trial[key] = None
    shown = ", ".join(f"{name}={value}" for name, value in zip(names, trial.values))
    header = (
        f"# Best trial {trial.number} of study {study_name}: {shown}\n"
        f"# rerun: python train.py --config-path {sweep_dir.resolve()} --config-name best\n"
    )
    return header + OmegaConf.to_yaml(cfg)


_best_written: dict[Path, int] = {}  # sweep directory: the trial whose config this process last wrote to best.yaml


def write_progress(study: optuna.Study, sweep_dir: Path) -> None:
    """trials.csv always; best.yaml and optimization_results.yaml once a trial has completed.

    Cheap enough for every trial: one read of the study, one small YAML file, no plotting; best.yaml only
    when the best trial is another than this process last wrote there (or the file has gone).
    """
    sweep_dir = Path(sweep_dir)
    trials, names, maximize = reported_trials(study), objective_names(study), maximizes(study)
    write_atomic(sweep_dir / "trials.csv", trials_csv(trials, names, sweep_dir))
    best = best_trial(trials, maximize)
    if best is None:
        return
    write_atomic(sweep_dir / "optimization_results.yaml", optimization_results(trials, maximize))
    if _best_written.get(sweep_dir) == best.number and (sweep_dir / "best.yaml").is_file():
        return
    config = best_config(best, study.study_name, names, sweep_dir)
    if config is not None:
        write_atomic(sweep_dir / "best.yaml", config)
        _best_written[sweep_dir] = best.number


def param_importances(study: optuna.Study, names: Sequence[str]) -> tuple[dict[str, dict[str, float]], str]:
    """Each objective's parameter importances by Optuna's fANOVA, and a sentence on how they were computed
    or why not. Never raises: a sweep must not die here.

    fANOVA, seeded, not Optuna 5's default PED-ANOVA: PED-ANOVA compares the top 10% of trials with the
    rest, which tens of trials leave to one or two; it then gives weight to params every trial had alike.
    """
    count = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if count < 2:
        return {}, f"Not computed: importances need at least 2 complete trials, the study has {count}."
    from optuna.importance import FanovaImportanceEvaluator  # scikit-learn's forests: only for the report

    try:
        importances = {
            name: {param: float(value) for param, value in optuna.importance.get_param_importances(
                study, evaluator=FanovaImportanceEvaluator(seed=0),
                target=None if len(names) == 1 else lambda t, i=i: t.values[i],
            ).items()}
            for i, name in enumerate(names)
        }  # fmt: skip
    except Exception as error:  # noqa: BLE001 - a report line, never the end of a finished sweep
        return {}, f"Not computed: fANOVA failed ({first_line(error)})."
    if not any(importances.values()):
        return {}, "Not computed: no swept parameter is set in every complete trial."
    return importances, "Computed by fANOVA (Optuna's FanovaImportanceEvaluator, seed 0)."


def cell(value: Any) -> str:
    """A value in a Markdown table: numbers short, no pipe or newline to break the row."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows),
    ]


def shown_dir(run_dir: Optional[str], sweep_dir: Path) -> str:
    """A trial's run directory relative to the sweep's when it lies inside, as it does locally."""
    if not run_dir:
        return ""
    path = Path(run_dir)
    return str(path.relative_to(sweep_dir.resolve())) if path.is_relative_to(sweep_dir.resolve()) else run_dir


def write_report(study: optuna.Study, sweep_dir: Path) -> Path:
    """report.md and plots/*.png for the study as it stands; returns report.md's path.

    A figure that cannot be drawn becomes a line in the report instead: the sweep is over by now,
    and its results are already on disk.
    """
    from lightning_tune.sweeping import plots  # matplotlib is imported here only, never per batch

    sweep_dir = Path(sweep_dir)
    trials, names, maximize = reported_trials(study), objective_names(study), maximizes(study)
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    front = pareto_front(complete, maximize) if len(names) > 1 else []
    best = best_trial(trials, maximize)
    params = param_names(trials)
    drawn: set[str] = set()

    def figure(filename: str, draw: Callable[..., bytes], *args: Any) -> list[str]:
        try:
            png = draw(*args)
        except Exception as error:  # noqa: BLE001 - a figure is not worth failing the sweep for
            log.warning("%s not drawn: %s", filename, first_line(error))
            return [f"Not drawn: {first_line(error)}.", ""]
        write_atomic(sweep_dir / "plots" / filename, png)
        drawn.add(filename)
        return [f"![{PLOTS[filename]}](plots/{filename})", ""]

    objectives = ", ".join(f"`{n}` ({'maximize' if up else 'minimize'})" for n, up in zip(names, maximize))
    counts = [(state.name, sum(trial.state == state for trial in trials)) for state in REPORTED]
    lines = [f"# Sweep report: {study.study_name}", "", f"Objectives: {objectives}.", ""]
    lines += [*table(["state", "trials"], counts), ""]

    lines += ["## Best trial", ""]
    if best is None:
        lines += ["No trial has completed yet.", ""]
    else:
        values = ", ".join(f"`{name}` = {cell(value)}" for name, value in zip(names, best.values))
        chosen = "" if len(names) == 1 else f" (of the {len(front)} on the Pareto front, the best in `{names[0]}`)"
        lines += [f"Trial {best.number}{chosen}: {values}.", ""]
        lines += table(["param", "value"], list(best.params.items())) + [""]
        if (sweep_dir / "best.yaml").is_file():
            rerun = f"python train.py --config-path {sweep_dir.resolve()} --config-name best"
            lines += [f"Its whole config is `best.yaml`: `{rerun}`.", ""]

        sign = 1.0 if maximize[0] else -1.0
        top = sorted(complete, key=lambda t: (-sign * t.values[0], t.number))[:TOP_TRIALS]
        on_front = {trial.number for trial in front}
        stds = {t.number: cv_stds(t) or {} for t in top}  # with cv.folds: the spread over the folds
        std_names = [n for n in names if any(n in spread for spread in stds.values())]
        header = ["trial", *names, *(f"{n} cv_std" for n in std_names), *(["Pareto"] if front else []), *params,
                  "duration_s"]  # fmt: skip
        rows = [
            [t.number, *t.values, *(stds[t.number].get(n) for n in std_names),
             *(["yes" if t.number in on_front else ""] if front else []), *(t.params.get(p) for p in params),
             duration_s(t)]
            for t in top
        ]  # fmt: skip
        lines += [f"## Top {len(top)} trials by `{names[0]}`", "", *table(header, rows), ""]

    lines += ["## Optimization history", ""]
    lines += figure("optimization_history.png", plots.optimization_history, trials, names, maximize)

    lines += ["## Parameter importances", ""]
    importances, how = param_importances(study, names)
    lines += [how, ""]
    if importances:
        lines += figure("param_importances.png", plots.param_importances, importances)

    lines += ["## Parallel coordinates", ""]
    if complete and params:
        lines += figure("parallel_coordinates.png", plots.parallel_coordinates, complete, params, names, maximize)
    else:
        lines += ["Not drawn: needs a complete trial and a swept parameter.", ""]

    if len(names) > 1:
        lines += ["## Pareto front", ""]
        if complete:
            lines += figure("pareto_front.png", plots.pareto_front, complete, front, names, maximize)
        else:
            lines += ["Not drawn: no trial has completed yet.", ""]

    stopped = [trial for trial in trials if trial.state in (TrialState.FAIL, TrialState.PRUNED)]
    if stopped:
        rows = [
            [t.number, t.state.name, fail_reason(t), shown_dir(run_dir(t, sweep_dir), sweep_dir)] for t in stopped
        ]
        lines += ["## Failed and pruned trials", "", *table(["trial", "state", "reason", "run dir"], rows), ""]

    for stale in PLOTS.keys() - drawn:  # a figure of an earlier report that this one could not draw
        (sweep_dir / "plots" / stale).unlink(missing_ok=True)
    report = sweep_dir / "report.md"
    write_atomic(report, "\n".join(lines))
    return report


def load_study(storage: str, study_name: Optional[str]) -> optuna.Study:
    """An existing study, for `scripts/report.py`: errors name the option to fix, on one line."""
    try:
        if storage.startswith(JOURNAL):
            check_journal(Path(storage[len(JOURNAL) :]), f"--storage {storage}")
        else:  # a study of Optuna 2's: the exact command that upgrades it
            upgrade_schema(storage, None, key="--storage ")
        existing = [summary.study_name for summary in optuna.study.get_all_study_summaries(open_storage(storage))]
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever the storage backend raises, one line for the user
        raise ConfigError(f"--storage {storage}: cannot be read ({first_line(error)})") from None
    if study_name is None:
        if len(existing) != 1:
            found = f"{len(existing)} studies ({', '.join(existing)})" if existing else "no study"
            raise ConfigError(f"--study-name: {storage} holds {found}; name one with --study-name")
        study_name = existing[0]
    elif study_name not in existing:
        held = ", ".join(existing) or "none"
        raise ConfigError(f"--study-name {study_name}: no such study in {storage}; it holds: {held}")
    return optuna.load_study(study_name=study_name, storage=open_storage(storage))
