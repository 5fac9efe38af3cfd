"""Real sweeps on digits: `python train.py -m hparams_search=...` as a user runs it, checked through
the Optuna study it leaves and the files in its sweep directory.

Each sweep pays several seconds of imports before its first trial, so the sweeps this session's
selected tests need are started together when the module starts, two at a time (`sweep_pool`),
and each test waits for its own: a test names its sweep by indirect parametrization,
`@pytest.mark.parametrize("sweep", ["grid"], indirect=True)`, and gets a `Sweep`.
"""

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from conftest import CONF, ROOT, group_options
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from lightning_tune.errors import ConfigError, TrainingDiverged
from lightning_tune.sweeping.config import sweep_id
from lightning_tune.metrics import objective_direction, objective_names
from lightning_tune.sweeping.space import SearchSpace, flatten_params, grid_choices, parse_search_space
from lightning_tune.sweeping.sweeper import INTERRUPTED, TuningSweeper, trial_outcome
from lightning_tune.sweeping.study import derive_seed
from sweeping import ENV, JOURNAL, ONLY_LR, PRUNING, STUDY, TINY, Sweep, command, enqueue, run_sweep

optuna.logging.set_verbosity(optuna.logging.WARNING)

SEED = 42  # conf/train.yaml's seed: the sweep seed of every sweep here
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# hparams_search=grid cut to 4 points: depth x lr, every other param of the preset pinned.
GRID = [
    "hparams_search=grid",
    "model.depth=choice(1,2)",
    "optimizer.lr=choice(0.001,0.01)",
    "model.width=16",
    "optimizer=adam",
    "regularization.dropout=0.0",
]
GRID_POINTS = {(depth, lr) for depth in (1, 2) for lr in (0.001, 0.01)}
# Four trials, as enqueued: one that trains, one whose loss is NaN at once, one whose config fails when it
# is built (a validation split of 0.9 beside a test split of 0.15), one whose config does not even compose
# (model=linear has no depth, which the command sets).
FAILURES = [
    *[override for override in ONLY_LR if not override.startswith(("optimizer", "model="))],
    "model=choice(mlp,linear)",
    "optimizer=sgd",
    "optimizer.lr=choice(0.01,1e30)",
    "data.val_fraction=choice(0.15,0.9)",  # each in range, but 0.9 leaves no training split beside test's 0.15
    enqueue(
        {"model": "mlp", "optimizer.lr": "0.01", "data.val_fraction": "0.15"},
        {"model": "mlp", "optimizer.lr": "1e30", "data.val_fraction": "0.15"},
        {"model": "mlp", "optimizer.lr": "0.01", "data.val_fraction": "0.9"},
        {"model": "linear", "optimizer.lr": "0.01", "data.val_fraction": "0.15"},
    ),
    "hydra.sweeper.n_trials=4",
    "hydra.sweeper.max_failure_rate=0.75",  # 3 of 4 fail on purpose
]
PROGRESS = re.compile(  # trial, finished, n_trials, state, value or reason, seconds, best value, best trial
    r"Trial (\d+) \((\d+) of (\d+) finished\) (COMPLETE|PRUNED|FAIL): (.*) in ([\d.]+) s"
    r"(?:; best ([\d.]+) \(trial (\d+)\))?"
)


def kill_during_trial(sweep_dir: Path, args: list[str], trial: int) -> str:
    """Start the sweep, SIGKILL it and its children once trial `trial` is running; return its log."""
    log_path = sweep_dir.with_suffix(".killed.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command(sweep_dir, *args), cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 240
        while not (finished_rows(sweep_dir) >= trial and (sweep_dir / str(trial) / ".hydra").is_dir()):
            assert process.poll() is None, f"the sweep ended before trial {trial} started:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"trial {trial} did not start:\n{log_path.read_text()}"
            time.sleep(0.02)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended by itself (and an assertion above says why)
            pass
        process.wait()
    return log_path.read_text()


def finished_rows(sweep_dir: Path) -> int:
    try:
        text = (sweep_dir / "trials.csv").read_text()  # written atomically: never half a file
    except FileNotFoundError:
        return 0
    return sum(row["state"] in ("COMPLETE", "PRUNED", "FAIL") for row in csv.DictReader(text.splitlines()))


def resume_after_kill(tmp: Path, args: list[str]) -> tuple[str, dict[str, str], Sweep]:
    """Kill the sweep during trial 2 and run the same command again: (killed log, metrics.json of trials 0-1 as the
    kill left them, the rerun)."""
    sweep_dir = tmp / "sweep"
    killed = kill_during_trial(sweep_dir, args, trial=2)
    before = {number: (sweep_dir / number / "metrics.json").read_text() for number in ("0", "1")}
    return killed, before, run_sweep(sweep_dir, *args)


def random_resume(*storage: str) -> Callable[[Path, dict], tuple[str, dict[str, str], Sweep, Sweep]]:
    def run(tmp: Path, done: dict) -> tuple[str, dict[str, str], Sweep, Sweep]:
        args = ["hparams_search=random", *TINY, "trainer.max_epochs=2", "hydra.sweeper.n_trials=4", *storage]
        killed, before, rerun = resume_after_kill(tmp, args)
        return killed, before, rerun, run_sweep(rerun.dir, *args)  # and once more: a finished study runs nothing

    return run


def grid_resume(tmp: Path, done: dict) -> tuple[str, dict[str, str], Sweep]:
    return resume_after_kill(tmp, [*GRID, *TINY, "trainer.max_epochs=2"])


def sweep_job(*args: str) -> Callable[[Path, dict], Sweep]:
    return lambda tmp, done: run_sweep(tmp / "sweep", *args)


def random_warm_started(tmp: Path, done: dict) -> Sweep:
    """hparams_search=random: trial 0 from `enqueue_trials`, trial 1 from the grid sweep's best, trial 2 sampled."""
    enqueue = "hydra.sweeper.enqueue_trials=[{model.depth:2,optimizer.lr:0.005}]"
    return run_sweep(
        tmp / "sweep", "hparams_search=random", *TINY, "hydra.sweeper.n_trials=3", enqueue,
        f"hydra.sweeper.warm_start={done['grid'].dir}",
    )  # fmt: skip


def rerun_best(tmp: Path, done: dict) -> tuple[Path, subprocess.CompletedProcess]:
    """`python train.py --config-path <grid sweep> --config-name best`: (its run directory, the run)."""
    run_dir = tmp / "rerun"
    result = subprocess.run(
        [sys.executable, "train.py", "--config-path", str(done["grid"].dir.resolve()), "--config-name", "best",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return run_dir, result


@dataclass
class Job:
    run: Callable[[Path, dict], Any]
    needs: tuple[str, ...] = ()


# Longest first: two workers finish sooner that way. A job comes after the jobs it needs.
JOBS: dict[str, Job] = {
    "random_resume": Job(random_resume()),
    "random_resume_journal": Job(random_resume(JOURNAL)),
    "prune_asha_joblib": Job(sweep_job(
        *PRUNING, "hydra/sweeper/pruner=asha", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
    )),  # fmt: skip
    "prune_asha_joblib_journal": Job(sweep_job(
        *PRUNING, "hydra/sweeper/pruner=asha", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", JOURNAL,
    )),  # fmt: skip
    "grid_resume": Job(grid_resume),
    "grid": Job(sweep_job(*GRID, *TINY)),
    "grid_joblib": Job(sweep_job(*GRID, *TINY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")),  # 2 points at once
    "prune_median": Job(sweep_job(*PRUNING, "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2")),
    "prune_median_journal": Job(sweep_job(
        *PRUNING, "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2", JOURNAL,
    )),  # fmt: skip
    "tpe": Job(sweep_job("hparams_search=tpe", *TINY, "hydra.sweeper.n_trials=3")),
    "cmaes": Job(sweep_job("hparams_search=cmaes", *TINY, "hydra.sweeper.n_trials=3")),
    # its third trial from the Gaussian process, past 2 random ones
    "gp": Job(sweep_job("hparams_search=gp", *TINY, "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=2")),
    "qmc": Job(sweep_job("hparams_search=qmc", *TINY, "hydra.sweeper.n_trials=3")),
    "nsga2": Job(sweep_job("hparams_search=nsga2", *TINY, "hydra.sweeper.n_trials=4")),
    "failures": Job(sweep_job("hparams_search=random", *TINY, *FAILURES)),
    "timeout": Job(sweep_job("hparams_search=random", *TINY, "hydra.sweeper.n_trials=5", "hydra.sweeper.timeout_s=.5")),
    "all_fail": Job(sweep_job(  # no trial composes: model=linear has no depth or width
        "hparams_search=grid", *TINY, "model=choice(linear)", "optimizer.lr=0.01", "model.depth=1",
        "model.width=16", "regularization.dropout=0.0",
    )),  # fmt: skip
    "typo_option": Job(sweep_job("hparams_search=grid", *TINY, "optimizer=choice(adam,foo)")),
    "switched_sampler": Job(sweep_job("hparams_search=tpe", "hydra/sweeper/sampler=random", *TINY, "hydra.sweeper.n_trials=2")),
    "linear": Job(sweep_job("hparams_search=random", "model=linear", "data=iris", *TINY, "hydra.sweeper.n_trials=3")),
    "keras_tuned": Job(sweep_job("experiment=resnet_adam", "hparams_search=random", *TINY, "hydra.sweeper.n_trials=3")),
    "conditional": Job(sweep_job(
        "hparams_search=random", *[o for o in ONLY_LR if not o.startswith("optimizer")], "optimizer=choice(adam,sgd)",
        "optimizer.lr=0.01", "+hydra.sweeper.params.optimizer.momentum='interval(0.5,0.99)'",
        enqueue({"optimizer": "adam"}, {"optimizer": "sgd"}), *TINY, "hydra.sweeper.n_trials=4",
    )),  # fmt: skip
    "grid_enqueued": Job(sweep_job(
        "hparams_search=grid", "optimizer.lr=choice(0.001,0.01,0.1)", "model.depth=1", "model.width=16", "optimizer=adam",
        "regularization.dropout=0.0", enqueue({"optimizer.lr": "0.01"}), *TINY,
    )),  # fmt: skip
    "random": Job(random_warm_started, needs=("grid",)),
    "best_rerun": Job(rerun_best, needs=("grid",)),
}

# Bad inputs: (overrides, text the one error line must hold); each stops before any trial runs.
BAD_SWEEPS = {
    "grid_interval": ("hparams_search=grid optimizer.lr=interval(0.001,0.1)", "optimizer.lr"),
    "n_trials_0": ("hparams_search=tpe hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0"),
    "storage_path": ("hparams_search=tpe hydra.sweeper.storage=sqlite:///{tmp}/file/x.db", "hydra.sweeper.storage"),
    "journal_path": ("hparams_search=tpe hydra.sweeper.storage=journal:{tmp}/file/x.journal", "hydra.sweeper.storage"),
    "journal_no_file": ("hparams_search=tpe hydra.sweeper.storage=journal:", "hydra.sweeper.storage='journal:' names no file"),
    "sampler_foo": ("hparams_search=tpe hydra/sweeper/sampler=foo", "hydra/sweeper/sampler"),  # Hydra's own errors
    "pruner_foo": ("hparams_search=tpe hydra/sweeper/pruner=foo", "hydra/sweeper/pruner"),
    "off_grid": (
        "hparams_search=grid optimizer.lr=choice(0.001,0.01) hydra.sweeper.enqueue_trials=[{{optimizer.lr:0.05}}]",
        "hydra.sweeper.enqueue_trials",
    ),
    "enqueued_typo": (
        "hparams_search=random hydra.sweeper.enqueue_trials=[{{optimizer.lrr:0.01}}]",
        "hydra.sweeper.enqueue_trials[0]: optimizer.lrr not swept",
    ),
    "experiment_and_preset": (
        "experiment=iris_logreg_grid hparams_search=tpe",
        "experiment=iris_logreg_grid brings its own search, which does not combine with hparams_search=tpe",
    ),
    "no_such_key": (
        "hparams_search=random model=linear data=iris hydra.sweeper.params.model.depth='choice(1,2)'",
        "hydra.sweeper.params.model.depth: model=linear has no key 'depth'",
    ),
    "qmc_type": ("hparams_search=qmc hydra.sweeper.sampler.qmc_type=foo", "hydra.sweeper.sampler: The `qmc_type='foo'` is invalid"),
    "sampler_seed": ("hparams_search=gp hydra.sweeper.sampler.seed=-5", "hydra.sweeper.sampler: Seed must be between 0"),
    "storage_bare_path": ("hparams_search=tpe hydra.sweeper.storage=optuna.journal", "(did you mean journal:optuna.journal?)"),
    "journal_slashes": ("hparams_search=tpe hydra.sweeper.storage=journal://optuna.journal", "without //"),
    "journal_no_dir": ("hparams_search=tpe hydra.sweeper.storage=journal:{tmp}/nowhere/x.journal", "there is no directory"),
    "custom_search_space": (  # the Optuna sweeper's setting, which ours does not read
        "hparams_search=random hydra.sweeper.custom_search_space=my_app.space",
        "hydra.sweeper.custom_search_space is the Optuna sweeper's, not this one's",
    ),
}


def bad_sweep(overrides: str) -> Callable[[Path, dict], Sweep]:
    def run(tmp: Path, done: dict) -> Sweep:
        (tmp / "file").write_text("a file, so that no directory can be made under it\n")
        return run_sweep(tmp / "sweep", *TINY, *overrides.format(tmp=tmp).split())

    return run


JOBS.update({f"bad_{name}": Job(bad_sweep(overrides)) for name, (overrides, _) in BAD_SWEEPS.items()})


@pytest.fixture(scope="module")
def sweep_pool(request, tmp_path_factory):
    """Futures of the jobs that this session's selected tests in this module name, run two at a time."""
    wanted = {
        item.callspec.params["sweep"]
        for item in request.session.items
        if item.module is request.module and "sweep" in getattr(getattr(item, "callspec", None), "params", {})
    }
    wanted |= {need for name in wanted for need in JOBS[name].needs}
    futures: dict[str, Future] = {}

    def run(name: str) -> Any:
        done = {need: futures[need].result() for need in JOBS[name].needs}  # submitted earlier: running or done
        return JOBS[name].run(tmp_path_factory.mktemp(name), done)

    pool = ThreadPoolExecutor(max_workers=2)
    for name in JOBS:
        if name in wanted:
            futures[name] = pool.submit(run, name)
    yield futures
    pool.shutdown(cancel_futures=True)  # with -x, the jobs not started yet are dropped


@pytest.fixture
def sweep(request, sweep_pool) -> Any:
    return sweep_pool[request.param].result(timeout=600)


def uses(*names: str) -> Any:
    return pytest.mark.parametrize("sweep", names, indirect=True)


def params_key(trial: FrozenTrial) -> tuple:
    return tuple(sorted(trial.params.items()))


# --- every preset -----------------------------------------------------------------------------
@pytest.mark.slow
@uses("grid", "grid_joblib")
def test_grid_runs_each_point_once_in_directories_numbered_by_trial(sweep):
    sweep.ok()
    trials = sweep.trials()
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 4  # n_trials=1000 capped by the grid
    assert {(t.params["model.depth"], t.params["optimizer.lr"]) for t in trials} == GRID_POINTS
    assert "0 of 4 trial(s) finished" in sweep.output
    run_dirs = {int(row["number"]): row["run_dir"] for row in sweep.rows()}
    for trial in trials:
        run_dir = sweep.dir / str(trial.number)
        assert run_dirs[trial.number] == str(run_dir.resolve())
        assert "trial.pruning=false" in (run_dir / ".hydra" / "overrides.yaml").read_text()  # pruner=none
        metrics = yaml.safe_load((run_dir / "metrics.json").read_text())
        assert metrics["value"] == pytest.approx(trial.value)
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert (config["model"]["depth"], config["optimizer"]["lr"]) == (
            trial.params["model.depth"],
            trial.params["optimizer.lr"],
        )


@pytest.mark.slow
@uses("grid")
def test_each_trial_seed_is_derived_from_the_sweep_seed_and_recorded(sweep):
    rows = sweep.ok().rows()
    seeds = [int(row["trial_seed"]) for row in rows]
    assert seeds == [derive_seed(SEED, int(row["number"])) for row in rows]
    assert len(set(seeds)) == len(seeds)
    for row in rows:
        config = yaml.safe_load((Path(row["run_dir"]) / ".hydra" / "config.yaml").read_text())
        assert config["seed"] == int(row["trial_seed"])  # the trial trained with it


@pytest.mark.slow
@uses("grid")
def test_results_files_agree_with_the_study(sweep):
    study = sweep.ok().study()
    rows = sweep.rows()
    assert [int(row["number"]) for row in rows] == [trial.number for trial in study.trials]
    for row, trial in zip(rows, study.trials):
        assert row["state"] == trial.state.name
        assert float(row["value"]) == pytest.approx(trial.value)
        assert int(row["model.depth"]) == trial.params["model.depth"]
        assert float(row["optimizer.lr"]) == pytest.approx(trial.params["optimizer.lr"])
        assert float(row["duration_s"]) > 0
    results = yaml.safe_load((sweep.dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(study.best_value)
    assert results["best_params"] == study.best_params
    best = yaml.safe_load((sweep.dir / "best.yaml").read_text())
    assert best["seed"] == study.best_trial.user_attrs["trial_seed"]
    assert best["model"]["depth"] == study.best_params["model.depth"]
    assert best["trial"] == {"number": None, "study_name": None, "storage": None, "pruning": None}
    report = (sweep.dir / "report.md").read_text()
    assert f"Trial {study.best_trial.number}" in report
    for plot in ("optimization_history", "param_importances", "parallel_coordinates"):
        assert f"plots/{plot}.png" in report
        assert (sweep.dir / "plots" / f"{plot}.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.slow
@uses("grid")
def test_progress_log_shows_each_trial_its_state_value_time_and_the_best(sweep):
    lines = [PROGRESS.search(line) for line in sweep.ok().output.splitlines()]
    progress = [match for match in lines if match]
    assert [(int(m[1]), int(m[2]), int(m[3])) for m in progress] == [(k, k + 1, 4) for k in range(4)]
    trials = sweep.study().trials
    for match in progress:
        number = int(match[1])
        assert match[4] == "COMPLETE"
        assert float(match[5]) == pytest.approx(trials[number].value, abs=1e-4)
        best = max(trials[: number + 1], key=lambda trial: trial.value)  # the best so far
        assert (float(match[7]), int(match[8])) == (pytest.approx(best.value, abs=1e-4), best.number)
    assert f"Best value {sweep.study().best_value}" in sweep.output


@pytest.mark.slow
@uses("best_rerun")
def test_best_yaml_reruns_the_best_trial(sweep, sweep_pool):
    rerun_dir, result = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    grid = sweep_pool["grid"].result()
    metrics = yaml.safe_load((rerun_dir / "metrics.json").read_text())
    assert metrics["value"] == pytest.approx(grid.study().best_value, abs=1e-6)  # same config, same seed, on CPU


@pytest.mark.slow
@uses("random", "tpe", "cmaes", "gp", "qmc")
def test_preset_runs_n_trials_of_distinct_configurations(sweep):
    trials = sweep.ok().trials()
    warnings = re.findall(r"^\[W .*|.*Warning.*", sweep.output, re.MULTILINE)  # Optuna's logged ones, Python's
    assert warnings == [], warnings
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 3
    assert len({params_key(trial) for trial in trials}) == 3
    assert len(trials[0].params) >= 2
    rows = sweep.rows()
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3
    assert set(trials[0].params) <= set(rows[0])
    assert sorted(path.name for path in sweep.dir.iterdir() if path.name.isdigit()) == ["0", "1", "2"]
    for name in ("best.yaml", "optimization_results.yaml", "report.md", "plots/optimization_history.png"):
        assert (sweep.dir / name).is_file(), name


@pytest.mark.slow
@uses("nsga2")
def test_nsga2_records_two_values_per_trial_and_the_pareto_front(sweep):
    study = sweep.ok().study()
    assert [direction.name for direction in study.directions] == ["MAXIMIZE", "MINIMIZE"]  # val/acc, model/params
    trials = sweep.trials()
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 4
    assert all(len(trial.values) == 2 for trial in trials)
    rows = sweep.rows()
    assert {"val/acc", "model/params"} <= set(rows[0])

    def dominated(trial: FrozenTrial) -> bool:
        acc, size = trial.values
        return any(o.values[0] >= acc and o.values[1] <= size and o.values != trial.values for o in trials)

    front = sorted(tuple(t.values) for t in trials if not dominated(t))
    solutions = yaml.safe_load((sweep.dir / "optimization_results.yaml").read_text())["solutions"]
    assert sorted(tuple(solution["values"]) for solution in solutions) == front
    assert "## Pareto front" in (sweep.dir / "report.md").read_text()
    assert (sweep.dir / "plots" / "pareto_front.png").read_bytes().startswith(PNG_MAGIC)


# --- resuming ---------------------------------------------------------------------------------
@pytest.mark.slow
@uses("random_resume", "random_resume_journal")
def test_a_killed_sweep_resumes_retrying_the_interrupted_trial(sweep, request):
    killed_log, before, rerun, again = sweep
    rerun.ok()
    journal = request.node.callspec.params["sweep"].endswith("_journal")
    assert rerun.storage_files() == ({"optuna.journal"} if journal else {"optuna.db"})
    trials = rerun.trials()
    interrupted = [trial for trial in trials if trial.user_attrs.get(INTERRUPTED)]
    assert [trial.number for trial in interrupted] == [2], killed_log[-2000:]
    assert interrupted[0].state == TrialState.FAIL
    assert "interrupted" in interrupted[0].user_attrs["fail_reason"]
    assert "Resuming: 1 trial(s) interrupted" in rerun.output
    finished = [trial for trial in trials if not trial.user_attrs.get(INTERRUPTED)]
    assert [trial.number for trial in finished] == [0, 1, 3, 4]  # n_trials=4 in all, not 4 more
    assert all(trial.state == TrialState.COMPLETE for trial in finished)
    assert finished[2].params == interrupted[0].params  # the interrupted configuration goes first
    assert len({params_key(trial) for trial in finished}) == 4  # and nothing else ran twice
    # Job directories follow trial numbers: the rerun wrote 3 and 4 and left 0-2 alone.
    assert sorted(path.name for path in rerun.dir.iterdir() if path.name.isdigit()) == ["0", "1", "2", "3", "4"]
    assert {number: (rerun.dir / number / "metrics.json").read_text() for number in before} == before
    assert not (rerun.dir / "2" / "metrics.json").exists()
    run_dirs = {int(row["number"]): row["run_dir"] for row in rerun.rows()}
    for trial in finished:
        assert run_dirs[trial.number] == str((rerun.dir / str(trial.number)).resolve())
    assert [row["number"] for row in rerun.rows()] == ["0", "1", "2", "3", "4"]
    # Once more, on a finished study: nothing runs.
    again.ok()
    assert len(again.trials()) == 5
    assert "Launching" not in again.output


@pytest.mark.slow
@uses("grid_resume")
def test_a_killed_grid_sweep_resumes_and_covers_the_grid_once(sweep):
    killed_log, before, rerun = sweep
    trials = rerun.ok().trials()
    interrupted = [trial for trial in trials if trial.user_attrs.get(INTERRUPTED)]
    assert [trial.number for trial in interrupted] == [2], killed_log[-2000:]
    finished = [trial for trial in trials if not trial.user_attrs.get(INTERRUPTED)]
    assert [trial.state for trial in finished] == [TrialState.COMPLETE] * 4
    assert {(t.params["model.depth"], t.params["optimizer.lr"]) for t in finished} == GRID_POINTS
    assert interrupted[0].params in [trial.params for trial in finished[2:]]  # retried after the kill
    assert {number: (rerun.dir / number / "metrics.json").read_text() for number in before} == before


# --- trials that fail or are pruned -----------------------------------------------------------
@pytest.mark.slow
@uses("failures")
def test_a_diverging_trial_fails_with_its_reason_and_the_sweep_goes_on(sweep):
    trials = sweep.ok().trials()  # exit status 0
    assert [trial.params["optimizer.lr"] for trial in trials] == [0.01, 1e30, 0.01, 0.01]  # as enqueued
    assert trials[0].state == TrialState.COMPLETE
    assert trials[1].state == TrialState.FAIL
    assert re.match(r"diverged: training loss is (nan|inf) at epoch 0", trials[1].user_attrs["fail_reason"])
    assert not (sweep.dir / "1" / "metrics.json").exists()
    assert "Traceback" not in (sweep.dir / "1" / "train.log").read_text()  # the reason on one line: no crash
    rows = sweep.rows()
    assert [row["state"] for row in rows] == ["COMPLETE", "FAIL", "FAIL", "FAIL"]
    assert rows[1]["fail_reason"] == trials[1].user_attrs["fail_reason"]
    report = (sweep.dir / "report.md").read_text()
    assert "## Failed and pruned trials" in report and "| 1 | FAIL | diverged: " in report


@pytest.mark.slow
@uses("failures")
def test_a_trial_with_an_invalid_config_fails_with_the_reason(sweep):
    trials = sweep.ok().trials()
    built = trials[2]  # data.val_fraction=0.9: refused when the trial builds its objects
    assert built.state == TrialState.FAIL
    assert built.user_attrs["fail_reason"].startswith("invalid config: data.val_fraction=0.9 and data.test_fraction=0.15")
    assert not (sweep.dir / "2" / "metrics.json").exists()
    log = (sweep.dir / "2" / "train.log").read_text()  # the reason, once, and no traceback
    assert log.count("data.val_fraction=0.9 and data.test_fraction=0.15") == 1 and "Traceback" not in log, log
    composed = trials[3]  # model=linear with model.depth=1: Hydra cannot compose it, so no job is launched for it
    assert composed.state == TrialState.FAIL
    reason = composed.user_attrs["fail_reason"]
    assert reason.startswith("invalid config: model.depth is no setting of model"), reason
    assert "run_dir" not in composed.user_attrs and not (sweep.dir / "3").exists()
    assert re.search(r"Trial 3 \(4 of 4 finished\) FAIL: invalid config: model.depth is no setting", sweep.output)


@pytest.mark.slow
@uses("all_fail")
def test_too_many_failed_trials_stop_the_sweep_with_one_line(sweep):
    assert sweep.result.returncode != 0
    lines = sweep.result.stderr.strip().splitlines()  # after Optuna's own "A new study created" line
    assert lines[-1].startswith("error: 2 trials failed") and "hydra.sweeper.max_failure_rate=0.5" in lines[-1]
    assert "Traceback" not in sweep.output
    assert [row["state"] for row in sweep.rows()] == ["FAIL", "FAIL"]
    assert all("model.depth is no setting of model" in row["fail_reason"] for row in sweep.rows())


@uses("typo_option")
def test_a_typed_option_that_does_not_exist_is_refused_before_any_trial(sweep):
    assert sweep.result.returncode == 1 and not sweep.dir.exists()
    assert sweep.result.stderr == (
        "error: the sweep of optimizer has optimizer=foo: In 'train': Could not find 'optimizer/foo'; "
        "Available options in 'optimizer': adam, adamw, rmsprop, sgd\n"
    )


@pytest.mark.slow
@uses("prune_median", "prune_asha_joblib", "prune_median_journal", "prune_asha_joblib_journal")
def test_pruned_trials_are_recorded_in_the_study_and_trials_csv(sweep, request):
    trials = sweep.ok().trials()
    journal = request.node.callspec.params["sweep"].endswith("_journal")
    assert sweep.storage_files() == ({"optuna.journal"} if journal else {"optuna.db"})
    assert len(trials) == 4
    assert [trial.params["optimizer.lr"] for trial in trials] == [0.003, 0.003, 1e-06, 1e-06]  # as enqueued
    assert [trial.state for trial in trials[2:]] == [TrialState.PRUNED] * 2
    # The median pruner never prunes its 2 startup trials; ASHA may prune the worse of the two good
    # ones when they run in parallel, but never both.
    assert TrialState.COMPLETE in (trials[0].state, trials[1].state)
    for trial in trials[:2]:  # one report per training epoch: nothing after fit adds one
        if trial.state == TrialState.COMPLETE:
            assert sorted(trial.intermediate_values) == [0, 1, 2], trial.intermediate_values
    for trial in trials[2:]:
        assert trial.user_attrs["fail_reason"].startswith("pruned after epoch")
        assert max(trial.intermediate_values) < 2  # stopped before the third epoch
        log = (sweep.dir / str(trial.number) / "train.log").read_text()  # no crash: no traceback
        assert f"[INFO] - Trial {trial.user_attrs['fail_reason']}\n" in log and "Traceback" not in log, log
    assert [row["state"] for row in sweep.rows()][2:] == ["PRUNED", "PRUNED"]
    assert sorted(path.name for path in sweep.dir.iterdir() if path.name.isdigit()) == ["0", "1", "2", "3"]
    assert "trial.pruning" not in (sweep.dir / "0" / ".hydra" / "overrides.yaml").read_text()


# --- what the command line chooses ------------------------------------------------------------
@pytest.mark.slow
@uses("switched_sampler")
def test_a_presets_sampler_switched_on_the_command_line_is_the_one_used(sweep):
    assert len(sweep.ok().trials(TrialState.COMPLETE)) == 2
    assert "sampler RandomSampler" in sweep.output


@pytest.mark.slow
@uses("linear")
def test_a_preset_with_a_model_that_lacks_some_params_sweeps_the_rest(sweep):
    trials = sweep.ok().trials()
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 3
    assert "Not swept: model=linear has no model.depth, model.width" in sweep.output
    assert all(not name.startswith("model.") and "optimizer.lr" in trial.params for trial in trials for name in trial.params)


@pytest.mark.slow
@uses("keras_tuned")
def test_a_presets_option_that_does_not_compose_with_the_experiment_is_left_out(sweep):
    """experiment=resnet_adam sets Adam's eps, which SGD has not: the preset's optimizer choice loses sgd."""
    trials = sweep.ok().trials()
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 3
    assert "Not swept: optimizer=sgd does not compose here (" in sweep.output
    assert {trial.params["optimizer"] for trial in trials} <= {"adam", "rmsprop"}


@pytest.mark.slow
@uses("conditional")
def test_a_param_that_only_some_options_have_is_swept_with_those_only(sweep):
    trials = sweep.ok().trials()
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 4
    by_option = {option: [t for t in trials if t.params["optimizer"] == option] for option in ("adam", "sgd")}
    assert by_option["adam"] and by_option["sgd"]
    assert all("optimizer.momentum" not in trial.params for trial in by_option["adam"])
    for trial in by_option["sgd"]:
        config = OmegaConf.load(sweep.dir / str(trial.number) / ".hydra" / "config.yaml")
        assert config.optimizer.momentum == pytest.approx(trial.params["optimizer.momentum"])


@pytest.mark.slow
@uses("grid_enqueued")
def test_an_enqueued_grid_point_runs_first_and_every_point_exactly_once(sweep):
    trials = sweep.ok().trials()
    assert [trial.params["optimizer.lr"] for trial in trials][0] == 0.01
    assert sorted(trial.params["optimizer.lr"] for trial in trials) == [0.001, 0.01, 0.1]


# --- budgets and warm starts ------------------------------------------------------------------
@pytest.mark.slow
@uses("random")
def test_enqueued_and_warm_start_configurations_run_first(sweep, sweep_pool):
    trials = sweep.ok().trials()
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 3
    assert trials[0].params["model.depth"] == 2 and trials[0].params["optimizer.lr"] == pytest.approx(0.005)
    grid_best = sweep_pool["grid"].result().study().best_params
    assert {name: trials[1].params[name] for name in grid_best} == grid_best


@pytest.mark.slow
@uses("timeout")
def test_timeout_stops_the_sweep_after_the_running_trials(sweep):
    assert len(sweep.ok().trials()) == 1
    assert "Stopping: hydra.sweeper.timeout_s=0.5 reached with 4 trial(s) to go" in sweep.output
    assert [row["state"] for row in sweep.rows()] == ["COMPLETE"]
    assert (sweep.dir / "report.md").is_file()



# --- watching a sweep with optuna-dashboard ---------------------------------------------------
def documented_storage(file_name: str, sweep_dir: Path) -> str:
    """The storage argument of the README's `optuna-dashboard ...` command for the study file `file_name`,
    pointed at `sweep_dir` rather than `multirun/<sweep dir>`."""
    storages = re.findall(r"^optuna-dashboard (.+?)\s*(?:#.*)?$", (ROOT / "README.md").read_text(), re.M)
    matches = [storage for storage in storages if storage.endswith(f"multirun/<sweep dir>/{file_name}")]
    if len(matches) != 1:
        pytest.fail(f"the README shows no one `optuna-dashboard .../<sweep dir>/{file_name}` command: {storages}")
    return matches[0].replace("multirun/<sweep dir>", str(sweep_dir))


@contextmanager
def optuna_dashboard(storage: str, log: Path) -> Iterator[Callable[[str], Any]]:
    """`optuna-dashboard <storage>` on a free port of 127.0.0.1, as a user starts it (the console script of the
    `dashboard` extra, which `dev` includes): yields a GET of its JSON API; then stops it by its PID, and
    finds no warning in what it printed."""
    executable = Path(sys.executable).parent / "optuna-dashboard"
    if not executable.is_file():
        pytest.fail(f"{executable} is missing: pip install -e '.[dev]' installs it, with the dashboard extra")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return json.load(response)

    with open(log, "w") as out:
        process = subprocess.Popen(
            [executable, storage, "--host", "127.0.0.1", "--port", str(port)],
            env=ENV, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except ConnectionRefusedError:  # not listening yet
                assert process.poll() is None, f"optuna-dashboard ended:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"optuna-dashboard did not listen in 60 s:\n{log.read_text()}"
                time.sleep(0.1)
        yield get
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == -signal.SIGTERM
        with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
            socket.create_connection(("127.0.0.1", port), timeout=5)
        assert "warn" not in log.read_text().lower(), log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def shown_by(get: Callable[[str], Any]) -> dict[int, tuple]:
    """The dashboard's one study: each trial's (state, values, params) by number, as its API serves them."""
    studies = get("/api/studies")["study_summaries"]
    assert [study["study_name"] for study in studies] == [STUDY]
    trials = get(f"/api/studies/{studies[0]['study_id']}")["trials"]
    return {
        trial["number"]: (
            trial["state"].upper(),
            trial.get("values"),
            {param["name"]: param["param_external_value"] for param in trial["params"]},
        )
        for trial in trials
    }


def held_by(trials: list[FrozenTrial]) -> dict[int, tuple]:
    """The same, from the study itself."""
    return {
        trial.number: (trial.state.name, trial.values, {name: str(value) for name, value in trial.params.items()})
        for trial in trials
    }


@pytest.mark.slow
@uses("failures", "prune_median")  # COMPLETE, FAIL and PRUNED trials between them
def test_optuna_dashboard_shows_the_sweeps_trials(sweep, tmp_path):
    trials = sweep.ok().trials()
    with optuna_dashboard(documented_storage("optuna.db", sweep.dir), tmp_path / "dashboard.log") as get:
        shown = shown_by(get)
    assert shown == held_by(trials)
    assert {state for state, _, _ in shown.values()} > {"COMPLETE"}


def test_optuna_dashboard_reads_a_journal_file(tmp_path):
    """The journal a sweep with `hydra.sweeper.storage=journal:...` keeps, built here with Optuna's API and the
    sweep's lock (the dashboard takes Optuna's symlink lock on the same `optuna.journal.lock` file)."""
    path = str(tmp_path / "optuna.journal")
    storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
        if trial.number == 1:
            raise optuna.TrialPruned()
        if trial.number == 2:
            raise ValueError("a trial that fails")
        return lr

    study.optimize(objective, n_trials=4, catch=ValueError)
    with optuna_dashboard(documented_storage("optuna.journal", tmp_path), tmp_path / "dashboard.log") as get:
        shown = shown_by(get)
    assert shown == held_by(study.get_trials())
    assert [state for state, _, _ in shown.values()] == ["COMPLETE", "PRUNED", "FAIL", "COMPLETE"]


# --- bad inputs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sweep",
    [pytest.param(f"bad_{name}", marks=[] if name.endswith("_foo") else [pytest.mark.slow]) for name in BAD_SWEEPS],
    indirect=True,
)  # the sweeper's own checks come after seconds of imports: slow; Hydra's come at once
def test_bad_sweep_input_stops_before_any_trial_with_a_line_naming_the_key(sweep, request):
    name = request.node.callspec.params["sweep"][len("bad_") :]
    _, key = BAD_SWEEPS[name]
    stderr = sweep.result.stderr
    assert sweep.result.returncode != 0
    assert "Traceback" not in sweep.output
    assert any(key in line for line in stderr.splitlines()), stderr
    assert "Launching" not in sweep.output
    assert not sweep.dir.exists() or not any(sweep.dir.iterdir()), list(sweep.dir.iterdir())
    lines = stderr.strip().splitlines()  # ours, and Hydra's composition errors too
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr


@pytest.mark.slow
@uses("bad_grid_interval")
def test_grid_refuses_an_interval_and_asks_for_choice_or_range(sweep):
    assert "choice" in sweep.result.stderr and "range" in sweep.result.stderr


@uses("bad_sampler_foo", "bad_pruner_foo")
def test_unknown_sampler_or_pruner_lists_the_valid_ones(sweep, request):
    samplers, pruners = ["tpe", "random", "grid", "cmaes", "nsgaii"], ["median", "asha", "hyperband", "none"]
    valid = samplers if "sampler" in request.node.callspec.params["sweep"] else pruners
    [line] = sweep.result.stderr.strip().splitlines()  # Hydra 1.4 lists the options on the error's own line
    listed = line.split("Available options in ", 1)[1].split(": ", 1)[1].split(", ")
    assert set(valid) <= set(listed), line


# --- unit tests of the sweeper's parts --------------------------------------------------------
SAMPLERS = {"tpe": "optuna.samplers.TPESampler", "random": "optuna.samplers.RandomSampler",
            "cmaes": "optuna.samplers.CmaEsSampler", "grid": "optuna.samplers.GridSampler",
            "nsgaii": "hydra_plugins.hydra_optuna_sweeper._impl.create_nsgaii_sampler"}  # fmt: skip


@pytest.mark.parametrize("preset", group_options("hparams_search"))
def test_every_sampler_and_pruner_replaces_a_presets_own(preset):
    with initialize_config_dir(config_dir=str(CONF)):
        for sampler, target in SAMPLERS.items():
            cfg = compose("train", [f"hparams_search={preset}", f"hydra/sweeper/sampler={sampler}"], return_hydra_config=True)
            assert cfg.hydra.sweeper.sampler._target_ == target
        for pruner in ("median", "asha", "hyperband", "none"):
            cfg = compose("train", [f"hparams_search={preset}", f"hydra/sweeper/pruner={pruner}"], return_hydra_config=True)
            assert cfg.hydra.runtime.choices["hydra/sweeper/pruner"] == pruner


def preset_suggestions(preset: str, seed: int, n_trials: int = 14, batch: int = 2) -> list[list[str]]:
    """The overrides a preset's own sampler, seeded by `seed`, gives its trials, asked `batch` at a time as
    parallel trials are (TPE's constant liar then sees the batch's other trials running); each trial's
    objective values are a fixed function of its params."""
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose("train", [f"hparams_search={preset}"], return_hydra_config=True)
    sweeper = TuningSweeper.__new__(TuningSweeper)
    sweeper.config = cfg
    distributions, fixed = parse_search_space(flatten_params(OmegaConf.to_container(cfg.hydra.sweeper.params)))
    space = SearchSpace(distributions, fixed)
    names = objective_names(cfg)
    study = optuna.create_study(sampler=sweeper.sampler(seed, 0, grid=False),
                                directions=[objective_direction(name) for name in names])  # fmt: skip
    suggested: list[list[str]] = []
    while len(suggested) < n_trials:
        trials = [study.ask() for _ in range(batch)]
        suggested += [TuningSweeper._suggest(trial, space) for trial in trials]
        for trial in trials:
            value = sum(zlib.crc32(str(v).encode()) % 997 for v in trial.params.values()) / 997
            study.tell(trial, [value + i for i in range(len(names))])
    return suggested


@pytest.mark.parametrize("preset", [p for p in group_options("hparams_search") if p != "grid"])  # grid: test_space
def test_a_presets_sampler_suggests_the_same_trials_for_the_same_seed(preset):
    first = preset_suggestions(preset, seed=3)
    assert preset_suggestions(preset, seed=3) == first  # past the 10 random startup trials of TPE, too
    assert preset_suggestions(preset, seed=4)[1:] != first[1:]  # not only trial 0: unscrambled Sobol's were


class FakeTrial:
    def __init__(self, number: int) -> None:
        self.number, self.user_attrs = number, {}

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value


def test_trial_overrides_pin_the_derived_seed():
    sweeper = TuningSweeper.__new__(TuningSweeper)
    sweeper.study_name, sweeper.storage_url = STUDY, "sqlite:///x.db"
    sweeper.pruner_cfg = {"_target_": "optuna.pruners.MedianPruner"}
    trial = FakeTrial(7)
    overrides = sweeper._trial_overrides(trial, sweep_seed=3, derive=True)
    assert "trial.number=7" in overrides
    assert f"seed={derive_seed(3, 7)}" in overrides and trial.user_attrs["trial_seed"] == derive_seed(3, 7)
    overrides = sweeper._trial_overrides(FakeTrial(8), sweep_seed=3, derive=False)
    assert not any(o.startswith(("trainer.devices=", "seed=")) for o in overrides)


def test_derive_seed_is_reproducible_and_differs_per_trial_and_sweep():
    seeds = [derive_seed(42, number) for number in range(1000)]
    assert seeds == [derive_seed(42, number) for number in range(1000)]
    assert len(set(seeds)) == 1000
    assert all(0 <= seed < 2**31 for seed in seeds)
    assert derive_seed(1, 5) != derive_seed(2, 5)


@pytest.mark.parametrize(
    "override, distribution, points",
    [
        ("x=range(1,5)", IntDistribution(1, 4), [1, 2, 3, 4]),  # Hydra's range stops before 5
        ("x=range(1,10,3)", IntDistribution(1, 7, step=3), [1, 4, 7]),
        ("x=range(1,7,2)", IntDistribution(1, 5, step=2), [1, 3, 5]),
        ("x=range(0,1,0.25)", FloatDistribution(0, 0.75, step=0.25), [0, 0.25, 0.5, 0.75]),
        ("x=range(0.1,0.4,0.1)", FloatDistribution(0.1, 0.3, step=0.1), [0.1, 0.2, 0.3]),
        ("x=choice(adam,sgd)", CategoricalDistribution(["adam", "sgd"]), ["adam", "sgd"]),
        ("x=choice(1,2.5)", CategoricalDistribution([1, 2.5]), [1, 2.5]),
    ],
)
def test_parse_search_space_and_grid_points(override, distribution, points):
    distributions, fixed = parse_search_space([override, "y=3"])
    assert fixed == {"y": "3"}
    parsed = distributions["x"]
    assert type(parsed) is type(distribution)
    for attribute in ("low", "high", "step", "log", "choices"):
        if hasattr(distribution, attribute):
            assert getattr(parsed, attribute) == pytest.approx(getattr(distribution, attribute))
    assert grid_choices("x", parsed) == pytest.approx(points)


def test_parse_search_space_intervals():
    distributions, _ = parse_search_space(["a=interval(0,0.5)", "b=tag(log,interval(1e-4,1e-1))"])
    assert distributions["a"] == FloatDistribution(0, 0.5)
    assert distributions["b"] == FloatDistribution(1e-4, 1e-1, log=True)
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.params\.a .*choice.*range"):
        grid_choices("a", distributions["a"])


def job_return(status: JobStatus, value: Any) -> JobReturn:
    ret = JobReturn(status=status)
    ret.return_value = value
    return ret


@pytest.mark.parametrize(
    "ret, n_objectives, state, values, reason",
    [
        (job_return(JobStatus.COMPLETED, 0.9), 1, TrialState.COMPLETE, [0.9], ""),
        (job_return(JobStatus.COMPLETED, [0.9, 1000]), 2, TrialState.COMPLETE, [0.9, 1000.0], ""),
        (job_return(JobStatus.FAILED, optuna.TrialPruned("pruned after epoch 1")), 1, TrialState.PRUNED, None,
         "pruned after epoch 1"),
        (job_return(JobStatus.FAILED, TrainingDiverged("loss is nan")), 1, TrialState.FAIL, None,
         "diverged: loss is nan"),
        (job_return(JobStatus.FAILED, ConfigError("model.depth: too deep")), 1, TrialState.FAIL, None,
         "invalid config: model.depth: too deep"),
        (job_return(JobStatus.FAILED, RuntimeError("CUDA out of memory\nmore")), 1, TrialState.FAIL, None,
         "RuntimeError: CUDA out of memory"),
        (job_return(JobStatus.COMPLETED, float("nan")), 1, TrialState.FAIL, None, "returned a non-finite value: [nan]"),
        (job_return(JobStatus.COMPLETED, 0.9), 2, TrialState.FAIL, None, "returned 1 values for 2 objectives"),
    ],
)  # fmt: skip
def test_trial_outcome(ret, n_objectives, state, values, reason):
    assert trial_outcome(ret, n_objectives) == (state, values, reason)


def test_composition_error_is_one_line_with_the_valid_options():
    from hydra.errors import ConfigCompositionException, MissingConfigException

    from lightning_tune.console import hydra_error_line as composition_error

    missing = MissingConfigException(
        "In 'train': Could not find 'optimizer/foo'\n\nAvailable options in 'optimizer':\n\tadam\n\tsgd\n"
        "Config search path:\n\tprovider=hydra, path=pkg://hydra.conf"
    )
    shown = "In 'train': Could not find 'optimizer/foo'; Available options in 'optimizer': adam, sgd"
    assert composition_error(missing) == shown
    try:
        raise ConfigCompositionException("Error merging override model.depth=abc") from ValueError(
            "Value 'abc' of type 'str' could not be converted to Integer\n    full_key: model.depth"
        )
    except ConfigCompositionException as error:
        assert composition_error(error) == (
            "Error merging override model.depth=abc: Value 'abc' of type 'str' could not be converted to Integer"
        )


def test_warm_start_without_best_yaml_names_the_key(tmp_path):
    sweeper = TuningSweeper.__new__(TuningSweeper)
    sweeper.enqueue_trials, sweeper.warm_start = [{"optimizer.lr": 0.01}], str(tmp_path)
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.warm_start=.*no best\.yaml there"):
        sweeper._warm_start_params(["optimizer.lr"])
    (tmp_path / "best.yaml").write_text("optimizer:\n  lr: 0.003\nmodel:\n  depth: 2\n")
    first = sweeper._warm_start_params(["optimizer.lr", "model.depth", "model.width"])
    assert first == [{"optimizer.lr": 0.01}, {"optimizer.lr": 0.003, "model.depth": 2}]


def test_sweep_id_ignores_budget_and_launcher_but_not_the_search():
    task = ["hparams_search=tpe", "optimizer.lr=interval(0.001,0.1)", "seed=1"]
    same = sweep_id(task, [])
    assert sweep_id(list(reversed(task)), []) == same
    budget_and_place = [
        "hydra.sweeper.n_trials=50", "hydra.sweeper.timeout_s=60", "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", "hydra.sweep.dir=/tmp/x", "hydra.verbose=true",
    ]  # fmt: skip
    assert sweep_id([*task, "launcher=slurm"], budget_and_place) == same
    assert sweep_id([*task[:2], "seed=2"], []) != same
    assert sweep_id(task, ["hydra/sweeper/pruner=median"]) != same
    assert sweep_id([*task, "model=mlp"], []) != same


def test_the_same_command_finds_the_same_sweep_directory():
    def sweep_dir(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "train.py", "hparams_search=tpe", *args, "--cfg", "hydra", "-p", "hydra.sweep.dir"],
            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    first = sweep_dir("seed=3")
    assert re.fullmatch(r"multirun/tpe-[0-9a-f]{8}", first), first
    assert sweep_dir("seed=3", "hydra.sweeper.n_trials=5") == first
    assert sweep_dir("seed=4") != first
