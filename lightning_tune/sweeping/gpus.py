"""GPUs of parallel trials on one machine: each process that runs trials owns one GPU for its whole life.

A joblib worker process runs whichever trial comes next, whatever slot it came from. Had each slot its GPU
(`trainer.devices=[i]`), a process could train one trial on GPU 0 and its next on GPU 1, holding a CUDA
context (hundreds of MiB) on both. So a process takes a seat at its first trial instead: seats 0 to S-1,
`per_gpu` consecutive ones to a GPU, taken one on each GPU before a second on any (fewer processes than seats
spread over every GPU), each a lock file in the sweep's directory that the process holds until
it exits (the OS lets go of it when the process dies, kill -9 included, and a new process takes it). The
process then sees its seat's GPU alone (CUDA_VISIBLE_DEVICES, which CUDA reads at its first call in the
process), and each trial's trainer uses it. With at least as many seats as the pool has processes, a process
always finds one free.
"""

import fcntl
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional

log = logging.getLogger(__name__)

SEATS_DIR = ".gpu_seats"  # in the sweep's directory
_owned: Optional[tuple[IO[str], str]] = None  # this process's seat's lock file, held until it exits, and its GPU


def seat_gpu(seat: int, gpu_count: int, per_gpu: int = 1) -> int:
    """The GPU of `seat`: `per_gpu` consecutive seats share one (`hydra.sweeper.workers_per_gpu`), the GPUs
    taken round robin when there are more seats than `per_gpu` x `gpu_count`."""
    return (seat // per_gpu) % gpu_count


@dataclass(frozen=True)
class GpuSeats:
    """The seats of a sweep whose `slots` parallel trials share `gpu_count` GPUs, `per_gpu` trials to each."""

    sweep_dir: Path
    gpu_count: int
    per_gpu: int
    slots: int

    @property
    def count(self) -> int:
        return max(self.slots, self.gpu_count * self.per_gpu)

    def order(self) -> list[int]:
        """The seats in the order processes take them: the first of each GPU's, then the second, ...; then
        those beyond `per_gpu` x `gpu_count`."""
        packed = self.gpu_count * self.per_gpu
        spread = [gpu * self.per_gpu + k for k in range(self.per_gpu) for gpu in range(self.gpu_count)]
        return spread + list(range(packed, self.count))

    def take(self) -> tuple[int, IO[str]]:
        """A free seat and its lock file, locked while the file is open; RuntimeError when every seat is held
        (more processes run trials than the sweep has slots)."""
        directory = self.sweep_dir / SEATS_DIR
        directory.mkdir(parents=True, exist_ok=True)
        for seat in self.order():
            file = open(directory / str(seat), "a")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                continue
            return seat, file
        raise RuntimeError(f"all {self.count} GPU seats in {directory} are held by other processes")


def own_gpu(seats: GpuSeats) -> str:
    """Confine this process to its seat's GPU, taking the seat at the first call; later calls keep it.
    Returns the device that CUDA_VISIBLE_DEVICES names: the seat's GPU index, or its entry in a
    CUDA_VISIBLE_DEVICES that the sweep was started with ("2,3": seat 1's GPU is "3")."""
    global _owned
    if _owned is None:
        seat, lock = seats.take()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        devices = visible.split(",") if visible else [str(index) for index in range(seats.gpu_count)]
        device = devices[seat_gpu(seat, seats.gpu_count, seats.per_gpu)].strip()
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
            log.warning("CUDA started in this process before it took GPU %s: its trials may use another", device)
        os.environ["CUDA_VISIBLE_DEVICES"] = device
        _owned = (lock, device)
    return _owned[1]
