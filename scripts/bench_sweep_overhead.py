"""What a sweep costs beyond the training inside its trials, and what starting a command costs.

    python scripts/bench_sweep_overhead.py [--trials 20]

Runs `python train.py -m hparams_search=random` with `--trials` one-epoch trials in one process (Hydra's
basic launcher) and a callback that records, for each trial, the seconds spent inside Lightning's
loops (fit with its validation, then the final validate and test of the best checkpoint) and the
process's resident memory when the trial ends. Prints JSON:

- `overhead_per_trial_s`: (sweep wall time - time inside the loops) / trials. The wall time is the
  whole command, interpreter start and imports included. `startup_s` runs to the first trial's
  Trainer (imports, the study, the first data load), `teardown_s` from the last trial's end to the
  exit (the report and its plots), and `overhead_per_trial_steady_s` is the overhead between them.
- `train_fraction`: time inside the loops / sweep wall time.
- `rss_mb_at_start` of each trial (what the sweep holds between trials; a leak shows here) and
  `rss_growth_trial2_to_last` of it: memory must not grow from trial to trial. `rss_mb_at_end` is taken
  while the trial's model, data and optimizer are still alive.
- `peak_rss_mb` of the sweep and of a default `python train.py`.
- cold starts: `python -c "import torch"`, `python train.py --help`, a one-epoch `python train.py`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

ROOT = Path(__file__).resolve().parents[1]
TIMES_ENV = "LT_BENCH_LOOP_TIMES"  # the file the callback appends one JSON line per trial to

# Each trial: one epoch of a small ResNet (depth 1, width 16: a few seconds here) on 4096 synthetic 3x32x32
# images; the random preset searches the optimizer, schedule, regularization and batch size.
TRIAL = ["model=resnet", "data=synthetic", "data.num_samples=4096", "trainer=cpu", "trainer.max_epochs=1",
         "hydra.sweeper.params.model.depth=1", "hydra.sweeper.params.model.width=16"]  # fmt: skip


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class LoopTimer(pl.Callback):
    """Adds up the seconds inside each loop of a trial; on the test loop's end, appends them to $LT_BENCH_LOOP_TIMES."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.started = 0.0
        self.rss_at_start = rss_mb()  # built with the Trainer: the data and model exist, nothing has trained
        self.created_at = time.time()

    def _start(self, *args: Any) -> None:
        self.started = time.perf_counter()

    def _stop(self, *args: Any) -> None:
        self.seconds += time.perf_counter() - self.started

    on_train_start = on_test_start = _start
    on_train_end = _stop

    def on_validation_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # validation inside fit is part of the train loop already
            self._start()

    def on_validation_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._stop()

    def on_test_end(self, *args: Any) -> None:
        self._stop()
        with open(os.environ[TIMES_ENV], "a") as times:
            record = {"loops_s": self.seconds, "rss_at_start": self.rss_at_start, "rss_at_end": rss_mb(),
                      "created_at": self.created_at, "ended_at": time.time()}  # fmt: skip
            times.write(json.dumps(record) + "\n")


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, float, float]:
    """Wall seconds, peak RSS (MB), start and end (epoch seconds) of a command; ru_maxrss of children is
    the largest so far, so each command is run in a fresh `python` that reports its own child's."""
    probe = (
        "import resource, subprocess, sys, time; start = time.time();"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL);"
        "print(time.time() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, start, time.time())"
    )
    output = subprocess.run([sys.executable, "-c", probe, *command], cwd=ROOT, env=env, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    wall, peak, start, end = map(float, output.split())
    return wall, peak, start, end


def best_of(repeats: int, command: list[str], env: dict[str, str]) -> float:
    return min(timed(command, env)[0] for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="cold starts: best of this many")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}:{os.environ.get('PYTHONPATH', '')}"}
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        env[TIMES_ENV] = str(Path(tmp) / "times.jsonl")
        sweep = [python, "train.py", "-m", "hparams_search=random", *TRIAL, f"hydra.sweeper.n_trials={args.trials}",
                 "+callbacks.loop_timer._target_=bench_sweep_overhead.LoopTimer", f"hydra.sweep.dir={tmp}/sweep"]  # fmt: skip
        sweep_wall, sweep_peak, sweep_start, sweep_end = timed(sweep, env)
        trials = [json.loads(line) for line in Path(env[TIMES_ENV]).read_text().splitlines()]
        assert len(trials) == args.trials, f"{len(trials)} trials timed of {args.trials}"
        help_start = best_of(args.repeats, [python, "train.py", "--help"], env)
        import_torch = best_of(args.repeats, [python, "-c", "import torch"], env)
        one_epoch = best_of(args.repeats, [python, "train.py", "trainer.max_epochs=1", f"hydra.run.dir={tmp}/run"], env)
        default_peak = timed([python, "train.py", f"hydra.run.dir={tmp}/default"], env)[1]
    loops = sum(trial["loops_s"] for trial in trials)
    # from the first trial's Trainer to the last trial's end: the sweep's steady state, start and end left out
    steady = trials[-1]["ended_at"] - trials[0]["created_at"] - loops
    rss = [round(trial["rss_at_start"], 1) for trial in trials]
    result = {
        "command": " ".join(["python train.py -m hparams_search=random", *TRIAL, f"hydra.sweeper.n_trials={args.trials}"]),
        "trials": args.trials,
        "sweep_wall_s": round(sweep_wall, 2),
        "inside_loops_s": round(loops, 2),
        "overhead_per_trial_s": round((sweep_wall - loops) / args.trials, 3),
        "startup_s": round(trials[0]["created_at"] - sweep_start, 2),  # to the first trial's Trainer
        "teardown_s": round(sweep_end - trials[-1]["ended_at"], 2),  # report, plots, exit
        "overhead_per_trial_steady_s": round(steady / args.trials, 3),
        "train_fraction": round(loops / sweep_wall, 3),
        "rss_mb_at_start": rss,
        "rss_mb_at_end": [round(trial["rss_at_end"], 1) for trial in trials],
        "rss_growth_trial2_to_last": round(rss[-1] / rss[1] - 1, 3) if len(rss) > 1 else None,
        "peak_rss_mb": {"sweep": round(sweep_peak), "default_run": round(default_peak)},
        "cold_start_s": {  # best of --repeats
            "import_torch": round(import_torch, 2),  # python -c "import torch"
            "help": round(help_start, 2),  # python train.py --help
            "one_epoch_run": round(one_epoch, 2),  # python train.py trainer.max_epochs=1
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
