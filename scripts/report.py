"""Rewrite a sweep's trials.csv, best.yaml, optimization_results.yaml, report.md and plots from its study.

    python scripts/report.py <sweep_dir> [--storage URL] [--study-name NAME]

The storage defaults to the sweep's own `optuna.db` (SQLite) or `optuna.journal` (journal file), and the
study to the only one in it; `--storage journal:<file>` names a journal file, in the sweep directory unless
its path is absolute, as `hydra.sweeper.storage` does. Works on a finished sweep, an interrupted one, or one still running.
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
    parser.add_argument("--storage", help="Optuna storage URL or journal:<file> (default: the sweep directory's own)")
    parser.add_argument("--study-name", help="needed when the storage holds several studies")
    args = parser.parse_args()

    if not args.sweep_dir.is_dir():
        fail(f"sweep_dir {args.sweep_dir}: no such directory")
    sweep_dir = args.sweep_dir.resolve()
    storage = args.storage
    if storage is None:
        found = [name for name in ("optuna.db", "optuna.journal") if (sweep_dir / name).is_file()]
        if len(found) != 1:
            held = "both optuna.db and optuna.journal" if found else "no optuna.db or optuna.journal"
            fail(f"--storage: {args.sweep_dir} holds {held}; pass the study's storage with --storage")
        storage = f"sqlite:///{sweep_dir / found[0]}" if found[0] == "optuna.db" else f"journal:{sweep_dir / found[0]}"
    elif storage.startswith("journal:"):
        storage = f"journal:{sweep_dir / storage.removeprefix('journal:')}"
        if not Path(storage.removeprefix("journal:")).is_file():
            fail(f"--storage {args.storage}: no such journal file")  # Optuna would create an empty one
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
