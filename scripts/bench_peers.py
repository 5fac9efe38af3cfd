"""Trial cost against the plain Hydra + Optuna + Lightning setup and the hand-written limit, side by side.

    OMP_NUM_THREADS=1 python scripts/bench_peers.py [--rounds 5] [--trials 20] [--load]

Three contenders run the same random search (an MLP of 64 hidden units on digits, 2 epochs a trial, the
learning rate and dropout swept, seed 0), one after the other, `--rounds` times over:

- `ours`: `python train.py -m hparams_search=random ...`, as the README shows it (its study in SQLite, its
  results files, each trial's TensorBoard log, checkpoint, final validate and test);
- `plain`: `scripts/peers/plain/app.py -m`, the app a user would otherwise write: Hydra, the Optuna sweeper
  of the same Hydra line (its in-memory study), a plain LightningModule and `Trainer` with its defaults;
- `limit`: `scripts/peers/limit.py`, one process with an in-memory study and a hand-written loop, the data
  loaded once, no logger or checkpoint: what no Hydra app can beat.

Each records when every trial trains (`scripts/peers/common.py`'s FitTimer, which ours gets as a callback).
Prints JSON: per contender, the median over rounds of

- `whole_s`: the command's wall time, interpreter start to exit;
- `startup_s`: from the command's start to its first trial's training;
- `cycle_s`: the steady cycle per trial, the median time from one trial's end of training to the next one's
  start (trials 2 to n): what the tool spends per trial outside training;

and `ratios`, ours over plain, per round and their median. `--load` runs the rounds beside a CPU hog (one
busy process per core), as on a shared machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "scripts" / "peers"
METRICS = ("whole_s", "startup_s", "cycle_s")


def commands(trials: int, sweep_dir: Path) -> dict[str, list[str]]:
    ours = [
        sys.executable, "train.py", "-m", "hparams_search=random", "model=mlp", "model.depth=1", "model.width=64",
        "optimizer=adam", "scheduler=none", "regularization.l2=0", "data.batch_size=64",
        "optimizer.lr=tag(log,interval(1e-4,1e-1))", "regularization.dropout=interval(0,0.5)", "trainer=cpu",
        "trainer.max_epochs=2", f"hydra.sweeper.n_trials={trials}", "seed=0",
        "+callbacks.fit_timer._target_=common.FitTimer", "+execution_whitelist.peers=common.*",
        f"hydra.sweep.dir={sweep_dir / 'ours'}",
    ]  # fmt: skip
    plain = [
        sys.executable, str(PEERS / "plain" / "app.py"), "-m", f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweep.dir={sweep_dir / 'plain'}",
    ]  # fmt: skip
    limit = [sys.executable, str(PEERS / "limit.py"), "--trials", str(trials)]
    return {"ours": ours, "plain": plain, "limit": limit}


def run(command: list[str], scratch: Path) -> dict[str, float]:
    times_file = scratch / "times.jsonl"
    times_file.unlink(missing_ok=True)
    env = {**os.environ, "PEER_TIMES": str(times_file), "PYTHONPATH": str(PEERS)}
    start = time.time()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    whole = time.time() - start
    fits = [json.loads(line) for line in times_file.read_text().splitlines()]
    cycles = [later["fit_start"] - earlier["fit_end"] for earlier, later in zip(fits[1:], fits[2:])]
    return {"whole_s": whole, "startup_s": fits[0]["fit_start"] - start, "cycle_s": statistics.median(cycles)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--load", action="store_true", help="beside one busy process per CPU core")
    args = parser.parse_args()
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() if args.load else 0)
    ]
    rounds: dict[str, list[dict[str, float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch_dir:
            scratch = Path(scratch_dir)
            for number in range(args.rounds):
                for name, command in commands(args.trials, scratch / f"round-{number}").items():
                    rounds.setdefault(name, []).append(run(command, scratch))
                    print(name, {k: round(v, 3) for k, v in rounds[name][-1].items()}, file=sys.stderr)
    finally:
        for hog in hogs:
            hog.kill()
    medians = {
        name: {m: round(statistics.median(r[m] for r in runs), 3) for m in METRICS} for name, runs in rounds.items()
    }
    ratios = {
        m: {
            "median": round(statistics.median(o[m] / p[m] for o, p in zip(rounds["ours"], rounds["plain"])), 3),
            "rounds": [round(o[m] / p[m], 3) for o, p in zip(rounds["ours"], rounds["plain"])],
        }
        for m in METRICS
    }
    settings = {"rounds": args.rounds, "trials": args.trials, "load": args.load, "cpus": os.cpu_count()}
    print(json.dumps({"settings": settings, "medians": medians, "ours_over_plain": ratios}, indent=2))


if __name__ == "__main__":
    main()
