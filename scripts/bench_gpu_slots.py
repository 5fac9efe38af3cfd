"""Small trials packed k to one GPU: trials a minute with k = 1, 2 and 4 joblib workers on a single GPU.

    OMP_NUM_THREADS=1 python scripts/bench_gpu_slots.py [--trials 24] [--k 1 2 4] [--trainer gpu]

For each k, `python train.py -m` runs the same random search (an MLP on digits, 10 epochs a trial, seed 0)
with `launcher=joblib launcher.n_jobs=k hydra.sweeper.workers_per_gpu=k trainer=gpu`: k worker processes,
each training its trials on the one GPU. Prints JSON per k: the wall time to `--trials` finished trials, trials
a minute, the trials' own time summed (`duration_s`), the best val/acc, and the GPU's peak memory in use while
the sweep ran (nvidia-smi, sampled every 0.5 s; null without it). `--trainer cpu` runs the same on the CPU,
to try the script where there is no GPU.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import optuna

ROOT = Path(__file__).resolve().parents[1]
SWEEP = [
    "hparams_search=random", "model=mlp", "model.depth=2", "model.width=64", "optimizer=adam", "scheduler=none",
    "optimizer.lr=tag(log,interval(1e-4,1e-2))", "regularization.dropout=interval(0,0.3)", "trainer.max_epochs=10",
    "logger=none", "seed=0",
]  # fmt: skip


def gpu_memory_mib() -> Optional[int]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(int(line) for line in out.split())


def sweep(k: int, trials: int, trainer: str, sweep_dir: Path) -> dict:
    command = [
        sys.executable, "train.py", "-m", *SWEEP, f"trainer={trainer}", "launcher=joblib", f"launcher.n_jobs={k}",
        f"hydra.sweeper.workers_per_gpu={k}", f"hydra.sweeper.n_trials={trials}", f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    peak: list[Optional[int]] = [gpu_memory_mib()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            if (used := gpu_memory_mib()) is not None:
                peak[0] = max(peak[0] or 0, used)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    finally:
        done.set()
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name="lightning-tune", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {
        "wall_s": round(wall, 1),
        "trials_per_min": round(60 * len(finished) / wall, 2),
        "trial_s_summed": round(sum(t.user_attrs["duration_s"] for t in finished), 1),
        "best_value": round(study.best_value, 4),
        "peak_gpu_memory_mib": peak[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trainer", default="gpu", choices=["gpu", "cpu"])
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for k in args.k:
            results[k] = sweep(k, args.trials, args.trainer, Path(scratch) / f"k{k}")
            print(f"k={k}: {results[k]}", file=sys.stderr)
    print(json.dumps({"settings": {"trials": args.trials, "trainer": args.trainer}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
