"""Each trial's job, in whatever process runs it: its own wall time, and its end with the sweep.

Hydra calls its callbacks around every job in the job's own process: the sweep's (the basic launcher),
a joblib worker, a SLURM job (`hydra.core.utils.run_job`: `on_job_start` and `on_job_end`, the only two it
calls). The sweeper hands the launchers `TrialJobs`: Hydra's callbacks (`hydra.callbacks`, called as
before, through Hydra's own object) plus

- the job's wall time in its process, from its start to its end, returned with its `JobReturn` as
  `duration_s`: in a parallel batch each trial's own, not the batch's;
- in a process that the sweep's driver started itself (a joblib worker), a watchdog that ends it once the
  driver is gone. Killed (kill -9), a driver leaves its workers behind otherwise: they train on, then idle
  for minutes, holding their memory. (Ctrl-C ends them already: joblib terminates its workers then.)
  There, too, on a machine with several GPUs, the process's own GPU (`gpus.py`). (joblib's worker collects
  garbage after every task longer than a second, loky without psutil: with torch's and Lightning's objects set
  aside once imported, `lightning_tune.startup`, that walk is short.)
"""

import os
import threading
import time
from typing import Any, Optional

from hydra.core.utils import JobReturn
from hydra.types import TaskFunction
from omegaconf import DictConfig

from lightning_tune.sweeping.gpus import GpuSeats, own_gpu

DURATION = "duration_s"  # set on a JobReturn: the job's own wall time, in seconds
WATCH_INTERVAL_S = 0.5  # how often a worker looks for its driver
WATCHING = threading.Event()  # this process's watchdog runs


class TrialJobs:
    """Hydra's callbacks of the sweep, which time each job and tie a worker's life to the driver's."""

    def __init__(self, callbacks: Any, driver_pid: int) -> None:
        self.callbacks = callbacks  # `HydraContext.callbacks`: Hydra's own, which notifies the configured ones
        self.driver_pid = driver_pid
        self.gpu_seats: Optional[GpuSeats] = None  # set by a sweep whose parallel trials share several GPUs
        self.started: Optional[float] = None

    def in_worker(self) -> bool:
        """In a process that the sweep's driver started to run trials (a joblib worker)."""
        return os.getpid() != self.driver_pid and os.getppid() == self.driver_pid

    def on_job_start(self, config: DictConfig, *, task_function: TaskFunction, **kwargs: Any) -> None:
        if self.in_worker():
            end_with_parent()
            if self.gpu_seats is not None:
                own_gpu(self.gpu_seats)
        self.started = time.monotonic()
        self.callbacks.on_job_start(config=config, task_function=task_function, **kwargs)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.started is not None:
            setattr(job_return, DURATION, round(time.monotonic() - self.started, 3))
        self.callbacks.on_job_end(config=config, job_return=job_return, **kwargs)


def job_duration(ret: JobReturn) -> Optional[float]:
    """The job's own wall time; None where no process timed it (a job that SLURM ended)."""
    return getattr(ret, DURATION, None)


def end_with_parent() -> None:
    """Exit this process within WATCH_INTERVAL_S of its parent's end, whatever it is doing then.

    A thread that watches the parent's pid, not PR_SET_PDEATHSIG: that signal follows the parent's
    thread that started this process, and is Linux's only."""
    if WATCHING.is_set():
        return
    WATCHING.set()
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_INTERVAL_S)
        os._exit(1)  # the sweep is gone: no one reads this trial's result, and its study marks it interrupted

    threading.Thread(target=watch, name="end-with-sweep", daemon=True).start()
