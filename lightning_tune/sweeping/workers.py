"""Workers: SLURM jobs that take trials from the study until it holds `n_trials` finished ones, whether or not
the command that submitted them still runs.

With `hydra.sweeper.workers=W` (and `launcher=slurm`), the sweep's command, the driver, submits W jobs, each
a `SweepWorker`: a loop that asks the study for a trial, runs it in its own process as a trial's SLURM job
would (requeue on preemption included), tells the study how it ended, and asks again. A worker stops asking
once every trial left is finished or taken, so no GPU idles while another worker runs the last trial. The
driver only watches: it logs each trial as it finishes and, once the workers have ended, writes the results
files. Killed, or detached (`hydra.sweeper.detach=true`), it loses nothing: the workers go on, the last one
to finish writes the results files, and the same command re-attaches, submitting workers only for trials
that none of the running ones will take.

A worker that dies (scancel, out of memory, its node lost) leaves its trial RUNNING. SLURM's queue says
that its job is gone, and whichever process looks next (each worker before it asks for a trial, the
driver while it watches or re-attaches) fails the trial as interrupted, with SLURM's state, and enqueues its
configuration again, once. A requeued worker stays in SLURM's queue (pending) and its trial is left to it:
it resumes that trial from its checkpoint, as a trial's own job does (`lightning_tune.requeue`).
"""

import fcntl
import logging
import math
import os
import threading
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import optuna
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log
from optuna.trial import TrialState

from lightning_tune.errors import ConfigError
from lightning_tune.slurm import cancel_job, ended_state, job_of_process, make_executor, queued_jobs, submit_array
from lightning_tune.sweeping.jobs import DURATION
from lightning_tune.sweeping.private_optuna import heartbeat, running_trial, stale_trial_numbers
from lightning_tune.sweeping.slots import Slots
from lightning_tune.sweeping.study import in_wal_mode, lock_holders, open_storage, storage_file
from lightning_tune.sweeping.sweeper import (
    INTERRUPTED,
    WORKER_JOB,
    SweepPlan,
    TuningSweeper,
    composition_failure,
    count_finished,
    unstarted,
    interrupt,
    not_run,
    point_key,
)

log = logging.getLogger(__name__)

WORKERS_ATTR = "worker_jobs"  # study user attr: the SLURM job ids of every worker the sweep has submitted
N_TRIALS_ATTR = "n_trials"  # study user attr: the budget the last command gave, which running workers follow
POLL_S = 2.0  # how often an attached driver reads the study
REAP_S = 10.0  # how often a worker, before it asks for a trial, looks for trials whose worker died
LOCK_POLL_S = 1.0  # how often the driver looks at who holds a SQLite study's lock


def live_workers(study: optuna.Study) -> list[str]:
    """The sweep's workers that SLURM still holds, pending or running; all of them when squeue cannot say."""
    known = study.user_attrs.get(WORKERS_ATTR, [])
    if not known:
        return []
    queued = queued_jobs()
    return list(known) if queued is None else [job for job in known if job in queued]


@contextmanager
def exclusive(url: str) -> Iterator[None]:
    """One process at a time counts, asks and reaps, where the storage cannot tell two apart: SQLite, whose
    reads Optuna makes outside the write's transaction, so that two workers may both take one waiting trial
    (seen: a retried configuration run twice at once). A lock file beside the database (`flock`: one machine,
    where SQLite belongs). PostgreSQL locks the trial's row, and a journal orders every write: no lock."""
    database = storage_file(url) if url.startswith("sqlite") else None
    if database is None:
        yield
        return
    fd = os.open(database.with_name(f".{database.name}.ask.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def reap(
    study: optuna.Study, url: str, grace_s: float, retry: bool = True, cancelled: Optional[dict[str, str]] = None
) -> int:
    """Fail as interrupted, and (`retry`) enqueue again, the RUNNING trials whose worker is gone: its job has
    left SLURM's queue (for the reason in `cancelled`, when this process cancelled it), or has run for over
    `grace_s` while the trial's heartbeat is older than that (a hung process, a node cut off; the job is
    cancelled). Returns how many. The trials are read before the queue: a trial still running after its
    worker left the queue has lost its worker."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    orphans = [trial for trial in running if WORKER_JOB in trial.user_attrs]
    if not orphans or (queued := queued_jobs()) is None:  # a sweep without workers: no lock file either
        return 0
    stale = stale_trial_numbers(url, study.study_name, grace_s)
    if stale and len(orphans) > 1 and url.startswith("sqlite"):
        if all(trial.number in stale_trial_numbers(url, study.study_name, grace_s / 2) for trial in orphans):
            stale = set()  # no worker beat for grace_s / 2: SQLite took no write (a lock held: LockWatch), not all hung
    count = 0
    with exclusive(url):  # `interrupt` finds a trial that another process reaped meanwhile finished
        for trial in orphans:
            job = trial.user_attrs[WORKER_JOB]
            if job not in queued:
                reason = (cancelled or {}).get(job) or f"its worker, SLURM job {job}, ended ({ended_state(job)})"
                count += interrupt(study, url, trial, reason, retry)
            elif trial.number in stale and (queued[job] or 0) > grace_s:  # not a requeued job, waiting or restarting
                cancel_job(job)
                reason = f"no heartbeat for {grace_s} s from its worker, SLURM job {job}, which is cancelled"
                count += interrupt(study, url, trial, reason, retry)
    return count


def claim(study: optuna.Study, url: str, trial: optuna.Trial, plan: SweepPlan) -> bool:
    """Whether a worker runs the trial it has just asked for. Workers ask at once, and each counts the study's
    trials before its ask: two may take the last trial, or the same grid point; and a grid point one enqueues
    may be taken by another's ask, leaving it a trial with no point. Counted again after the ask, the later of
    two such trials (the higher number), or the trial with no point, is given up, failed as interrupted, unrun:
    it counts neither against n_trials nor as the grid point's run."""
    trials = study.get_trials(deepcopy=False)
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    over = -unstarted(trials, plan.n_trials)
    reason = "" if over <= 0 or trial.number not in running[-over:] else "another worker took the study's last trial"
    fixed = trials[trial.number].system_attrs.get("fixed_params")
    if plan.grid is not None and not reason and fixed is None:  # another's ask took the point this one enqueued
        reason = "another worker's ask took the grid point it enqueued"
    if plan.grid is not None and not reason:
        point = point_key(fixed)
        taken = [
            t for t in trials[: trial.number] if not t.user_attrs.get(INTERRUPTED) and t.state != TrialState.WAITING
        ]
        if any(point_key(t.params or t.system_attrs.get("fixed_params", {})) == point for t in taken):
            reason = f"another worker took the grid point {dict(point)}"
    if reason:
        interrupt(study, url, trials[trial.number], f"not run: {reason}", retry=False, once=False)
    return not reason


def submit(sweeper: TuningSweeper, study: optuna.Study, plan: SweepPlan, count: int) -> list[str]:
    """Submit `count` workers as one job array, with the launcher's resources for each; returns their job ids,
    also recorded in the study."""
    known = list(study.user_attrs.get(WORKERS_ATTR, []))
    executor = make_executor(sweeper.launcher.params)
    executor.update_parameters(slurm_array_parallelism=count)
    worker = SweepWorker(sweeper, plan, Singleton.get_state())
    jobs = submit_array(executor, worker, range(len(known), len(known) + count))
    ids = [str(job.job_id) for job in jobs]
    study.set_user_attr(WORKERS_ATTR, known + ids)
    log.info(
        "Workers: SLURM jobs %s take trials from the study; their logs are in %s", " ".join(ids), logs_dir(sweeper)
    )
    return ids


def logs_dir(sweeper: TuningSweeper) -> Path:
    """The folder of the workers' logs, one folder per job in it (submitit's `%j`)."""
    return Path(str(sweeper.launcher.params["submitit_folder"]).split("%j")[0])


def attach(sweeper: TuningSweeper, study: optuna.Study, plan: SweepPlan, alive: Sequence[str]) -> None:
    """The driver's part: submit the workers the study still needs, then, unless detached, log each trial as it
    finishes until the workers have ended, and write the results. Ctrl-C detaches: the workers go on."""
    alive = list(alive)
    study.set_user_attr(N_TRIALS_ATTR, plan.n_trials)  # running workers follow a budget changed on re-attach
    if alive:
        log.info("Re-attached to the sweep's workers: SLURM jobs %s", " ".join(alive))
    needed = min(sweeper.workers - len(alive), unstarted(study.trials, plan.n_trials))
    if needed > 0:
        alive += submit(sweeper, study, plan, needed)
    if alive and sweeper.detach:
        log.info("Detached: the workers go on without this command. Run the same command to re-attach and see "
                 "their progress; scancel %s stops them", " ".join(alive))  # fmt: skip
        return
    try:
        with LockWatch(sweeper.storage_url, sweeper.heartbeat_grace_s) as lock_watch:
            watch(sweeper, study, plan, alive, lock_watch)
    except KeyboardInterrupt:
        alive = live_workers(study)
        log.warning("Detached: the workers (SLURM jobs %s) go on. Run the same command to re-attach; scancel %s "
                    "stops them", " ".join(alive), " ".join(alive))  # fmt: skip
        raise
    finished = count_finished(study)
    sweeper.finish(study)
    if finished < plan.n_trials:
        if failure := sweeper.too_many_failed(study, plan.n_trials):
            raise ConfigError(failure)
        if plan.deadline is None or time.time() < plan.deadline:
            raise ConfigError(
                f"the workers ended with {finished} of {plan.n_trials} trials finished; their logs are in "
                f"{logs_dir(sweeper)}: run the same command to resume"
            )


def watch(
    sweeper: TuningSweeper, study: optuna.Study, plan: SweepPlan, alive: list[str], lock_watch: "LockWatch"
) -> None:
    """Log each trial as it finishes, and fail those of dead workers, until no worker is left. Workers that
    ended early, leaving trials to start (a retried trial), are replaced, as long as trials keep finishing."""
    shown = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    finished_at_submission = count_finished(study)
    while alive:
        lock_watch.workers = list(alive)
        time.sleep(POLL_S)
        alive = live_workers(study)  # first: a trial a worker finishes after this is logged in the next round
        reap(study, sweeper.storage_url, sweeper.heartbeat_grace_s, cancelled=lock_watch.cancelled)
        ended = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in shown]
        for trial in sorted(ended, key=lambda t: t.datetime_complete or t.datetime_start):
            shown.add(trial.number)
            sweeper.log_progress(study, trial, plan.n_trials, trial.user_attrs.get(DURATION))
        progressed = count_finished(study) > finished_at_submission
        if progressed and len(alive) < sweeper.workers and (needed := unstarted(study.trials, plan.n_trials)) > 0:
            if plan.deadline is None or time.time() < plan.deadline:
                alive += submit(sweeper, study, plan, min(sweeper.workers - len(alive), needed))
                finished_at_submission = count_finished(study)


class LockWatch:
    """A thread of the driver that cancels a worker whose process has held a SQLite study's lock for over
    `grace_s`: hung in the middle of a write (or stopped), it makes every other process wait, the driver's
    reads of the heartbeats included, so `reap` alone could not see it. `reap` then fails its trial with the
    reason kept in `cancelled` (job id: reason) and retries it. Only the processes of this machine are seen
    (`study.lock_holders`), which is where SQLite belongs; other storages have nothing to watch."""

    def __init__(self, url: str, grace_s: float) -> None:
        database = storage_file(url) if url.startswith("sqlite") else None
        self.database = None if database is None or in_wal_mode(database) else database
        self.grace_s = grace_s
        self.workers: list[str] = []  # the sweep's live workers, as the driver last read them
        self.cancelled: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="sqlite-lock-watch", daemon=True)

    def __enter__(self) -> "LockWatch":
        if self.database is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        assert self.database is not None
        since: dict[int, float] = {}  # holder pid: when it was first seen holding, at every look since
        while not self._stop.wait(LOCK_POLL_S):
            try:
                since = self._look(since)
            except Exception as error:  # noqa: BLE001 - the watch must outlive a slow squeue or scancel
                log.warning("Watching %s's lock: %s", self.database, error)

    def _look(self, since: dict[int, float]) -> dict[int, float]:
        """One look at the lock's holders. Cancels at most one worker, the longest holder (of holders seen first
        at the same look, a worker), and starts every clock again after it: a worker that waits to write on the
        hung one holds SQLite's lock too. A longest holder that is no worker (another program) is nobody's to
        cancel."""
        assert self.database is not None
        now = time.monotonic()
        since = {pid: since.get(pid, now) for pid in lock_holders(self.database)}
        overdue = {pid: job_of_process(pid) for pid, first in since.items() if now - first > self.grace_s}
        if not overdue:
            return since
        longest = min(since[pid] for pid in overdue)
        jobs = [job for pid, job in overdue.items() if since[pid] == longest]
        job = next((job for job in jobs if job in self.workers), None)
        if job is None or job in self.cancelled:
            return since
        self.cancelled[job] = (
            f"its worker, SLURM job {job}, held the study's database locked for over {self.grace_s} s (a hung "
            f"process), and is cancelled"
        )
        cancel_job(job)
        log.warning("SLURM job %s has held %s locked for over %s s: a hung worker, cancelled; its trial is "
                    "retried", job, self.database, self.grace_s)  # fmt: skip
        return {}


class SweepWorker:
    """A worker's SLURM job, pickled by submitit with the sweeper (its launcher and config) and the plan."""

    def __init__(self, sweeper: TuningSweeper, plan: SweepPlan, singleton_state: dict[Any, Any]) -> None:
        self.sweeper, self.plan, self.singleton_state = sweeper, plan, singleton_state
        self.current: Optional[tuple[int, list[str]]] = None  # the trial it runs: resumed after a requeue
        self.job_id, self.log, self.ran, self.reaped = "", "", 0, -math.inf

    def __call__(self, index: int) -> int:
        """Run trials until none is left to start; the worker that sees the study complete writes the results
        files. Returns the number of trials this worker ran."""
        import submitit

        environment = submitit.JobEnvironment()
        self.job_id, self.log = str(environment.job_id), str(environment.paths.stdout)
        Singleton.set_state(self.singleton_state)
        self._reset_logging()
        import lightning_tune.run  # noqa: F401 - torch and Lightning, before the first trial is asked, not in it
        sweeper, plan, storage = self.sweeper, self.plan, open_storage(self.sweeper.storage_url)
        study = optuna.load_study(study_name=sweeper.study_name, storage=storage)
        study.sampler = sweeper.sampler(plan.sweep_seed, len(study.trials), plan.grid is not None, worker=index)
        if self.current is not None:  # requeued in the middle of a trial: finish it, from its checkpoint
            number, overrides = self.current
            trial = running_trial(study, storage, number)
            sweeper.record(study, trial, self._launch(trial, overrides, resumed=True), len(plan.directions))
        url, grace_s = sweeper.storage_url, sweeper.heartbeat_grace_s
        failure = sweeper.run_trials(
            study, plan, Slots(1), self._launch, before_ask=lambda: self._before_ask(study, url, grace_s),
            claim=lambda trial: claim(study, url, trial, plan), lane=index % sweeper.workers,
            exclusive=lambda: exclusive(url),
        )  # fmt: skip
        if failure:
            log.error("Stopping: %s", failure)
        if count_finished(study) >= plan.n_trials:
            sweeper.finish(study)
        return self.ran

    def _before_ask(self, study: optuna.Study, url: str, grace_s: float) -> None:
        """The budget as the last command set it, and `reap`, at most every REAP_S: between short trials,
        SLURM's queue and the heartbeats were read for each (a few hundredths of a second a trial, on a 1 s
        trial)."""
        self.plan.n_trials = study.user_attrs.get(N_TRIALS_ATTR, self.plan.n_trials)
        if time.monotonic() - self.reaped >= REAP_S:
            reap(study, url, grace_s)
            self.reaped = time.monotonic()

    def _launch(self, trial: optuna.Trial, overrides: Sequence[str], resumed: bool = False) -> JobReturn:
        """Run the trial in this process, as the launcher runs a trial's own SLURM job."""
        path = self.sweeper.sweep_dir / str(trial.number)
        if not resumed:  # its row in trials.csv names the worker's job and log, even if the worker dies
            trial.set_user_attr(WORKER_JOB, self.job_id)
            trial.set_user_attr("log", self.log)
            if path.exists():
                return not_run(overrides, RuntimeError(f"not run: {path} already holds another run"))
        self.current = (trial.number, list(overrides))
        self.ran += 1
        sweeper = self.sweeper
        try:
            beat_s = max(1.0, sweeper.heartbeat_grace_s / 4)
            with heartbeat(open_storage(sweeper.storage_url), sweeper.study_name, trial.number, beat_s):
                ret = sweeper.launcher(
                    list(overrides), "hydra.sweep.dir", trial.number, f"job_id_for_{trial.number}", self.singleton_state
                )
        except Exception as error:  # noqa: BLE001 - raised before the trial ran: its overrides do not compose
            return composition_failure(overrides, error)
        finally:
            self.current = None
            self._reset_logging()
        return ret

    def _reset_logging(self) -> None:
        """The worker's own log lines to its job's log, not to the file of the last trial that Hydra logged to."""
        hydra = self.sweeper.config.hydra
        configure_log(hydra.hydra_logging, hydra.verbose)

    def checkpoint(self, index: int) -> Any:
        """submitit's requeue (preemption, time limit): the same worker, and the trial it was running."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, index)
