"""One sweep per sweep directory; no run written over; joblib workers that end with their sweep; each
parallel trial's own duration. Real sweeps as a user starts them, and the guards' parts on their own."""

import csv
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable
from unittest.mock import Mock

import pytest
from conftest import ROOT
from optuna.trial import TrialState
from sweeping import ENV, JOURNAL, ONLY_LR, TINY, command, enqueue, finished, run_sweep

from lightning_tune.errors import ConfigError
from lightning_tune.sweeping.guards import LOCK, check_runs_known, driver_lock
from lightning_tune.sweeping.sweeper import INTERRUPTED, TuningSweeper, trial_outcome


# A trial of several seconds, as tests/test_slurm.py's LONG_TRIAL: 6 epochs of 30 batches.
LONG = ["hparams_search=random", "trainer=cpu", "logger=csv", "trainer.max_epochs=6", "+trainer.limit_train_batches=30",
        "data.batch_size=16"]  # fmt: skip
JOBLIB = ["launcher=joblib", "launcher.n_jobs=2"]


def wait_for(
    condition: Callable[[], bool], what: str, process: subprocess.Popen, log: Path, timeout: float = 180
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the sweep ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def start_sweep(sweep_dir: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """The sweep in the background, in a session of its own (the processes of that session are the sweep's)."""
    log = sweep_dir.with_suffix(".log")
    with open(log, "w") as output:
        process = subprocess.Popen(
            command(sweep_dir, *args),
            cwd=ROOT, env=ENV, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return process, log


def session_processes(session: int) -> list[int]:
    """The pids of the processes of a session, from /proc (field 6 of stat: the session id)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def has_open_file_in(pid: int, directory: Path) -> bool:
    """Whether the process holds a file of `directory` open (a trial's process: its log)."""
    try:
        return any(str(directory) in os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # it ended, or a descriptor closed meanwhile
        return False


def first_epoch_done(sweep_dir: Path, number: int) -> Callable[[], bool]:
    return (sweep_dir / str(number) / "checkpoints" / "best.ckpt").is_file



# --- two drivers --------------------------------------------------------------------------------
def test_a_second_driver_lock_is_refused_naming_the_first_and_is_free_once_released(tmp_path):
    with driver_lock(tmp_path / "sweep"):
        assert f"pid {os.getpid()} on " in (tmp_path / "sweep" / LOCK).read_text()
        holder = rf"{tmp_path / 'sweep'} is in use by another sweep \(pid {os.getpid()} on "
        with pytest.raises(ConfigError, match=holder):
            with driver_lock(tmp_path / "sweep"):
                pass
    with driver_lock(tmp_path / "sweep"):  # released with its holder
        pass


def test_a_lock_on_a_sweep_that_wrote_nothing_leaves_no_directory(tmp_path):
    with pytest.raises(ConfigError):
        with driver_lock(tmp_path / "sweep"):
            raise ConfigError("the storage cannot be opened")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_a_second_command_on_a_live_sweep_refuses_in_one_line_and_the_first_finishes_untouched(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [*LONG, "hydra.sweeper.n_trials=3"]  # trials 1 and 2 still to run: the second command meets a live sweep
    process, log = start_sweep(sweep_dir, *args)
    try:
        wait_for(first_epoch_done(sweep_dir, 0), "trial 0's first epoch", process, log)
        second = run_sweep(sweep_dir, *args)  # its refusal, naming the first's pid, shows the first held the sweep
    finally:
        first = finished(process, log, sweep_dir)
    assert second.result.returncode != 0
    (line,) = second.result.stderr.strip().splitlines()
    assert line.startswith(f"error: {sweep_dir} is in use by another sweep (pid {process.pid} on "), line
    first.ok()
    trials = first.trials()
    assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE) for n in range(3)]
    assert not any(t.user_attrs.get(INTERRUPTED) for t in trials)
    assert [row["state"] for row in first.rows()] == ["COMPLETE"] * 3


# --- lost storage -------------------------------------------------------------------------------
def test_runs_that_the_study_does_not_know_are_refused_naming_them(tmp_path):
    for number in (0, 1, 2):
        (tmp_path / str(number)).mkdir()
        (tmp_path / str(number) / "train.log").write_text("")
    (tmp_path / "0" / "metrics.json").write_text("{}")
    (tmp_path / "7").mkdir()  # empty: no run
    check_runs_known(tmp_path, [0, 1, 2, 3], "sqlite:///x.db")
    with pytest.raises(ConfigError, match=r"holds the runs of 2 trial\(s\) \(1, 2; 0 finished\) that the study in "
                                          r"sqlite:///x.db does not know \(1 trial\(s\)\)"):  # fmt: skip
        check_runs_known(tmp_path, [0], "sqlite:///x.db")
    with pytest.raises(ConfigError, match=r"\(0, 1, 2; 1 finished\).*Restore it, or give this sweep"):
        check_runs_known(tmp_path, [], "sqlite:///x.db")


def test_a_trial_whose_directory_exists_is_not_launched_and_fails_saying_why(tmp_path):
    launched = []
    sweeper = TuningSweeper.__new__(TuningSweeper)
    sweeper.sweep_dir, sweeper.hydra_context, sweeper.config = tmp_path, SimpleNamespace(config_loader=Mock()), None
    sweeper.launcher = SimpleNamespace(launch=lambda jobs, initial_job_idx: launched.append(initial_job_idx) or [])
    (tmp_path / "3").mkdir()
    state, _, reason = trial_outcome(sweeper._launch(SimpleNamespace(number=3), ["optimizer.lr=0.1"]), 1)
    assert state == TrialState.FAIL
    assert reason == f"RuntimeError: not run: {tmp_path / '3'} already holds another run"
    sweeper._launch(SimpleNamespace(number=4), ["optimizer.lr=0.1"])
    assert launched == [4]  # the next trial, whose directory is free, ran


def snapshot(sweep_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file of the trial directories: (size, mtime in ns)."""
    return {
        str(path.relative_to(sweep_dir)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sweep_dir.glob("[0-9]*/**/*")
        if path.is_file()
    }


@pytest.mark.slow
@pytest.mark.parametrize("storage", [[], [JOURNAL]], ids=["sqlite", "journal"])
def test_a_sweep_whose_study_was_lost_refuses_and_writes_no_trial_directory_again(tmp_path, storage):
    args = ["hparams_search=random", *TINY, "logger=tensorboard", "hydra.sweeper.n_trials=2", *storage]
    sweep = run_sweep(tmp_path / "sweep", *args).ok()
    before = snapshot(sweep.dir)
    assert {"0/metrics.json", "1/metrics.json"} <= set(before)
    (study_file,) = sweep.storage_files()
    if storage:  # the same command without the journal: the study it would open is not there, the journal is
        other = run_sweep(sweep.dir, *args[: -len(storage)])
        (line,) = other.result.stderr.strip().splitlines()
        assert "optuna.db (this directory holds optuna.journal: another hydra.sweeper.storage?)" in line, line
        assert sweep.storage_files() == {"optuna.journal"}
    (sweep.dir / study_file).unlink()
    again = run_sweep(sweep.dir, *args)
    assert again.result.returncode != 0
    (line,) = again.result.stderr.strip().splitlines()
    assert line.startswith(f"error: {sweep.dir} holds the runs of 2 trial(s) (0, 1; 2 finished)"), line
    assert study_file in line and "hydra.sweep.dir" in line
    assert snapshot(sweep.dir) == before and not sweep.storage_files(), "a new, empty study file"


@pytest.mark.slow
def test_a_study_in_a_shared_storage_file_is_its_own_sweeps(tmp_path):
    """Two sweep directories on one journal outside both: the second is refused before it changes the study."""
    (tmp_path / "shared").mkdir()
    journal = tmp_path / "shared" / "digits.journal"
    args = ["hparams_search=random", *TINY, "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage=journal:{journal}"]
    run_sweep(tmp_path / "first", *args).ok()
    records = journal.read_bytes()
    second = run_sweep(tmp_path / "second", *args)
    (line,) = second.result.stderr.strip().splitlines()
    assert line == (
        f"error: the study 'lightning-tune' in journal:{journal} is the sweep's in {tmp_path / 'first'}: give this "
        f"sweep a study of its own, hydra.sweeper.study_name=second say, or run that sweep's command to resume it"
    )
    assert journal.read_bytes() == records and not (tmp_path / "second").exists()
    run_sweep(tmp_path / "second", *args, "hydra.sweeper.study_name=second").ok()  # its own study, beside


@pytest.mark.slow
def test_a_journal_that_is_not_optunas_or_refuses_writes_ends_the_sweep_in_one_line_and_changes_nothing(tmp_path):
    """A file of something else where the journal should be; then a full disk, as a file size limit makes it
    (RLIMIT_FSIZE: Python ignores SIGXFSZ, so a write past it fails with EFBIG)."""
    args = ["hparams_search=random", *TINY, JOURNAL]
    sweep = run_sweep(tmp_path / "sweep", *args, "hydra.sweeper.n_trials=1").ok()
    journal = sweep.dir / "optuna.journal"
    before, records = snapshot(sweep.dir), journal.read_bytes()

    journal.write_bytes(records + b"{not json\n")
    bad_line = records.count(b"\n") + 1
    again = run_sweep(sweep.dir, *args, "hydra.sweeper.n_trials=2")
    (line,) = again.result.stderr.strip().splitlines()
    assert line == (
        f"error: hydra.sweeper.storage='journal:{journal}': line {bad_line} of {journal} is not an Optuna journal "
        f"record (another file, or a write cut short by a full disk): restore it from a copy, or keep the study in "
        f"another file"
    )
    assert journal.read_bytes() == records + b"{not json\n" and snapshot(sweep.dir) == before

    journal.write_bytes(records)
    limit = len(records)  # bytes: no file may grow past the journal's size
    full = subprocess.run(
        command(sweep.dir, *args, "hydra.sweeper.n_trials=2"), cwd=ROOT, env=ENV, capture_output=True, text=True,
        timeout=300, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )  # fmt: skip
    (line,) = full.stderr.strip().splitlines()
    assert line == (
        f"error: hydra.sweeper.storage='journal:{journal}' refused a write ([Errno 27] File too large): make it "
        f"writable (a read-only file, a full disk) and run the command again; it resumes"
    )
    assert journal.read_bytes() == records and snapshot(sweep.dir) == before
    resumed = run_sweep(sweep.dir, *args, "hydra.sweeper.n_trials=2").ok()  # once there is room: it resumes
    assert [trial.state for trial in resumed.trials()] == [TrialState.COMPLETE] * 2


@pytest.mark.slow
def test_a_storage_that_refuses_writes_ends_the_sweep_in_one_line_and_changes_nothing(tmp_path):
    """A read-only optuna.db (here SQLite's read-only mode, which binds root too): Optuna's own message blames
    "invalid data, e.g. exceeding max length"; ours names the storage and SQLite's reason."""
    args = ["hparams_search=random", *TINY, "hydra.sweeper.n_trials=1"]
    sweep = run_sweep(tmp_path / "sweep", *args).ok()
    before, database = snapshot(sweep.dir), (sweep.dir / "optuna.db").read_bytes()
    read_only = f"sqlite:///file:{sweep.dir / 'optuna.db'}?mode=ro&uri=true"
    again = run_sweep(sweep.dir, *args[:-1], "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage='{read_only}'")
    assert again.result.returncode != 0
    (line,) = again.result.stderr.strip().splitlines()
    assert line == (
        f"error: hydra.sweeper.storage='{read_only}' refused a write ((sqlite3.OperationalError) attempt to write a "
        f"readonly database): make it writable (a read-only file, a full disk) and run the command again; it resumes"
    )
    assert snapshot(sweep.dir) == before and (sweep.dir / "optuna.db").read_bytes() == database


FIXTURE_2_10 = Path(__file__).parent / "fixtures" / "sweep-optuna-2.10.1"  # its MADE_BY.md has the command


@pytest.mark.slow
def test_a_sweep_made_by_optuna_2_10_resumes_on_an_upgraded_database_keeping_the_old_file(tmp_path):
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(FIXTURE_2_10, sweep_dir)
    old = (sweep_dir / "optuna.db").read_bytes()
    before = [(row["number"], row["state"], row["value"]) for row in csv.DictReader((sweep_dir / "trials.csv").open())]
    args = ["hparams_search=tpe", "hydra/sweeper/pruner=median", "trainer.max_epochs=2", "+trainer.limit_train_batches=4",
            "logger=none"]  # fmt: skip
    sweep = run_sweep(sweep_dir, *args, "hydra.sweeper.n_trials=4").ok()
    [backup] = sweep_dir.glob("optuna.db.schema-*.bak")
    assert backup.read_bytes() == old and "Upgraded " in sweep.output
    assert "Warning" not in sweep.output  # Optuna 2's distribution names, read by Optuna 5
    assert (sweep_dir / "best.yaml").read_text().startswith("# Best trial")  # from the runs where they lie now
    trials = sweep.trials()
    assert [t.number for t in trials] == [0, 1, 2, 3] and trials[3].state == TrialState.COMPLETE
    assert [(str(t.number), t.state.name, f"{t.value}") for t in trials[:3]] == [
        (number, state, f"{float(value)}") for number, state, value in before
    ]


def test_an_old_study_outside_the_sweep_directory_is_refused_with_the_exact_upgrade_command(tmp_path):
    from lightning_tune.sweeping.study import upgrade_schema

    shutil.copy(FIXTURE_2_10 / "optuna.db", tmp_path / "shared.db")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with pytest.raises(ConfigError, match=rf"holds studies of an older Optuna \(schema v2\.6\.0\.a, .*upgrade it with "
                                          rf"`optuna storage upgrade --storage '{re.escape(url)}'`"):  # fmt: skip
        upgrade_schema(url, None)
    assert (tmp_path / "shared.db").read_bytes() == (FIXTURE_2_10 / "optuna.db").read_bytes()


# --- joblib workers end with their sweep ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_stopped_joblib_sweep_leaves_no_process_behind(tmp_path, stop):
    sweep_dir = tmp_path / "sweep"
    process, log = start_sweep(sweep_dir, *LONG, *JOBLIB, "hydra.sweeper.n_trials=2")
    left: list[int] = []
    try:
        for number in (0, 1):  # both workers are training
            wait_for(first_epoch_done(sweep_dir, number), f"trial {number}'s first epoch", process, log)
        assert len(session_processes(process.pid)) >= 3, "the driver and two workers"
        process.send_signal(stop)  # to the driver alone, as `kill` or a test's Ctrl-C does
        process.wait(timeout=60)
        deadline = time.monotonic() + 10
        while (left := session_processes(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"still running 10 s after the driver ended: {left}\n{log.read_text()[-2000:]}"
    finally:
        for pid in left or session_processes(process.pid):  # this test's own processes only
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.kill()


@pytest.mark.slow
def test_a_trial_whose_joblib_worker_dies_is_interrupted_and_its_configuration_retried_at_once(tmp_path):
    """kill -9 of a worker in trial 0's first epoch: loky's pool breaks, taking trial 1 with it. Both are
    interrupted, with the reason, their configurations run again in the same sweep, and it ends with
    n_trials finished, without a rerun."""
    sweep_dir = tmp_path / "sweep"
    process, log = start_sweep(sweep_dir, *LONG, *JOBLIB, "hydra.sweeper.n_trials=3")
    try:
        wait_for(first_epoch_done(sweep_dir, 0), "trial 0's first epoch", process, log)
        (worker,) = [pid for pid in session_processes(process.pid) if has_open_file_in(pid, sweep_dir / "0")]
        os.kill(worker, signal.SIGKILL)
        sweep = finished(process, log, sweep_dir).ok()
    finally:
        process.kill()
    trials = sweep.trials()
    died = [trial for trial in trials if trial.user_attrs.get(INTERRUPTED)]
    assert died and died[0].number == 0, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]
    for trial in died:
        assert trial.state == TrialState.FAIL
        assert trial.user_attrs["fail_reason"].startswith("interrupted: its worker process died ("), trial.user_attrs
        (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == trial.number]
        assert retry.params == trial.params and retry.state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE and not t.user_attrs.get(INTERRUPTED) for t in trials) == 3
    assert "Resuming" not in sweep.output  # all in the one run


# --- each trial's own time ----------------------------------------------------------------------
@pytest.mark.slow
def test_parallel_trials_record_each_its_own_duration(tmp_path):
    """Two trials run side by side, of 1 and 60 epochs: each one's duration_s is the time between the first and
    the last file of its own run (.hydra/config.yaml is written as its job starts, metrics.json as it ends)."""
    sweep = run_sweep(
        tmp_path / "sweep", "hparams_search=random", *ONLY_LR, "trainer=cpu", "logger=none", *JOBLIB,
        "+trainer.limit_train_batches=30", "trainer.max_epochs=choice(1,60)",
        enqueue({"trainer.max_epochs": "1"}, {"trainer.max_epochs": "60"}), "hydra.sweeper.n_trials=2",
    ).ok()  # fmt: skip
    durations = [float(row["duration_s"]) for row in sweep.rows()]
    for number, duration in enumerate(durations):
        run = sweep.dir / str(number)
        assert json.loads((run / "metrics.json").read_text())["epochs"] == [1, 60][number]
        own = (run / "metrics.json").stat().st_mtime - (run / ".hydra" / "config.yaml").stat().st_mtime
        assert own - 0.1 < duration < own + 1.0, (number, duration, own)
    assert durations[0] < durations[1] - 1, durations
    assert "Trial 0 (1 of 2 finished) COMPLETE" in sweep.output and f"in {durations[0]:.1f} s" in sweep.output


@pytest.mark.slow
@pytest.mark.parametrize("wait_for_batch", [False, True])
def test_a_parallel_slot_that_frees_gets_the_next_trial_at_once(tmp_path, wait_for_batch):
    """Two slots, a long trial first and four short ones: the short ones run one after another on the other
    slot while the long one runs. A sweep that waits for each batch's slowest trial (`wait_for_batch=true`)
    cannot start trial 2 before trial 0 ends. The schedule is read from the study (asked = started, told =
    ended), not a clock."""
    sweep = run_sweep(
        tmp_path / "sweep", "hparams_search=random", *ONLY_LR, "trainer=cpu", "logger=none", *JOBLIB,
        "+trainer.limit_train_batches=30", "trainer.max_epochs=choice(1,80)",
        f"hydra.sweeper.wait_for_batch={wait_for_batch}", enqueue({"trainer.max_epochs": "80"}, *[{"trainer.max_epochs": "1"}] * 4), "hydra.sweeper.n_trials=5",
    ).ok()  # fmt: skip
    trials = sweep.trials()  # the long trial takes about twice the four short ones with their launches, here
    assert [trial.params["trainer.max_epochs"] for trial in trials] == [80, 1, 1, 1, 1]
    long, short = trials[0], trials[1:]
    schedule = [(t.number, t.datetime_start, t.datetime_complete) for t in trials]
    if wait_for_batch:  # batches (0, 1), (2, 3), (4): each starts once the one before has ended
        assert short[1].datetime_start >= long.datetime_complete, schedule
        assert short[3].datetime_start >= max(short[1].datetime_complete, short[2].datetime_complete), schedule
        return
    for earlier, later in zip(short, short[1:]):
        assert earlier.datetime_complete <= later.datetime_start, schedule  # one slot: one short trial after another
    assert short[-1].datetime_complete < long.datetime_complete, schedule  # all while the long one ran
