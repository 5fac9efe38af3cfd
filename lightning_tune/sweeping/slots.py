"""Parallel trials without a batch barrier: a slot that frees gets the next trial at once.

Each busy slot is a thread that waits for its trial's job (a joblib worker, a SLURM job) and hands the
result back to the sweep's main thread, which alone talks to the study: it asks, tells and logs, so the
sampler sees every trial in flight as RUNNING. With one slot the job runs in the calling thread, as
in-process trials must: Lightning's signal handling (Ctrl-C, SLURM's requeue signal) needs the main thread.
"""

import queue
import threading
from typing import Any, Callable, Generic, Optional, TypeVar

Result = TypeVar("Result")


class Slots(Generic[Result]):
    """`count` slots, numbered from 0, that each run one job at a time."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.busy: dict[int, Any] = {}  # slot: the key its job was started with (its trial)
        self._done: queue.Queue = queue.Queue()

    def free(self) -> list[int]:
        return [slot for slot in range(self.count) if slot not in self.busy]

    def start(self, slot: int, key: Any, job: Callable[[], Result]) -> None:
        """Run `job` on the free `slot`; its result comes back, with `key`, from `next_done`."""
        assert slot not in self.busy, f"slot {slot} is busy"
        self.busy[slot] = key
        if self.count == 1:
            self._done.put((slot, *outcome(job)))
        else:  # a daemon: a job's wait never holds up the sweep's exit (Ctrl-C, an error)
            run = lambda: self._done.put((slot, *outcome(job)))  # noqa: E731
            threading.Thread(target=run, name=f"trial-slot-{slot}", daemon=True).start()

    def next_done(self) -> tuple[Any, Result]:
        """(key, result) of the next job to end, waiting for it; re-raises what the job raised (a launcher
        that refuses the job: SystemExit, ConfigError)."""
        slot, result, error = self._done.get()
        key = self.busy.pop(slot)
        if error is not None:
            raise error
        return key, result


def outcome(job: Callable[[], Result]) -> tuple[Optional[Result], Optional[BaseException]]:
    try:
        return job(), None
    except BaseException as error:  # noqa: BLE001 - handed to the main thread, which raises it
        return None, error
