"""Parallel slots kept busy: the batch schedule against the asynchronous one, side by side.

    python scripts/bench_async.py [--trials 20] [--seed 0] [--epochs 10 100]
                                  [--launchers joblib slurm slurm-workers] [--partition debug]

Runs the same sweep, seed and budget twice per launcher, one after the other:
`hydra.sweeper.wait_for_batch=true` (the 2 slots' trials asked together, the next 2 once both have ended: the
schedule before issue 14) and the default (a slot that frees gets the next trial at once); `slurm-workers` once,
as 2 workers (`hydra.sweeper.workers=2`: SLURM jobs that each run trial after trial in their own process). The
trials are MLPs on digits whose epochs are swept (`trainer.max_epochs=choice(10,100)` by default: trials 10x apart
in length). Prints JSON, per launcher and schedule:

- `utilization`: the trials' own time (`duration_s`, timed in the process that ran each) summed, over
  slots x wall time, the wall time running from the first trial asked to the last one told (Optuna's
  `datetime_start` and `datetime_complete`): the share of the slots' time spent in trials;
- `utilization_from_command`: the same, with the wall time from the command's start instead (its imports,
  and a worker's job start before it asks its first trial, count as idle);
- `wall_s` to `n_trials` finished, and the sweep command's own `command_s` (imports and report included);
- `best_value` (val/acc), and the trials' epochs in the order they were asked.

On SLURM without workers each trial is a job of its own, whose start (sbatch, the job's Python and imports) counts
as idle slot time, not trial time. The SLURM launchers need the local cluster (../shared/slurm/start-local-cluster).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
SLOTS = 2
SWEEP = [
    "hparams_search=random", "model=mlp", "model.depth=1", "model.width=32", "optimizer=adam", "scheduler=none",
    "regularization.l2=0.0", "regularization.dropout=0.0", "data.batch_size=64", "optimizer.lr=interval(1e-3,1e-2)",
    "trainer=cpu", "logger=none", "+trainer.limit_train_batches=30",
]  # fmt: skip
ONE_CPU = ["launcher=slurm", "launcher.cpus_per_task=1", "launcher.mem_gb=1"]
LAUNCHERS = {
    "joblib": ["launcher=joblib", f"launcher.n_jobs={SLOTS}"],
    "slurm": [*ONE_CPU, f"launcher.array_parallelism={SLOTS}"],
    "slurm-workers": [*ONE_CPU, f"hydra.sweeper.workers={SLOTS}"],
}


def run_sweep(
    sweep_dir: Path, launcher: list[str], wait_for_batch: bool, trials: int, seed: int, epochs: list[int]
) -> float:
    command = [
        sys.executable, "train.py", "-m", *SWEEP, f"trainer.max_epochs=choice({','.join(map(str, epochs))})",
        *launcher, f"hydra.sweeper.wait_for_batch={wait_for_batch}", f"hydra.sweeper.n_trials={trials}",
        f"seed={seed}", f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def summarize(sweep_dir: Path, command_s: float, command_start: float) -> dict:
    study = optuna.load_study(study_name="lightning-tune", storage=f"sqlite:///{sweep_dir}/optuna.db")
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    trials = [t for t in trials if t.state != TrialState.FAIL]  # a trial a worker gave up, unrun
    last_told = max(t.datetime_complete for t in trials)
    wall = (last_told - min(t.datetime_start for t in trials)).total_seconds()
    busy = sum(t.user_attrs["duration_s"] for t in trials)
    return {
        "utilization": round(busy / (SLOTS * wall), 3),
        "utilization_from_command": round(busy / (SLOTS * (last_told.timestamp() - command_start)), 3),
        "wall_s": round(wall, 1),
        "trial_s_summed": round(busy, 1),
        "command_s": round(command_s, 1),
        "best_value": round(study.best_value, 4),
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "epochs_asked": [t.params["trainer.max_epochs"] for t in trials],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 100], help="the epochs swept (default: 10 100)")
    parser.add_argument("--launchers", nargs="+", default=list(LAUNCHERS), choices=list(LAUNCHERS))
    parser.add_argument("--partition", default="debug", help="the SLURM partition (the local cluster's: debug)")
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.launchers:
            launcher = LAUNCHERS[name] + ([f"launcher.partition={args.partition}"] if name.startswith("slurm") else [])
            schedules = (("workers", False),) if name == "slurm-workers" else (("batch", True), ("async", False))
            for schedule, wait_for_batch in schedules:
                sweep_dir = Path(scratch) / f"{name}-{schedule}"
                command_start = time.time()
                command_s = run_sweep(sweep_dir, launcher, wait_for_batch, args.trials, args.seed, args.epochs)
                results.setdefault(name, {})[schedule] = summarize(sweep_dir, command_s, command_start)
                print(f"{name} {schedule}: {results[name][schedule]}", file=sys.stderr)
    settings = {"trials": args.trials, "seed": args.seed, "epochs": args.epochs, "slots": SLOTS, "sweep": SWEEP}
    print(json.dumps({"settings": settings, "results": results}, indent=2))


if __name__ == "__main__":
    main()
