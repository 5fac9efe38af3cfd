"""Search quality of the sampler presets, and pruning savings, from real sweeps.

    python scripts/bench_search.py [--bench samplers] [--trials 40] [--seeds 0 1 2] [--epochs 1]
    python scripts/bench_search.py --bench pruners [--trials 40] [--seeds 0 1 2] [--epochs 5]

Every sweep is one `python train.py -m hparams_search=<preset>` process (in a scratch directory,
`logger=none`, one thread per trial); everything but the preset or pruner is the same across a bench.

- `samplers` (the default): random, TPE and GP on an MLP for digits over a continuous space (log lr,
  log L2, dropout, log-scale integer width, integer depth), trained for few epochs so that lr and width
  decide the accuracy: a space where a model-based sampler can show its edge.
- `pruners`: random, grid and TPE without pruning, and TPE with the median and ASHA pruners, on the
  CNN over a 72-point discrete space (which every sampler solves within 10 trials: too easy to rank
  samplers, but it measures what pruning saves).

Prints JSON: per sweep, the best validation accuracy after the first 10, 20 and 40 trials (by trial
number, one sweep per seed: mean, min and max over seeds), the wall time of the whole process and
the time between trials (sampling, storage, the sweeper), the warnings the sweeps printed, and for the
pruned sweeps the epochs trained relative to unpruned TPE.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

ROOT = Path(__file__).resolve().parents[1]
WARNING = re.compile(r"^\[W [^\]]*\] ")  # Optuna's log prefix of a warning, with its time
BENCHES = {
    "samplers": {
        "overrides": ["model=mlp"],
        "space": {  # continuous where it can be, so a model of the objective has something to interpolate
            "optimizer.lr": "tag(log, interval(1e-5, 1.0))",  # 5 decades, of which about one trains well in 1 epoch
            "regularization.l2": "tag(log, interval(1e-6, 1e-1))",  # Adam's weight decay
            "regularization.dropout": "interval(0.0, 0.7)",
            "model.width": "tag(log, int(interval(4, 512)))",  # hidden units per layer
            "model.depth": "int(interval(1, 4))",  # hidden layers
        },
        "fixed": {"optimizer._option_": "adam", "scheduler._option_": "none", "data.batch_size": "64"},
        "sweeps": {"random": ("random", "none"), "tpe": ("tpe", "none"), "gp": ("gp", "none")},
        "epochs": 1,  # 20 Adam steps: 3 epochs let random search reach the ceiling (~0.97) within 20 trials
    },
    "pruners": {
        "overrides": [],  # the presets' CNN
        "space": {  # 3 x 3 x 4 x 2 = 72 points: discrete, so grid, random and TPE search the same space
            "model.depth": "choice(1,2,3)",
            "model.width": "choice(16,32,64)",
            "optimizer.lr": "choice(0.001,0.003,0.01,0.03)",
            "regularization.dropout": "choice(0.0,0.25)",
        },
        "fixed": {  # the presets' other params, pinned: Adam, no schedule, no L2, batch 64
            "optimizer._option_": "adam",
            "scheduler._option_": "none",
            "regularization.l2": "0.0",
            "data.batch_size": "64",
        },
        "sweeps": {  # name: (preset, pruner)
            "random": ("random", "none"),
            "grid": ("grid", "none"),
            "tpe": ("tpe", "none"),
            "tpe+median": ("tpe", "median"),
            "tpe+asha": ("tpe", "asha"),
        },
        "epochs": 5,
    },
}


def run_sweep(
    sweep_dir: Path, bench: dict, preset: str, pruner: str, seed: int, trials: int, epochs: int
) -> tuple[float, list[str]]:
    """Wall seconds of one sweep, as a user runs it, and the warnings it printed (a user sees them too)."""
    params = {**bench["space"], **bench["fixed"]}
    command = [
        sys.executable, "train.py", "-m", f"hparams_search={preset}", f"hydra/sweeper/pruner={pruner}",
        *bench["overrides"], f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.n_trials={trials}",
        f"seed={seed}", f"trainer.max_epochs={epochs}", "logger=none", "threads=1",
        *(f"++hydra.sweeper.params.{name}='{value}'" for name, value in params.items()),
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    console = (result.stdout + result.stderr).splitlines()
    return wall, sorted({WARNING.sub("", line) for line in console if WARNING.match(line) or "Warning:" in line})


def between_trials_s(trials: list[FrozenTrial]) -> list[float]:
    """For each trial after the first: the time from the previous trial's end to its own end, less its own
    run (`duration_s`, timed in the trial's process): asking the sampler, storage and the sweeper's work."""
    return [
        (trial.datetime_complete - previous.datetime_complete).total_seconds() - trial.user_attrs["duration_s"]
        for previous, trial in zip(trials, trials[1:])
    ]


def summarize(sweep_dir: Path, epochs: int, checkpoints: list[int]) -> dict:
    """Best-so-far value after the first n trials (by number) for each checkpoint n, and the sweep's costs."""
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
    failed = sum(t.state == TrialState.FAIL for t in trials)  # diverged (lr near 1): recorded, the sweep goes on
    gaps = between_trials_s(trials)
    return {
        "best_at": best_at,
        "epochs": epochs_trained,
        "pruned": pruned,
        "failed": failed,
        "trials": len(trials),
        "trials_s": round(sum(t.user_attrs["duration_s"] for t in trials), 1),
        "between_trials_s_first_10": round(statistics.mean(gaps[:9]), 3),
        "between_trials_s_last_10": round(statistics.mean(gaps[-10:]), 3),
        "best_params": {k: float(f"{v:.3g}") if isinstance(v, float) else v for k, v in study.best_params.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", choices=list(BENCHES), default="samplers",
                        help="samplers: random, tpe and gp; pruners: the pruners beside unpruned TPE (default: samplers)")
    parser.add_argument("--trials", type=int, default=40, help="trials per sweep (default: 40)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sweep seeds (default: 0 1 2)")
    parser.add_argument("--epochs", type=int, help="epoch budget of every trial (default: the bench's)")
    parser.add_argument("--sweeps", nargs="+", help="some of the bench's sweeps (default: all)")
    args = parser.parse_args()
    if args.trials < 2:
        parser.error("--trials: at least 2, so that there is a time between trials to measure")
    bench = BENCHES[args.bench]
    epochs = args.epochs or bench["epochs"]
    names = args.sweeps or list(bench["sweeps"])
    if unknown := set(names) - set(bench["sweeps"]):
        parser.error(f"--sweeps: {sorted(unknown)} not in the {args.bench} bench; valid: {list(bench['sweeps'])}")
    checkpoints = [n for n in (10, 20, 40) if n <= args.trials] or [args.trials]
    all_runs: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:  # the sweeps of a seed side by side, so that a load that comes and goes hits all
            for name in names:
                preset, pruner = bench["sweeps"][name]
                sweep_dir = Path(scratch) / f"{name}-{seed}"
                wall, warnings = run_sweep(sweep_dir, bench, preset, pruner, seed, args.trials, epochs)
                run = {**summarize(sweep_dir, epochs, checkpoints), "wall_s": round(wall, 1), "seed": seed,
                       "warnings": warnings}  # fmt: skip
                all_runs[name].append(run)
                print(f"{name} seed {seed}: {run}", file=sys.stderr)
    results: dict = {}
    for name, runs in all_runs.items():
        results[name] = {
            "best_val_acc_at": {
                n: round(statistics.mean(r["best_at"][n] for r in runs), 4) for n in checkpoints
            },
            "best_val_acc_range_at": {
                n: [round(min(r["best_at"][n] for r in runs), 4), round(max(r["best_at"][n] for r in runs), 4)]
                for n in checkpoints
            },
            "epochs_trained": statistics.mean(r["epochs"] for r in runs),
            "pruned_trials": statistics.mean(r["pruned"] for r in runs),
            "failed_trials": statistics.mean(r["failed"] for r in runs),
            "wall_s": round(statistics.mean(r["wall_s"] for r in runs), 1),
            "trials_s": round(statistics.mean(r["trials_s"] for r in runs), 1),
            "between_trials_s_first_10": round(statistics.mean(r["between_trials_s_first_10"] for r in runs), 3),
            "between_trials_s_last_10": round(statistics.mean(r["between_trials_s_last_10"] for r in runs), 3),
            "warnings": sorted({w for r in runs for w in r["warnings"]}),
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
    settings = {
        "bench": args.bench, "trials": args.trials, "seeds": args.seeds, "epochs_per_trial": epochs,
        "overrides": bench["overrides"], "space": bench["space"], "fixed": bench["fixed"],
    }  # fmt: skip
    print(json.dumps({"settings": settings, "results": results}, indent=2))


if __name__ == "__main__":
    main()
