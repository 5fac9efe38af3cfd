"""Workers (`hydra.sweeper.workers=W`): SLURM jobs that take trials from the study and outlive the driver.

First what needs no cluster: the refusals, and how a worker claims a trial and finds another's dead one;
then (marked `slurm`) on the real cluster that ../shared/slurm/start-local-cluster starts: a driver killed
mid-sweep, detach and re-attach, a cancelled worker, pruning and requeue under workers.
"""

import csv
import io
import os
import re
import sys
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import optuna
import pytest
from conftest import ROOT
from optuna.trial import TrialState
from sweeping import ENV, JOURNAL, PRUNING, TINY, Sweep, command, finished, run_sweep

from lightning_tune.sweeping import workers
from lightning_tune.sweeping.config import sweep_id
from lightning_tune.sweeping.private_optuna import heartbeat, stale_trial_numbers
from lightning_tune.sweeping.results import trials_csv
from lightning_tune.slurm import job_of_process
from lightning_tune.sweeping.study import SQLITE_LOCK_WAIT_S, lock_holders, open_storage, storage_file, storage_refused
from lightning_tune.sweeping.sweeper import INTERRUPTED, RETRY_OF, WORKER_JOB, SweepPlan, count_finished
from lightning_tune.sweeping.space import SearchSpace


# --- without a cluster ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["hydra.sweeper.workers=2"],
            "error: hydra.sweeper.workers=2 needs launcher=slurm: workers are SLURM jobs "
            "that outlive this command; on this machine, run trials in parallel with "
            "launcher=joblib launcher.n_jobs=2",
        ),
        (
            ["hydra.sweeper.detach=true"],
            "error: hydra.sweeper.detach=true needs workers to leave running: add "
            "hydra.sweeper.workers=<jobs> (with launcher=slurm)",
        ),
        (["hydra.sweeper.workers=-1"], "hydra.sweeper.workers=-1"),
        (["launcher=slurm", "hydra.sweeper.workers=2", "hydra.sweeper.wait_for_batch=true"],
         "error: hydra.sweeper.wait_for_batch=true does not apply to workers, which each ask for their next trial as "
         "they end one: drop one of the two"),
    ],
    ids=["workers-without-slurm", "detach-without-workers", "negative", "workers-waiting-for-a-batch"],
)
def test_workers_where_they_cannot_be_are_one_line_and_write_nothing(tmp_path, args, message):
    result = subprocess.run(command(tmp_path / "sweep", "hparams_search=random", *TINY, *args), cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "sweep").exists()


def test_workers_and_detach_keep_the_sweep_directory():
    """The same search with or without workers, detached or not, is the same sweep: it resumes, re-attaches."""
    search = ["hparams_search=tpe", "optimizer.lr=interval(1e-4,1e-1)"]
    assert sweep_id(search) == sweep_id([*search, "hydra.sweeper.workers=4", "hydra.sweeper.detach=true"])


def plan(n_trials: int, grid: Optional[list[dict[str, Any]]] = None) -> SweepPlan:
    return SweepPlan(space=SearchSpace({}, {}), objectives=["val/acc"], directions=["maximize"], sweep_seed=0,
                     grid=grid, n_trials=n_trials, deadline=None)  # fmt: skip


@pytest.fixture
def study(tmp_path) -> tuple[optuna.Study, str]:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    return optuna.create_study(study_name="lightning-tune", storage=url, direction="maximize"), url


def test_of_two_workers_that_take_the_last_trial_at_once_the_later_gives_it_up(study):
    study, url = study
    first = study.ask()
    first.suggest_float("x", 0, 1)
    second = study.ask()  # both asked with one trial left of n_trials=2 ...
    assert workers.claim(study, url, second, plan(n_trials=2))  # ... is fine: 2 running, 0 finished
    third = study.ask()  # asked by a worker that counted before the second's ask
    assert not workers.claim(study, url, third, plan(n_trials=2))
    given_up = study.trials[third.number]
    assert given_up.state == TrialState.FAIL and given_up.user_attrs[INTERRUPTED]
    assert given_up.user_attrs["fail_reason"] == "interrupted: not run: another worker took the study's last trial"
    study.tell(first, 0.5)
    study.tell(second, 0.6)
    assert count_finished(study) == 2  # the given-up trial counts for nothing


def test_a_trial_that_ends_while_a_worker_counts_is_counted_once(study, monkeypatch):
    """Trial 2 ends, told by another worker, just after this worker reads the study to claim trial 4: counted
    both running and finished, it would make trial 4 one too many (seen in CI: a sweep of 5 that ran 6)."""
    study, url = study
    trials = [study.ask() for _ in range(5)]
    for trial in (trials[0], trials[1], trials[3]):
        study.tell(trial, 0.5)  # 3 finished; 2 and 4 running: n_trials=5 is exactly taken
    read = study.get_trials

    def read_then_trial_2_ends(*args: Any, **kwargs: Any) -> list:
        snapshot = read(*args, **kwargs)
        if read(deepcopy=False)[2].state == TrialState.RUNNING:
            study.tell(trials[2], 0.7)
        return snapshot

    monkeypatch.setattr(study, "get_trials", read_then_trial_2_ends)
    assert workers.claim(study, url, trials[4], plan(n_trials=5))


def test_of_two_workers_that_take_the_same_grid_point_the_later_gives_it_up(study):
    study, url = study
    point = {"x": 1.0}
    grid = [point, {"x": 2.0}]
    for _ in range(2):  # two workers that each found the point unvisited and enqueued it
        study.enqueue_trial(point)
    first, second = study.ask(), study.ask()
    assert workers.claim(study, url, first, plan(n_trials=2, grid=grid))
    assert not workers.claim(study, url, second, plan(n_trials=2, grid=grid))
    assert study.trials[second.number].user_attrs["fail_reason"] == (
        "interrupted: not run: another worker took the grid point {'x': 1.0}"
    )


def test_a_grid_trial_whose_enqueued_point_another_worker_took_is_given_up(study):
    study, url = study
    grid = [{"x": 1.0}, {"x": 2.0}]
    study.enqueue_trial(grid[0])  # worker A enqueues its point ...
    taken_by_b = study.ask()  # ... which worker B's ask takes ...
    left_to_a = study.ask()  # ... so that A's ask makes a trial that no point fixes
    assert workers.claim(study, url, taken_by_b, plan(n_trials=2, grid=grid))
    assert not workers.claim(study, url, left_to_a, plan(n_trials=2, grid=grid))
    assert study.trials[left_to_a.number].user_attrs["fail_reason"] == (
        "interrupted: not run: another worker's ask took the grid point it enqueued"
    )


def test_on_sqlite_one_process_at_a_time_asks_and_reaps(tmp_path):
    """Optuna reads a waiting trial's state outside the transaction that takes it, on SQLite: two workers once
    took one retried trial together. A lock beside the database keeps their asks apart."""
    import fcntl
    import os

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with workers.exclusive(url):
        fd = os.open(tmp_path / ".optuna.db.ask.lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):  # another process's (another open file's) lock waits
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the block ends
    os.close(fd)
    with workers.exclusive(f"journal:{tmp_path / 'optuna.journal'}"):  # a journal orders its writes itself
        assert not (tmp_path / ".optuna.journal.ask.lock").exists()


def test_running_workers_follow_the_budget_the_last_command_gave(study, monkeypatch):
    study, url = study
    worker = workers.SweepWorker(sweeper=None, plan=plan(n_trials=10), singleton_state={})  # type: ignore[arg-type]
    study.set_user_attr(workers.N_TRIALS_ATTR, 4)  # the same command again, with hydra.sweeper.n_trials=4
    monkeypatch.setattr(workers, "reap", lambda *args: 0)
    worker._before_ask(study, url, grace_s=60)
    assert worker.plan.n_trials == 4


def test_a_worker_s_trial_names_its_worker_s_job_in_trials_csv(study):
    study, _ = study
    trial = study.ask()
    trial.set_user_attr(WORKER_JOB, "12_1")
    study.tell(trial, state=TrialState.FAIL)
    (row,) = csv.DictReader(io.StringIO(trials_csv(study.trials, ["val/acc"], Path("."))))
    assert row["job_id"] == "12_1"


def test_a_trial_whose_worker_left_the_queue_is_interrupted_and_retried_once(study, monkeypatch):
    study, url = study
    jobs = {"7_0": "live", "7_1": "gone", "7_2": "gone"}
    trials = {}
    for job in jobs:
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr(WORKER_JOB, job)
        trials[job] = trial
    trials["7_2"].set_user_attr(RETRY_OF, 0)  # a retry whose worker died too: it fails for good
    monkeypatch.setattr(workers, "ended_state", lambda job: "state CANCELLED by 0")
    monkeypatch.setattr(workers, "queued_jobs", lambda: None)  # squeue cannot say: nothing is taken for dead
    assert workers.reap(study, url, grace_s=60) == 0
    monkeypatch.setattr(workers, "queued_jobs", lambda: {"7_0": 500.0, "99": None})
    assert workers.reap(study, url, grace_s=60) == 2
    live, gone, gone_again, retry = study.get_trials(deepcopy=False)
    assert live.state == TrialState.RUNNING
    assert gone.state == TrialState.FAIL and gone.user_attrs[INTERRUPTED]
    assert gone.user_attrs["fail_reason"] == (
        "interrupted: its worker, SLURM job 7_1, ended (state CANCELLED by 0); its configuration is retried"
    )
    assert retry.state == TrialState.WAITING and retry.user_attrs[RETRY_OF] == gone.number
    assert gone_again.state == TrialState.FAIL and INTERRUPTED not in gone_again.user_attrs
    assert gone_again.user_attrs["fail_reason"] == "its worker, SLURM job 7_2, ended (state CANCELLED by 0)"
    assert workers.reap(study, url, grace_s=60) == 0  # reaped once


def test_a_trial_whose_heartbeat_stopped_while_its_worker_runs_is_retried_and_the_worker_cancelled(study, monkeypatch):
    study, url = study
    storage = open_storage(url)
    running_s = {"8_0": 1000.0, "8_1": 0.5, "8_2": None, "8_3": 1000.0}  # 8_1 restarted after a requeue, 8_2 waits
    for job in running_s:
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr(WORKER_JOB, job)
        with heartbeat(storage, study.study_name, trial.number, interval_s=60):
            pass  # one beat
    cancelled = []
    monkeypatch.setattr(workers, "queued_jobs", lambda: running_s)
    monkeypatch.setattr(workers, "cancel_job", cancelled.append)
    assert workers.reap(study, url, grace_s=1) == 0  # every beat is recent
    time.sleep(2.5)  # SQLite's clock counts whole seconds
    with heartbeat(storage, study.study_name, 3, interval_s=60):  # 8_3's trial beats on
        assert workers.reap(study, url, grace_s=1) == 1
    assert cancelled == ["8_0"]
    hung, *kept, retry = study.get_trials(deepcopy=False)
    assert hung.state == TrialState.FAIL and hung.user_attrs["fail_reason"] == (
        "interrupted: no heartbeat for 1 s from its worker, SLURM job 8_0, which is cancelled; its configuration is "
        "retried"
    )
    assert [t.state for t in kept] == [TrialState.RUNNING] * 3 and retry.user_attrs[RETRY_OF] == 0


def test_on_sqlite_workers_whose_heartbeats_all_stopped_are_not_taken_for_hung(study, monkeypatch):
    """A SQLite lock held by a hung worker stops every worker's heartbeat write: that is LockWatch's to end, not a
    reason to cancel them all. One trial alone is still judged by its heartbeat."""
    study, url = study
    storage = open_storage(url)
    for job in ("8_0", "8_1"):
        trial = study.ask()
        trial.set_user_attr(WORKER_JOB, job)
        with heartbeat(storage, study.study_name, trial.number, interval_s=60):
            pass  # one beat
    cancelled = []
    monkeypatch.setattr(workers, "queued_jobs", lambda: {"8_0": 1000.0, "8_1": 1000.0})
    monkeypatch.setattr(workers, "cancel_job", cancelled.append)
    time.sleep(2.5)  # SQLite's clock counts whole seconds
    assert workers.reap(study, url, grace_s=1) == 0 and cancelled == []
    study.tell(1, state=TrialState.FAIL)
    assert workers.reap(study, url, grace_s=1) == 1 and cancelled == ["8_0"]


def test_a_journal_has_no_heartbeat_and_its_worker_s_queue_state_decides(tmp_path, monkeypatch):
    url = f"journal:{tmp_path / 'optuna.journal'}"
    study = optuna.create_study(study_name="lightning-tune", storage=open_storage(url))
    trial = study.ask()
    trial.set_user_attr(WORKER_JOB, "9_0")
    with heartbeat(open_storage(url), study.study_name, trial.number, interval_s=60):
        assert stale_trial_numbers(url, study.study_name, 1) == set()
    monkeypatch.setattr(workers, "queued_jobs", lambda: {"9_0": 1000.0})
    assert workers.reap(study, url, grace_s=1) == 0
    monkeypatch.setattr(workers, "queued_jobs", lambda: {})
    monkeypatch.setattr(workers, "ended_state", lambda job: "state OUT_OF_MEMORY")
    assert workers.reap(study, url, grace_s=1) == 1
    assert (
        study.trials[0].user_attrs["fail_reason"].startswith("interrupted: its worker, SLURM job 9_0, ended (state OUT")
    )


HOLD_THE_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute(sys.argv[2])
connection.execute("SELECT count(*) FROM trials").fetchall()
print("held", flush=True)
time.sleep(600)
"""


def hold_the_lock(database: Path, begin: str, **slurm: str) -> subprocess.Popen:
    """A process in a SLURM job (its environment says so) that holds SQLite's lock on `database` (`BEGIN IMMEDIATE`:
    the write lock; `BEGIN`: a read lock, for as long as its read transaction is open) until it is killed."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")} | slurm
    process = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(database), begin], env=env,
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    return process


def test_a_worker_that_holds_the_sqlite_lock_past_the_grace_is_cancelled_and_its_trial_retried(study, monkeypatch):
    """A worker hung in the middle of a write keeps every process from the study, the heartbeats too: the driver
    sees who holds the database's lock, and cancels the worker, not a process of another job."""
    study, url = study
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr(WORKER_JOB, "5_1")
    database = storage_file(url)
    assert database is not None
    hung = hold_the_lock(database, "BEGIN IMMEDIATE", SLURM_ARRAY_JOB_ID="5", SLURM_ARRAY_TASK_ID="1", SLURM_JOB_ID="9")
    other = hold_the_lock(database, "BEGIN", SLURM_JOB_ID="6")  # a reader of another job, not a worker
    try:
        assert {hung.pid, other.pid} <= lock_holders(database)
        assert (job_of_process(hung.pid), job_of_process(other.pid)) == ("5_1", "6")
        cancelled = []
        monkeypatch.setattr(workers, "LOCK_POLL_S", 0.1)
        monkeypatch.setattr(workers, "cancel_job", lambda job: (cancelled.append(job), hung.kill()))  # as SLURM does
        with workers.LockWatch(url, grace_s=1) as lock_watch:
            lock_watch.workers = ["5_1", "5_2", "6_0"]
            time.sleep(0.5)
            assert cancelled == []  # not before the grace
            deadline = time.monotonic() + 10
            while not cancelled and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.5)  # the other holder, the longest now, is no worker: nothing more is cancelled
        assert cancelled == ["5_1"] and other.poll() is None
    finally:
        for process in (hung, other):
            process.kill()
            process.wait()
    assert hung.pid not in lock_holders(database)
    monkeypatch.setattr(workers, "queued_jobs", lambda: {})
    assert workers.reap(study, url, grace_s=1, cancelled=lock_watch.cancelled) == 1
    assert study.trials[0].user_attrs["fail_reason"] == (
        "interrupted: its worker, SLURM job 5_1, held the study's database locked for over 1 s (a hung process), "
        "and is cancelled; its configuration is retried"
    )


def test_a_sqlite_study_locked_too_long_is_one_line_naming_the_lock(study):
    study, url = study
    database = storage_file(url)
    assert database is not None
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 0.1}})
    holder = hold_the_lock(database, "BEGIN EXCLUSIVE")
    try:
        with pytest.raises(optuna.exceptions.StorageInternalError) as refused:
            storage.set_study_user_attr(storage.get_study_id_from_name(study.study_name), "x", 1)
    finally:
        holder.kill()
        holder.wait()
    assert str(storage_refused(url, refused.value)) == (
        f"hydra.sweeper.storage='{url}' refused a write ((sqlite3.OperationalError) database is locked): it could "
        f"not get its lock in {SQLITE_LOCK_WAIT_S} s (another process holds it: a hung one, or a program that holds "
        f"it open in a transaction; or the file system has no working locks, as NFS may not): end that process and "
        f"run the command again; it resumes"
    )


def test_a_database_in_wal_mode_is_not_watched(tmp_path):
    """In WAL mode every open connection holds a read lock: the holders would all look hung."""
    import sqlite3

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="lightning-tune", storage=url)
    assert workers.LockWatch(url, grace_s=1).database == tmp_path / "optuna.db"
    connection = sqlite3.connect(tmp_path / "optuna.db")
    assert connection.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    connection.close()
    assert workers.LockWatch(url, grace_s=1).database is None


def test_lock_holders_are_none_for_a_file_without_locks_or_no_file(tmp_path):
    (tmp_path / "free.db").write_bytes(b"")
    assert lock_holders(tmp_path / "free.db") == set() == lock_holders(tmp_path / "missing.db")
    assert job_of_process(os.getpid()) is None or "SLURM_JOB_ID" in os.environ


# --- on the real cluster ------------------------------------------------------------------------------
def on_workers(partition: str, *args: str, workers: int = 2) -> list[str]:
    """Workers of one CPU and 1 GB each: two fit the 2-CPU test node at once."""
    return ["launcher=slurm", f"launcher.partition={partition}", "launcher.cpus_per_task=1", "launcher.mem_gb=1",
            "launcher.timeout_min=10", f"hydra.sweeper.workers={workers}", *args]  # fmt: skip


# trials of 2 epochs of 30 batches: a few seconds each, long enough to act during the sweep
MEDIUM = ["hparams_search=random", "trainer=cpu", "logger=csv", "trainer.max_epochs=2",
          "+trainer.limit_train_batches=30", "data.batch_size=16"]  # fmt: skip


def wait_for(condition: Any, what: str, log: Path, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.25)
    return value


def queued(job_ids: list[str]) -> set[str]:
    out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i"], capture_output=True, text=True).stdout
    return set(job_ids) & set(out.split())


def start(sweep_dir: Path, args: list[str]) -> tuple[subprocess.Popen, Path, list[str]]:
    """The sweep's command in the background, once it has submitted its workers: its process, log and job ids."""
    log = sweep_dir.with_suffix(".log")
    with open(log, "w") as output:
        process = subprocess.Popen(
            command(sweep_dir, *args), cwd=ROOT, env=ENV, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        jobs = wait_for(lambda: re.search(r"Workers: SLURM jobs ([\d_ ]+) take", log.read_text()), "workers", log)
    except BaseException:
        process.kill()
        raise
    return process, log, jobs[1].split()


def stop_holding_the_lock(pids: list[int], database: Path, timeout: float = 60) -> None:
    """SIGSTOP `pids` at a moment one of them holds SQLite's lock on `database`, and leave them stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if holders := lock_holders(database) & set(pids):
            for pid in sorted(pids, key=lambda pid: pid not in holders):  # the holder first
                signal_if_alive(pid, signal.SIGSTOP)
            if lock_holders(database) & set(pids):
                return
            for pid in pids:
                signal_if_alive(pid, signal.SIGCONT)
        time.sleep(0.0005)  # the locks last milliseconds: look often, without taking a core
    pytest.fail(f"none of the processes {pids} held a lock on {database} in {timeout} s")


def signal_if_alive(pid: int, signal_number: int) -> None:
    try:
        os.kill(pid, signal_number)
    except ProcessLookupError:
        pass


def results_of(sweep_dir: Path) -> None:
    for name in ("trials.csv", "best.yaml", "optimization_results.yaml", "report.md"):
        assert (sweep_dir / name).is_file(), name


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("storage", [[], [JOURNAL]], ids=["sqlite", "journal"])
def test_workers_finish_the_study_after_the_driver_is_killed_and_the_same_command_adds_nothing(
    partition, tmp_path, storage
):
    sweep_dir, args = tmp_path / "sweep", on_workers(partition, *MEDIUM, "hydra.sweeper.n_trials=5", *storage)
    process, log, jobs = start(sweep_dir, args)
    process.kill()  # kill -9, once it has submitted the workers
    process.wait()
    assert queued(jobs) and not (sweep_dir / "report.md").exists()  # the workers go on; the results are to come
    wait_for(lambda: not queued(jobs), "the workers' end", log)
    sweep = Sweep(sweep_dir, subprocess.CompletedProcess([], 0, "", ""))
    assert count_finished(sweep.study()) == 5
    assert [trial.state for trial in sweep.trials()] == [TrialState.COMPLETE] * 5  # none lost, none twice
    results_of(sweep_dir)  # written by the last worker
    rows = sweep.rows()
    assert len(rows) == 5 and {row["job_id"] for row in rows} == set(jobs)  # both workers took trials
    assert all(row["log"].endswith("_log.out") for row in rows)

    again = run_sweep(sweep_dir, *args).ok()  # re-attaches: the study is complete, so no worker is submitted
    assert "Workers: SLURM jobs" not in again.output and "5 of 5 trial(s) finished" in again.output
    assert len(again.trials()) == 5


@pytest.mark.slurm
@pytest.mark.slow
def test_a_detached_sweep_refuses_a_command_without_workers_and_the_same_command_re_attaches(partition, tmp_path):
    sweep_dir, args = tmp_path / "sweep", on_workers(partition, *MEDIUM, "hydra.sweeper.n_trials=4")
    detached = run_sweep(sweep_dir, *args, "hydra.sweeper.detach=true").ok()
    jobs = re.search(r"Workers: SLURM jobs ([\d_ ]+) take", detached.output)[1].split()
    assert f"Detached: the workers go on without this command. Run the same command to re-attach and see their " \
           f"progress; scancel {' '.join(jobs)} stops them" in detached.output  # fmt: skip
    assert queued(jobs)  # it returned at once: its workers run

    without = run_sweep(sweep_dir, *[a for a in args if not a.startswith("hydra.sweeper.workers")])
    assert without.result.returncode != 0 and without.result.stderr.strip() == (
        f"error: this sweep's workers (SLURM jobs {' '.join(jobs)}) are running: add hydra.sweeper.workers=<jobs> to "
        f"re-attach to them, or stop them first (scancel {' '.join(jobs)})"
    )
    attached = run_sweep(sweep_dir, *args).ok()
    assert f"Re-attached to the sweep's workers: SLURM jobs {' '.join(jobs)}" in attached.output
    assert "Workers: SLURM jobs" not in attached.output  # none added: the running ones take what is left
    assert "Trial 3 (" in attached.output and "Best value" in attached.output
    assert [trial.state for trial in attached.trials()] == [TrialState.COMPLETE] * 4
    results_of(sweep_dir)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_cancelled_worker_s_trial_is_interrupted_and_retried_by_another_worker(partition, tmp_path):
    long_trials = ["trainer.max_epochs=6", "hydra.sweeper.n_trials=3"]
    sweep_dir = tmp_path / "sweep"
    process, log, jobs = start(sweep_dir, on_workers(partition, *MEDIUM, *long_trials))
    try:
        wait_for((sweep_dir / "0" / "checkpoints" / "best.ckpt").is_file, "trial 0's first epoch", log)
        study = Sweep(sweep_dir, subprocess.CompletedProcess([], 0, "", "")).study()
        victim = study.trials[0].user_attrs[WORKER_JOB]
        subprocess.run(["scancel", victim], check=True)
    finally:
        sweep = finished(process, log, sweep_dir)
    sweep.ok()
    cancelled, *others = sweep.trials()
    assert cancelled.state == TrialState.FAIL and cancelled.user_attrs[INTERRUPTED]
    assert cancelled.user_attrs["fail_reason"] == (
        f"interrupted: its worker, SLURM job {victim}, ended (state CANCELLED by 0); its configuration is retried"
    )
    (retried,) = [trial for trial in others if trial.user_attrs.get(RETRY_OF) == 0]
    assert retried.params == cancelled.params and retried.state == TrialState.COMPLETE
    # the survivor, or the worker the driver submits in the victim's place once a trial has finished: either
    # may be free first
    submitted = sweep.study().user_attrs[workers.WORKERS_ATTR]
    assert set(jobs) <= set(submitted) and retried.user_attrs[WORKER_JOB] in set(submitted) - {victim}
    assert count_finished(sweep.study()) == 3 and [t.state for t in others] == [TrialState.COMPLETE] * 3


@pytest.mark.slurm
@pytest.mark.slow
def test_pruning_works_across_workers(partition, tmp_path):
    sweep = run_sweep(
        tmp_path / "sweep",
        *on_workers(partition, *PRUNING, "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1"),
    ).ok()
    trials = sweep.trials()
    # A worker takes trial 2 once its good trial is complete; the other good one may still run, or not have
    # started: one startup trial prunes the bad ones whichever ends first (two made the test depend on timing).
    # A good trial may be pruned by the other, never both.
    assert TrialState.COMPLETE in (trials[0].state, trials[1].state)
    assert [trial.state for trial in trials[2:]] == [TrialState.PRUNED] * 2
    assert all(max(trial.intermediate_values) < 2 for trial in trials[2:])  # stopped inside their workers


@pytest.mark.slurm
@pytest.mark.slow
def test_a_preempted_worker_is_requeued_and_resumes_its_trial_from_its_checkpoint(partition, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = on_workers(partition, *MEDIUM, "trainer.max_epochs=6", "hydra.sweeper.n_trials=2", workers=1)
    process, log, (job,) = start(sweep_dir, args)
    try:
        wait_for((sweep_dir / "0" / "checkpoints" / "best.ckpt").is_file, "trial 0's first epoch", log)
        subprocess.run(["scancel", "--signal=USR1", job], check=True)
        # released in 2 s rather than after CredExpire: see test_slurm's requeue test
        state = lambda: (
            subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True).stdout
        )  # noqa: E731
        wait_for(lambda: "BeginTime" in state(), "requeue", log)
        subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now+2"], check=True)
    finally:
        sweep = finished(process, log, sweep_dir)
    sweep.ok()
    first, second = sweep.trials()
    assert first.state == second.state == TrialState.COMPLETE
    assert first.user_attrs[WORKER_JOB] == second.user_attrs[WORKER_JOB] == job  # the same worker, requeued
    run_log = (sweep_dir / "0" / "train.log").read_text()
    saved = re.search(r"Saved \S+requeue.ckpt at epoch (\d+), step (\d+); requeueing", run_log)
    resumed = re.search(r"Resumed from \S+requeue.ckpt at epoch (\d+), step (\d+)", run_log)
    assert saved and resumed and resumed[2] == saved[2], run_log
    assert (sweep_dir / "best.yaml").is_file()


@pytest.mark.slurm
@pytest.mark.slow
def test_ctrl_c_detaches_the_driver_and_leaves_the_workers_running(partition, tmp_path):
    sweep_dir = tmp_path / "sweep"
    process, log, jobs = start(
        sweep_dir, on_workers(partition, *MEDIUM, "trainer.max_epochs=6", "hydra.sweeper.n_trials=2")
    )
    try:
        process.send_signal(signal.SIGINT)
        interrupted = finished(process, log, sweep_dir, timeout=60)
        assert interrupted.result.returncode != 0
        assert f"Detached: the workers (SLURM jobs {' '.join(jobs)}) go on. Run the same command to re-attach; " \
               f"scancel {' '.join(jobs)} stops them" in interrupted.output  # fmt: skip
        assert queued(jobs) == set(jobs)
    finally:
        subprocess.run(["scancel", *jobs], check=False)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_hung_worker_without_heartbeat_is_cancelled_and_its_trial_retried(partition, tmp_path):
    """A worker whose process stops (SIGSTOP: as a hung one, or one on a node cut off, looks) while SLURM still
    runs its job, at a moment it holds the study's SQLite lock (a heartbeat's write, a read), as a process hung in
    the middle of one would: every other process waits on it. After the grace period the job is cancelled (its
    heartbeat is stale, or it has held the lock too long) and the trial retried by the other worker."""
    sweep_dir = tmp_path / "sweep"
    args = on_workers(partition, *MEDIUM, "trainer.max_epochs=10", "hydra.sweeper.n_trials=3",
                      "hydra.sweeper.heartbeat_grace_s=6")  # fmt: skip
    process, log, jobs = start(sweep_dir, args)
    try:
        wait_for((sweep_dir / "0" / "checkpoints" / "best.ckpt").is_file, "trial 0's first epoch", log)
        study = Sweep(sweep_dir, subprocess.CompletedProcess([], 0, "", "")).study()
        victim = study.trials[0].user_attrs[WORKER_JOB]
        raw_id = subprocess.run(["squeue", "-h", "-j", victim, "-o", "%A"], capture_output=True, text=True).stdout
        pids = subprocess.run(
            ["scontrol", "listpids", raw_id.strip()], capture_output=True, text=True, check=True
        ).stdout
        stop_holding_the_lock([int(pid) for pid in re.findall(r"^(\d+)\s", pids, flags=re.MULTILINE)],
                              sweep_dir / "optuna.db")  # fmt: skip
    finally:
        sweep = finished(process, log, sweep_dir)
    sweep.ok()
    # trial 0, or the one its worker took next if 0 had ended before the stop
    (hung,) = [trial for trial in sweep.trials(TrialState.FAIL) if trial.user_attrs.get(WORKER_JOB) == victim]
    others = [trial for trial in sweep.trials() if trial.number != hung.number]
    assert re.fullmatch(
        rf"interrupted: (no heartbeat for 6 s from its worker, SLURM job {victim}, which is cancelled|its worker, "
        rf"SLURM job {victim}, held the study's database locked for over 6 s \(a hung process\), and is cancelled|its "
        rf"worker, SLURM job {victim}, ended \(state CANCELLED by \d+\)); "
        rf"its configuration is retried", hung.user_attrs["fail_reason"]
    ), hung.user_attrs["fail_reason"]
    (retried,) = [trial for trial in others if trial.user_attrs.get(RETRY_OF) == hung.number]
    assert retried.params == hung.params and retried.user_attrs[WORKER_JOB] != victim
    assert count_finished(sweep.study()) == 3
    wait_for(lambda: not queued([victim]), "the hung worker's cancellation", log, timeout=120)


@pytest.mark.slurm
@pytest.mark.slow
def test_workers_run_every_grid_point_once(partition, tmp_path):
    sweep = run_sweep(tmp_path / "sweep", *on_workers(partition, "hparams_search=grid", *TINY), "seed=5").ok()
    complete = sweep.trials(TrialState.COMPLETE)
    points = {tuple(sorted(trial.params.items())) for trial in complete}
    assert len(complete) == len(points) == 32  # the whole grid, no point twice
    given_up = [t for t in sweep.trials(TrialState.FAIL) if t.user_attrs["fail_reason"].startswith("interrupted: not run")]
    assert len(sweep.trials()) == 32 + len(given_up)
