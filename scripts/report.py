"""Rewrite a sweep's trials.csv, best.yaml, optimization_results.yaml, report.md and plots from its study.

    python scripts/report.py <sweep_dir> [--storage URL] [--study-name NAME]

The storage defaults to the sweep's own `sqlite:///<sweep_dir>/optuna.db`, and the study to the
only one in it. Works on a finished sweep, an interrupted one, or one still running.
"""

import argparse
import sys
from pathlib import Path


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory (hydra.sweep.dir)")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<sweep_dir>/optuna.db)")
    parser.add_argument("--study-name", help="needed when the storage holds several studies")
    args = parser.parse_args()

    if not args.sweep_dir.is_dir():
        fail(f"sweep_dir {args.sweep_dir}: no such directory")
    storage = args.storage
    if storage is None:
        database = (args.sweep_dir / "optuna.db").resolve()
        if not database.is_file():
            fail(f"--storage: no {database.name} in {args.sweep_dir}; pass the study's URL with --storage")
        storage = f"sqlite:///{database}"
    elif storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        fail(f"--storage {storage}: no such database file")  # SQLite would create an empty one

    from lightning_tune.errors import ConfigError  # after the cheap checks: importing Optuna takes seconds
    from lightning_tune.sweeping.results import load_study, write_progress, write_report

    try:
        study = load_study(storage, args.study_name)
    except ConfigError as error:
        fail(str(error))
    write_progress(study, args.sweep_dir)
    print(write_report(study, args.sweep_dir))


if __name__ == "__main__":
    main()
