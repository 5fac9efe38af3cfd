"""Requeue on preemption or time limit, inside a trial's SLURM job.

submitit answers the requeue signal at once, wherever the process is: it pickles the same call
again, requeues the job and exits, so training would start again from scratch. Here the signal only
marks a request. At the next batch boundary the trial saves a checkpoint in its run directory, which
the requeued job shares (trial directories are named by trial number), and then hands over to
submitit. The requeued job resumes from that checkpoint: epoch, step, optimizer, scheduler and the
best checkpoint so far, as the same Optuna trial. Lightning's own SLURM auto-requeue is turned off:
it saves where a requeued Hydra run, with a new directory, would not look.
"""

import logging
import os
import signal
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterator, Optional

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment

from lightning_tune.errors import ConfigError

log = logging.getLogger(__name__)

REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # submitit's own (USR2 by default), and the common USR1
CHECKPOINT = Path("checkpoints") / "requeue.ckpt"  # in the trial's run directory

SignalHandler = Callable[[int, Optional[FrameType]], Any]


@dataclass
class RequeueRequest:
    """This process's requeue state: submitit's handler, and a signal received but not yet acted on."""

    requeue: Optional[SignalHandler] = None  # submitit's: pickle the call again, `scontrol requeue`, exit
    signum: Optional[int] = None


REQUEST = RequeueRequest()


def armed() -> bool:
    """Inside a trial's SLURM job, where a requeue signal is answered with a checkpoint."""
    return REQUEST.requeue is not None


def _mark(signum: int, frame: Optional[FrameType]) -> None:
    log.warning("Received %s: checkpointing at the next batch, then requeueing", signal.Signals(signum).name)
    REQUEST.signum = signum


@contextmanager
def requeue_on_signal() -> Iterator[None]:
    """Around a trial in its SLURM job: SIGUSR1/SIGUSR2 become a request for `RequeueCheckpoint`."""
    from submitit import JobEnvironment

    submitit_signal = signal.Signals[f"SIG{JobEnvironment.USR_SIG}"]  # USR2, or $SUBMITIT_PREEMPT_SIGNAL's
    submitit_handler = signal.getsignal(submitit_signal)
    if not callable(submitit_handler):  # not inside a submitit job: nothing could requeue it
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in REQUEUE_SIGNALS}
    REQUEST.requeue, REQUEST.signum = submitit_handler, None
    for signum in REQUEUE_SIGNALS:
        signal.signal(signum, _mark)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        REQUEST.requeue = REQUEST.signum = None


class RequeueCheckpoint(pl.Callback):
    """At a batch boundary after a requeue signal: save the trial's state, then let submitit requeue."""

    def __init__(self, path: Path, resumed: bool) -> None:
        self.path, self.resumed = path, resumed

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.resumed:
            log.info("Resumed from %s at epoch %d, step %d", self.path, trainer.current_epoch, trainer.global_step)
        self._act_on_request(trainer)  # a signal while the data and model were being built

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._act_on_request(trainer)

    def _act_on_request(self, trainer: pl.Trainer) -> None:
        pending = REQUEST.signum is not None
        if trainer.world_size > 1:  # every process saves together, whichever saw the signal
            pending = trainer.strategy.reduce_boolean_decision(pending, all=False)
        if not pending:
            return
        partial = self.path.with_suffix(".partial")  # a kill while saving leaves the last checkpoint whole
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        log.warning("Saved %s at epoch %d, step %d; requeueing", self.path, trainer.current_epoch, trainer.global_step)
        assert REQUEST.requeue is not None
        REQUEST.requeue(REQUEST.signum or signal.SIGUSR2, None)  # exits; raises when out of requeues


def requeue_callbacks(output_dir: Path) -> list[pl.Callback]:
    path = output_dir / CHECKPOINT
    return [RequeueCheckpoint(path, resumed=path.is_file())] if armed() else []


def resume_checkpoint(output_dir: Path) -> Optional[Path]:
    """The checkpoint a requeued trial resumes from, when this job is that trial's requeued run."""
    path = output_dir / CHECKPOINT
    return path if armed() and path.is_file() else None


def cluster_plugins(devices: Any) -> list[Any]:
    """Lightning's SLURM environment (ranks from srun) without its own requeue, which ours replaces.

    Lightning runs one process per SLURM task there, so `trainer.devices` must match the tasks.
    """
    if not SLURMEnvironment.detect():
        return []
    tasks = os.environ.get("SLURM_NTASKS_PER_NODE")
    count = None if isinstance(devices, str) else len(devices) if isinstance(devices, Sequence) else devices
    if tasks is not None and isinstance(count, int) and count > 0 and count != int(tasks):  # not "auto" or -1
        raise ConfigError(
            f"trainer.devices={devices} wants {count} processes, but this SLURM job runs {tasks} task(s) per node: "
            f"set launcher.tasks_per_node={count} (one task per device)"
        )
    return [SLURMEnvironment(auto_requeue=False)]
