"""Each process that runs a sweep's parallel trials owns one GPU for its whole life (`sweeping/gpus.py`).

The processes here are real, and hold their seats as a joblib worker does: until they exit. No GPU is
needed: what is checked is the CUDA_VISIBLE_DEVICES each process is given.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from sweeping import ENV, ONLY_LR, TINY, command

from lightning_tune.sweeping.gpus import SEATS_DIR, GpuSeats, seat_gpu

HOLD = """
import sys
from pathlib import Path
from lightning_tune.sweeping.gpus import GpuSeats, own_gpu
seats = GpuSeats(Path(sys.argv[1]), gpu_count=int(sys.argv[2]), per_gpu=int(sys.argv[3]), slots=int(sys.argv[4]))
try:
    first = own_gpu(seats)
except RuntimeError as error:
    print("refused:", error, flush=True)
    raise SystemExit(1)
import os
assert own_gpu(seats) == first == os.environ["CUDA_VISIBLE_DEVICES"]  # its next trials keep the GPU
print(first, flush=True)
sys.stdin.read()  # holds the seat, as a joblib worker between trials, until this process ends
"""


class Worker:
    """A process that takes a seat and holds it until `end`."""

    def __init__(self, sweep_dir: Path, gpus: int, per_gpu: int, slots: int, env: dict[str, str]) -> None:
        arguments = [str(sweep_dir), str(gpus), str(per_gpu), str(slots)]
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD, *arguments], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.device = self.process.stdout.readline().strip()

    def end(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def start(tmp_path):
    workers: list[Worker] = []

    def start_worker(gpus: int, per_gpu: int = 1, slots: int = 2, visible: str = "") -> Worker:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
        workers.append(Worker(tmp_path, gpus, per_gpu, slots, env))
        return workers[-1]

    yield start_worker
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


def test_seats_map_to_gpus_in_blocks_of_per_gpu():
    assert [seat_gpu(seat, 2) for seat in range(2)] == [0, 1]
    assert [seat_gpu(seat, 2) for seat in range(5)] == [0, 1, 0, 1, 0]  # more seats than GPUs: round robin
    assert [seat_gpu(seat, 2, per_gpu=2) for seat in range(4)] == [0, 0, 1, 1]
    assert [seat_gpu(seat, 4, per_gpu=2) for seat in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [seat_gpu(seat, 2, per_gpu=3) for seat in range(8)] == [0, 0, 0, 1, 1, 1, 0, 0]
    assert GpuSeats(Path("."), gpu_count=2, per_gpu=2, slots=3).count == 4  # the GPUs' seats, at least
    assert GpuSeats(Path("."), gpu_count=2, per_gpu=1, slots=5).count == 5  # ... and one per slot
    # taken one on each GPU before a second on any: two processes of workers_per_gpu=2 use both GPUs
    assert GpuSeats(Path("."), gpu_count=2, per_gpu=2, slots=4).order() == [0, 2, 1, 3]
    assert GpuSeats(Path("."), gpu_count=3, per_gpu=2, slots=7).order() == [0, 2, 4, 1, 3, 5, 6]


def test_each_process_owns_its_gpu_and_a_dead_ones_seat_is_taken_again(start, tmp_path):
    workers = [start(gpus=2, per_gpu=2, slots=4) for _ in range(4)]
    assert [worker.device for worker in workers] == ["0", "1", "0", "1"]  # workers_per_gpu=2: two to a GPU
    assert sorted(path.name for path in (tmp_path / SEATS_DIR).iterdir()) == ["0", "1", "2", "3"]
    refused = start(gpus=2, per_gpu=2, slots=4)  # a fifth process while four hold every seat
    assert refused.device.startswith("refused: all 4 GPU seats in") and refused.process.wait(timeout=30) == 1
    workers[3].process.kill()  # kill -9: the OS lets go of its seat
    workers[3].process.wait()
    assert start(gpus=2, per_gpu=2, slots=4).device == "1"  # its replacement takes the GPU it left
    workers[0].end()
    assert start(gpus=2, per_gpu=2, slots=4).device == "0"


def test_a_gpu_list_the_sweep_was_given_is_kept(start):
    """CUDA_VISIBLE_DEVICES=5,7 python train.py -m ...: the processes get GPU 5 and GPU 7, not 0 and 1."""
    assert [start(gpus=2, visible="5,7").device for _ in range(2)] == ["5", "7"]


# The sweep's driver believes it has two GPUs; its joblib workers, fresh processes, train on the CPU all the same.
TWO_GPUS = "import runpy, torch; torch.cuda.device_count = lambda: 2; runpy.run_path('train.py', run_name='__main__')"


@pytest.fixture(scope="module", params=[1, 2], ids=["one per gpu", "two per gpu"])
def worker_trials(request, tmp_path_factory) -> tuple[int, list[dict]]:
    """workers_per_gpu and, per trial of a 6-trial joblib sweep on 2 processes, what the process saw."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    probe_file = tmp_path / "probe.jsonl"
    env = {**ENV, "PYTHONPATH": f"{ROOT / 'tests'}:{os.environ.get('PYTHONPATH', '')}", "PROBE_FILE": str(probe_file)}
    arguments = command(
        tmp_path / "sweep", "hparams_search=random", *ONLY_LR, *TINY, "hydra.sweeper.n_trials=6", "launcher=joblib",
        "launcher.n_jobs=2", f"hydra.sweeper.workers_per_gpu={request.param}",
        "+callbacks.probe._target_=probes.WorkerProbe", "+execution_whitelist.probes=probes.*",
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", TWO_GPUS, *arguments[2:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = [json.loads(line) for line in probe_file.read_text().splitlines()]
    assert len(trials) == 6
    return request.param, trials


def test_a_joblib_sweep_gives_each_worker_process_its_own_gpu(worker_trials):
    _, trials = worker_trials
    gpus_by_process: dict[int, set[str]] = {}
    for trial in trials:
        gpus_by_process.setdefault(trial["pid"], set()).add(trial["gpus"])
    assert all(len(gpus) == 1 for gpus in gpus_by_process.values()), gpus_by_process  # one GPU a process, for life
    assert set().union(*gpus_by_process.values()) == {"0", "1"}  # two processes: one on each GPU, k=1 or 2


def test_a_joblib_worker_sets_its_imports_aside_from_the_garbage_collector_from_its_first_trial(worker_trials):
    """loky's worker collects garbage after each task: with torch's objects frozen once imported
    (`lightning_tune.startup`), that walk is short."""
    _, trials = worker_trials
    assert all(trial["frozen"] > 100_000 for trial in trials), trials
    assert len({trial["pid"] for trial in trials}) < len(trials)  # a process ran two trials or more
