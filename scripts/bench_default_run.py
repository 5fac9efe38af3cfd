"""Time the README's main job, `python train.py` (CNN on digits, defaults), and report its test accuracy.

    python scripts/bench_default_run.py [--repeats 3]

Prints JSON: wall seconds of each run (process start to exit, imports included) and the metrics.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as run_dir:
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "train.py", f"hydra.run.dir={run_dir}"], cwd=ROOT, check=True, capture_output=True
            )
            wall = time.perf_counter() - start
            metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
        runs.append({"wall_s": round(wall, 2), "test_acc": round(metrics["test"]["acc"], 4), "epochs": metrics["epochs"]})
    print(json.dumps({"command": "python train.py", "runs": runs, "max_wall_s": max(r["wall_s"] for r in runs)}, indent=2))


if __name__ == "__main__":
    main()
