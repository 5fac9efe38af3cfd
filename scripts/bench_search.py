"""Search quality and pruning savings of the sweep presets, on the digits CNN task.

    python scripts/bench_search.py [--trials 40] [--seeds 0 1 2] [--epochs 5]

Runs real sweeps through `train.py -m` (one process per sweep) over the same discrete search space:
random, grid and TPE without pruning, and TPE with the median and ASHA pruners. Prints JSON:
the best validation accuracy found after 10, 20 and 40 trials (mean over sweep seeds), and for the
pruned sweeps the total epochs trained relative to unpruned TPE.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
SPACE = {  # 3 x 3 x 4 x 2 = 72 points: discrete, so grid, random and TPE search the same space
    "model.depth": "choice(1,2,3)",
    "model.width": "choice(16,32,64)",
    "optimizer.lr": "choice(0.001,0.003,0.01,0.03)",
    "regularization.dropout": "choice(0.0,0.25)",
}
FIXED = {  # the presets' other params, pinned: Adam, no schedule, no L2, batch 64
    "optimizer._option_": "adam",
    "scheduler._option_": "none",
    "regularization.l2": "0.0",
    "data.batch_size": "64",
}
SWEEPS = {  # name: (preset, pruner)
    "random": ("random", "none"),
    "grid": ("grid", "none"),
    "tpe": ("tpe", "none"),
    "tpe+median": ("tpe", "median"),
    "tpe+asha": ("tpe", "asha"),
}


def run_sweep(sweep_dir: Path, preset: str, pruner: str, seed: int, trials: int, epochs: int) -> float:
    command = [
        sys.executable, "train.py", "-m", f"hparams_search={preset}", f"hydra/sweeper/pruner={pruner}",
        f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.n_trials={trials}", f"seed={seed}",
        f"trainer.max_epochs={epochs}", "logger=none",
        *(f"++hydra.sweeper.params.{name}='{value}'" for name, value in {**SPACE, **FIXED}.items()),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def summarize(sweep_dir: Path, epochs: int, checkpoints: list[int]) -> dict:
    study = optuna.load_study(study_name="lightning-tune", storage=f"sqlite:///{sweep_dir}/optuna.db")
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    best, best_at = 0.0, {}
    for count, trial in enumerate(trials, start=1):
        if trial.state == TrialState.COMPLETE:
            best = max(best, trial.value)
        if count in checkpoints:
            best_at[count] = best
    epochs_trained = sum(
        epochs if t.state == TrialState.COMPLETE else len(t.intermediate_values) for t in trials
    )
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    return {"best_at": best_at, "epochs": epochs_trained, "pruned": pruned, "trials": len(trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5, help="epoch budget of every trial")
    parser.add_argument("--sweeps", nargs="+", default=list(SWEEPS), choices=list(SWEEPS))
    args = parser.parse_args()
    checkpoints = [n for n in (10, 20, 40) if n <= args.trials] or [args.trials]
    results: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.sweeps:
            preset, pruner = SWEEPS[name]
            runs = []
            for seed in args.seeds:
                sweep_dir = Path(scratch) / f"{name}-{seed}"
                wall = run_sweep(sweep_dir, preset, pruner, seed, args.trials, args.epochs)
                runs.append({**summarize(sweep_dir, args.epochs, checkpoints), "wall_s": round(wall, 1), "seed": seed})
                print(f"{name} seed {seed}: {runs[-1]}", file=sys.stderr)
            results[name] = {
                "best_val_acc_at": {
                    n: round(statistics.mean(r["best_at"][n] for r in runs), 4) for n in checkpoints
                },
                "epochs_trained": statistics.mean(r["epochs"] for r in runs),
                "pruned_trials": statistics.mean(r["pruned"] for r in runs),
                "wall_s": round(statistics.mean(r["wall_s"] for r in runs), 1),
                "runs": runs,
            }
    if "tpe" in results:
        base = results["tpe"]
        for name in ("tpe+median", "tpe+asha"):
            if name in results:
                results[name]["epochs_saved_vs_tpe"] = round(1 - results[name]["epochs_trained"] / base["epochs_trained"], 3)
                best_n = checkpoints[-1]
                results[name]["best_acc_delta_points_vs_tpe"] = round(
                    100 * (results[name]["best_val_acc_at"][best_n] - base["best_val_acc_at"][best_n]), 2
                )
    settings = {"trials": args.trials, "seeds": args.seeds, "epochs_per_trial": args.epochs, "space": SPACE, "fixed": FIXED}
    print(json.dumps({"settings": settings, "results": results}, indent=2))


if __name__ == "__main__":
    main()
