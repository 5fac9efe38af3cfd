"""One sweep per sweep directory, and no run written over: what keeps two commands from mixing their trials.

The sweep's driver, the `python train.py -m ...` process, holds an exclusive lock on `.sweep.lock` in the
sweep directory for its whole life, taken before it opens the study. A second driver on the same directory
refuses at once, naming the first, before it changes anything; the lock is the operating system's
(`flock`), so a killed driver leaves none behind, and the study's RUNNING trials are then known to be
interrupted rather than running elsewhere. Trial processes (joblib workers, SLURM jobs) never take it.

The lock is local to the file system: drivers on several machines that share a database server
(`hydra.sweeper.storage=postgresql://...`) but not the sweep directory are not kept apart by it.
"""

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from lightning_tune.errors import ConfigError

LOCK = ".sweep.lock"  # in the sweep directory: held by its driver, and naming it


@contextmanager
def driver_lock(sweep_dir: Path) -> Iterator[None]:
    """Hold the sweep directory's lock; raise ConfigError, changing nothing, while another driver holds it.

    A sweep that wrote nothing else (its storage could not be opened) leaves no directory behind.
    """
    created = not sweep_dir.exists()
    path = sweep_dir / LOCK
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the processes the sweep starts
    except OSError as error:
        reason = f"{error.strerror}: {error.filename}"
        raise ConfigError(f"hydra.sweep.dir={sweep_dir} cannot hold the sweep: {reason}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process that has not said which"
        os.close(fd)
        raise ConfigError(
            f"{sweep_dir} is in use by another sweep ({holder}): wait for it to end or stop it, "
            f"then run this command again to resume; or give this one another hydra.sweep.dir"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        if created and {p.name for p in sweep_dir.iterdir()} == {LOCK}:
            path.unlink()
            sweep_dir.rmdir()
        os.close(fd)  # releases the lock


def run_dirs(sweep_dir: Path) -> list[int]:
    """The numbers of the sweep directory's trial directories that hold anything: each is some trial's run."""
    return sorted(
        int(path.name) for path in sweep_dir.glob("*") if path.name.isdigit() and path.is_dir() and any(path.iterdir())
    )


def check_runs_known(sweep_dir: Path, numbers: Iterable[int], where: str) -> None:
    """Raise ConfigError when the sweep directory holds runs of trials the study has not started: its storage
    was lost, emptied or replaced, and its new trials would be written into those runs' directories."""
    known = set(numbers)
    unknown = [number for number in run_dirs(sweep_dir) if number not in known]
    if unknown:
        finished = sum((sweep_dir / str(number) / "metrics.json").is_file() for number in unknown)
        shown = ", ".join(map(str, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
        raise ConfigError(
            f"{sweep_dir} holds the runs of {len(unknown)} trial(s) ({shown}; {finished} finished) that the study in "
            f"{where} does not know ({len(known)} trial(s)): its storage was lost or replaced. Restore it, "
            f"or give this sweep another hydra.sweep.dir; no run is written over"
        )
