"""Storages that many trial processes write at once: a PostgreSQL server (scripts/start-postgres) and Optuna's
journal file carry an 8-worker sweep with no trial lost, run twice or left running, and what they cannot open is
one line before any trial.

The PostgreSQL tests use the server in LIGHTNING_TUNE_TEST_POSTGRES (.ci/run starts one and sets it), each in a
database of its own (`postgres_database`); without it they are skipped, saying why.
"""

import dataclasses
import socket

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import FrozenTrial, TrialState
from sweeping import JOURNAL, ONLY_LR, PRUNING, STUDY, TINY, run_sweep
from test_sweeps import resume_after_kill

from lightning_tune.sweeping.sweeper import INTERRUPTED

N_TRIALS = 16
# 8 trials at once, each reporting its epochs to the pruner from its own process: 16 trials of about a second
EIGHT_WORKERS = [
    "hparams_search=random", *TINY, "trainer.max_epochs=2",
    *[override for override in ONLY_LR if not override.startswith("optimizer.lr=")],
    "optimizer.lr=interval(0.001,0.05)",  # continuous: two trials with one value would be one trial run twice
    "hydra/sweeper/pruner=median", "hydra/launcher=joblib", "hydra.launcher.n_jobs=8", f"hydra.sweeper.n_trials={N_TRIALS}",
]  # fmt: skip


def most_running_at_once(trials: list[FrozenTrial]) -> int:
    """The most trials the study held RUNNING at one time, from when each was started and finished."""
    events = sorted([(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials])
    running = [0]
    for _, change in events:  # at one instant, a finish (-1) sorts before a start
        running.append(running[-1] + change)
    return max(running)


def free_port() -> int:
    """A port of 127.0.0.1 on which nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["postgres", "journal"])
def test_eight_workers_finish_every_trial_exactly_once(tmp_path, request, storage):
    if storage == "postgres":
        sweep = run_sweep(tmp_path / "sweep", *EIGHT_WORKERS, storage=request.getfixturevalue("postgres_database"))
        assert sweep.storage_files() == set()
    else:
        sweep = run_sweep(tmp_path / "sweep", *EIGHT_WORKERS, JOURNAL)
        assert sweep.storage_files() == {"optuna.journal"}  # and no lock left behind
    sweep.ok()
    assert "database is locked" not in sweep.output
    trials = sweep.trials()
    assert [trial.number for trial in trials] == list(range(N_TRIALS))  # none lost, none twice
    assert {trial.state for trial in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}, [
        (trial.number, trial.state.name, trial.user_attrs.get("fail_reason")) for trial in trials
    ]  # none left RUNNING or WAITING, none failed
    assert len({trial.params["optimizer.lr"] for trial in trials}) == N_TRIALS  # no configuration run twice
    assert all(trial.intermediate_values for trial in trials)  # every trial's process reached the study
    assert most_running_at_once(trials) == 8
    assert [(row["number"], row["state"]) for row in sweep.rows()] == [(str(t.number), t.state.name) for t in trials]
    assert sorted(int(path.name) for path in sweep.dir.iterdir() if path.name.isdigit()) == list(range(N_TRIALS))
    run_dirs = {int(row["number"]): row["run_dir"] for row in sweep.rows()}
    for trial in trials:  # each directory holds the one run of its trial
        run_dir = sweep.dir / str(trial.number)
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        assert [o for o in overrides if o.startswith("trial.number=")] == [f"trial.number={trial.number}"]
        assert run_dirs[trial.number] == str(run_dir.resolve())
        assert (run_dir / "metrics.json").is_file() == (trial.state == TrialState.COMPLETE)


@pytest.mark.slow
def test_pruning_reaches_the_study_from_parallel_trials_on_postgres(tmp_path, postgres_database):
    # No batch barrier: trial 2 starts once a good trial is complete, while the other may run on past trial 2's
    # epochs. With one startup trial the median pruner has what it needs whichever good trial ends first.
    sweep = run_sweep(
        tmp_path / "sweep", *PRUNING, "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", storage=postgres_database,
    ).ok()  # fmt: skip
    trials = sweep.trials()
    assert [trial.params["optimizer.lr"] for trial in trials] == [0.003, 0.003, 1e-06, 1e-06]  # as enqueued
    assert TrialState.COMPLETE in (trials[0].state, trials[1].state)
    assert [trial.state for trial in trials[2:]] == [TrialState.PRUNED] * 2
    for trial in trials[2:]:
        assert trial.user_attrs["fail_reason"].startswith("pruned after epoch")
        assert max(trial.intermediate_values) < 2  # stopped before the third epoch
    assert [row["state"] for row in sweep.rows()][2:] == ["PRUNED", "PRUNED"]
    assert sweep.storage_files() == set()


@pytest.mark.slow
def test_a_killed_sweep_on_postgres_resumes_retrying_the_interrupted_trial(tmp_path, postgres_database):
    """The URL typed as it is (it holds no password: start-postgres keeps that in ~/.pgpass)."""
    args = ["hparams_search=random", *TINY, "trainer.max_epochs=2", "hydra.sweeper.n_trials=4",
            f"hydra.sweeper.storage={postgres_database}"]  # fmt: skip
    killed_log, before, rerun = resume_after_kill(tmp_path, args)
    rerun = dataclasses.replace(rerun, storage=postgres_database).ok()
    trials = rerun.trials()
    interrupted = [trial for trial in trials if trial.user_attrs.get(INTERRUPTED)]
    assert [(trial.number, trial.state) for trial in interrupted] == [(2, TrialState.FAIL)], killed_log[-2000:]
    finished = [trial for trial in trials if not trial.user_attrs.get(INTERRUPTED)]
    assert [(trial.number, trial.state) for trial in finished] == [(n, TrialState.COMPLETE) for n in (0, 1, 3, 4)]
    assert finished[2].params == interrupted[0].params  # the interrupted configuration goes first
    assert {number: (rerun.dir / number / "metrics.json").read_text() for number in before} == before
    assert [row["number"] for row in rerun.rows()] == ["0", "1", "2", "3", "4"]


@pytest.mark.slow
def test_a_second_sweep_on_the_same_database_refuses_the_first_ones_study(tmp_path, postgres_database):
    """Every sweep's study is `lightning-tune` by default: on a shared server, a second sweep directory gets one
    line asking for a study of its own, rather than taking over the first's trials; the first resumes as before."""
    first = run_sweep(tmp_path / "first", "hparams_search=random", *TINY, "hydra.sweeper.n_trials=1",
                      storage=postgres_database).ok()  # fmt: skip
    second_args = ["hparams_search=tpe", *TINY, "hydra.sweeper.n_trials=1"]
    second = run_sweep(tmp_path / "second", *second_args, storage=postgres_database)
    assert second.result.returncode != 0
    assert second.result.stderr.strip().splitlines() == [
        f"error: the study '{STUDY}' in {postgres_database} is the sweep's in {first.dir.resolve()}: give this sweep a "
        f"study of its own, hydra.sweeper.study_name=second say, or run that sweep's command to resume it"
    ]
    assert not second.dir.exists()
    assert [(trial.number, trial.state) for trial in first.trials()] == [(0, TrialState.COMPLETE)]
    again = run_sweep(first.dir, "hparams_search=random", *TINY, "hydra.sweeper.n_trials=1", storage=postgres_database)
    assert "Launching" not in again.ok().output  # its study, finished
    run_sweep(tmp_path / "second", *second_args, "hydra.sweeper.study_name=second", storage=postgres_database).ok()
    assert len(optuna.load_study(study_name="second", storage=postgres_database).trials) == 1
    assert len(first.trials()) == 1  # and the first's is untouched


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no_server", "no_database", "wrong_password", "no_driver"])
def test_a_postgres_storage_that_cannot_be_opened_stops_before_any_trial_in_one_line(tmp_path, request, case):
    secret = "Wr0ngPa55"
    nowhere = f"lightning_tune@127.0.0.1:{free_port()}/lightning_tune"
    if case == "no_server":
        url, reason = f"postgresql+psycopg://{nowhere}", "OperationalError: (psycopg.OperationalError) connection failed"
    elif case == "no_driver":  # pg8000: a driver SQLAlchemy knows, which the postgres extra does not bring
        url, reason = f"postgresql+pg8000://{nowhere}", (
            "its driver is not installed (No module named 'pg8000'); pip install 'lightning-tune[postgres]' brings "
            "psycopg 3, for postgresql+psycopg://..."
        )
    else:
        server = sqlalchemy.make_url(request.getfixturevalue("postgres_server"))
        if case == "no_database":
            url, reason = server.set(database="lt_no_such_database"), 'database "lt_no_such_database" does not exist'
        else:
            url, reason = server.set(password=secret), "password authentication failed"
        url = url.render_as_string(hide_password=False)
    sweep = run_sweep(tmp_path / "sweep", "hparams_search=random", *TINY, storage=url)
    assert sweep.result.returncode != 0
    (line,) = sweep.result.stderr.strip().splitlines()
    assert line.startswith(f"error: hydra.sweeper.storage='{url.replace(secret, '***')}' cannot be opened: "), line
    assert reason in line, line
    assert secret not in sweep.output and "Launching" not in sweep.output
    assert not sweep.dir.exists()
