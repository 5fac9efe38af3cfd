"""The README's numbers, measured: its commands run as printed, in a scratch copy of the repository with the
default run and sweep directories, timed from process start to exit.

    python scripts/bench_readme.py [--repeats 2] [--only default,resnet_adam] [--threads] [--lr-find]

Prints JSON. For each command: wall seconds per run, and the val/test accuracy of the run (for a sweep, of
its best trial, and every trial's value). `--threads` times the default job with our `threads` default
and with torch's own (`threads=null`), alone and beside one busy process (a CPU hog). `--lr-find` compares test accuracy
with and without `lr_find=true` over seeds, on the default job and on SGD with a poor lr.
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {  # the README's, verbatim
    "default": "python train.py",
    "iris_logreg_grid": "python train.py -m experiment=iris_logreg_grid",
    "mlp_l2_dropout": "python train.py -m experiment=mlp_l2_dropout",
    "resnet_adam": "python train.py -m experiment=resnet_adam",
}
NOT_IN_A_CLONE = {".git", ".venv", "outputs", "multirun", "data", "lightning_logs", ".pytest_cache", "build"}


def scratch_copy() -> Path:
    """A copy of the repository as a clone has it, with no outputs of earlier runs."""
    copy = Path(tempfile.mkdtemp()) / "repo"
    shutil.copytree(ROOT, copy, ignore=lambda d, names: set(names) & NOT_IN_A_CLONE if Path(d) == ROOT else set())
    return copy


def run(command: str, env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """`command` through the shell in a fresh scratch copy: its wall time and what its run or sweep left."""
    repo = scratch_copy()
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    start = time.perf_counter()
    subprocess.run(["bash", "-c", command], cwd=repo, env=environment, check=True, capture_output=True)
    result: dict[str, Any] = {"wall_s": round(time.perf_counter() - start, 2)}
    sweeps = [path for path in (repo / "multirun").glob("*") if (path / "trials.csv").is_file()]
    if sweeps:
        rows = list(csv.DictReader((sweeps[0] / "trials.csv").open()))
        best = max(rows, key=lambda row: float(row["value"]))
        result["trials"] = [{k: v for k, v in row.items() if k not in ("run_dir", "job_id", "log", "fail_reason")} for row in rows]
        run_dir = sweeps[0] / best["number"]
    else:
        run_dir = next(path.parent for path in repo.glob("*/**/metrics.json") if not path.parent.name.startswith("fold_"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result.update({
        "val_acc": round(metrics["val"]["acc"], 4),
        "test_acc": round(metrics.get("test", {}).get("acc", float("nan")), 4),
        "lr": metrics.get("lr"),
    })
    shutil.rmtree(repo.parent)
    return result


def threads(repeats: int) -> dict[str, Any]:
    """Wall seconds of the default job with our `threads` default (1 here) and with torch's own, one per
    core (`threads=null`): alone, then beside one busy process."""
    settings = {"threads default (1)": COMMANDS["default"], "threads=null": f"{COMMANDS['default']} threads=null"}
    table = {f"idle, {name}": [run(command)["wall_s"] for _ in range(repeats)] for name, command in settings.items()}
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for name, command in settings.items():
            table[f"one busy process, {name}"] = [run(command)["wall_s"] for _ in range(repeats)]
    finally:
        hog.kill()
    return table


def lr_find_comparison(seeds: list[int]) -> dict[str, Any]:
    """Mean test accuracy over `seeds`, without and with `lr_find=true`."""
    cases = {"default job": "", "optimizer=sgd optimizer.lr=0.001": " optimizer=sgd optimizer.lr=0.001"}
    table = {}
    for name, extra in cases.items():
        for finder in ("false", "true"):
            runs = [run(f"python train.py{extra} lr_find={finder} seed={seed}", {"OMP_NUM_THREADS": "1"}) for seed in seeds]
            accs = [r["test_acc"] for r in runs]
            table[f"{name}, lr_find={finder}"] = {"test_acc": accs, "mean": round(statistics.mean(accs), 4),
                                                  "lr": [float(f"{r['lr']:.3g}") for r in runs]}  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", default=",".join(COMMANDS), help=f"comma-separated, of: {', '.join(COMMANDS)}")
    parser.add_argument("--threads", action="store_true", help="also the default job by thread count, idle and loaded")
    parser.add_argument("--lr-find", action="store_true", help="also lr_find against none, seeds 0-5 and 0-2")
    args = parser.parse_args()
    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]}
    for name in args.only.split(","):
        runs = [run(COMMANDS[name]) for _ in range(args.repeats)]
        report[name] = {"command": COMMANDS[name], "runs": runs}
    if args.threads:
        report["default job, threads"] = threads(args.repeats)
    if args.lr_find:
        report["lr_find"] = lr_find_comparison(list(range(6)))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
