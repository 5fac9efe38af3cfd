"""How each study storage carries many trial processes writing at once: SQLite, the journal file, PostgreSQL.

    python scripts/bench_storages.py --workers 8 32 [--trials 10] [--steps 10] [--postgres URL]

Each of `--workers` processes (spawned, as joblib's and SLURM's are) opens the storage as a sweep's trials do
(`lightning_tune.sweeping.study.open_storage`) and runs `--trials` trials of its own in one shared study:
ask, then `--steps` times report a value and ask the median pruner whether to stop (which reads every
trial's values), then tell. No training: the storage is all there is to wait for. Prints one JSON line per
storage and worker count: wall time (from when every worker has opened the study to the last tell), trials
finished per second, how many trials the study holds and in which states (RUNNING left = a stuck trial), and
the errors the workers met, by message. PostgreSQL needs `--postgres`, a URL as
scripts/start-postgres prints it, on which the role may create databases: each run gets a new database.
"""

import argparse
import json
import multiprocessing
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import optuna

STUDY = "bench"


def worker(url: str, trials: int, steps: int, seed: int, errors: Any, start: Any) -> None:
    """`trials` trials of the shared study, once every worker has opened it (`start`, a barrier); each error's
    first line goes to `errors`, and the worker goes on."""
    from lightning_tune.sweeping.study import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rng = random.Random(seed)
    try:
        study = optuna.load_study(study_name=STUDY, storage=open_storage(url), pruner=optuna.pruners.MedianPruner())
    except Exception as error:  # noqa: BLE001 - counted, as below; the others must not wait for this worker
        errors.put(f"opening the study: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
        start.wait()
        return
    start.wait()
    for _ in range(trials):
        try:
            trial = study.ask()
            x = trial.suggest_float("x", 0.0, 1.0)
            for step in range(steps):
                trial.report(x * (step + 1) + rng.random() * 0.01, step)
                if trial.should_prune():
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    break
            else:
                study.tell(trial, x)
        except Exception as error:  # noqa: BLE001 - counted: what a trial process would die of
            errors.put(f"{type(error).__name__}: {str(error).splitlines()[0][:160]}")


def run(url: str, workers: int, trials: int, steps: int) -> dict[str, Any]:
    from lightning_tune.sweeping.study import open_storage

    optuna.create_study(study_name=STUDY, storage=open_storage(url), direction="maximize")
    context = multiprocessing.get_context("spawn")
    errors, start = context.Queue(), context.Barrier(workers + 1)
    processes = [context.Process(target=worker, args=(url, trials, steps, seed, errors, start)) for seed in range(workers)]
    for process in processes:
        process.start()
    start.wait()  # every worker has imported and opened the study
    started = time.monotonic()
    for process in processes:
        process.join()
    wall = time.monotonic() - started
    found: Counter = Counter()
    while not errors.empty():
        found[errors.get()] += 1
    held = optuna.load_study(study_name=STUDY, storage=open_storage(url)).get_trials(deepcopy=False)
    states = Counter(trial.state.name for trial in held)
    finished = states["COMPLETE"] + states["PRUNED"]
    return {
        "workers": workers, "trials_asked": workers * trials, "trials_held": len(held),
        "distinct_numbers": len({trial.number for trial in held}), "states": dict(states),
        "wall_s": round(wall, 1), "finished_per_s": round(finished / wall, 1), "errors": dict(found),
        "worker_exit_codes": sorted({process.exitcode for process in processes}),
    }  # fmt: skip


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new database on `server` (the URL's role creates it) for one run, dropped after it."""
    import sqlalchemy

    name = f"lt_bench_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sqlalchemy.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        engine.dispose()


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--trials", type=int, default=10, help="trials per worker")
    parser.add_argument("--steps", type=int, default=10, help="reports (and pruning checks) per trial")
    parser.add_argument("--postgres", help="a PostgreSQL URL (scripts/start-postgres prints one)")
    parser.add_argument("--storages", nargs="+", choices=["sqlite", "journal", "postgres"], default=["sqlite", "journal", "postgres"])
    args = parser.parse_args(argv)
    for workers in args.workers:
        for kind in args.storages:
            if kind == "postgres" and not args.postgres:
                print(json.dumps({"storage": kind, "skipped": "no --postgres URL"}), flush=True)
                continue
            with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
                url = {
                    "sqlite": lambda: f"sqlite:///{Path(tmp) / 'optuna.db'}",
                    "journal": lambda: f"journal:{Path(tmp) / 'optuna.journal'}",
                    "postgres": lambda: stack.enter_context(fresh_database(args.postgres)),
                }[kind]()
                result = run(url, workers, args.trials, args.steps)
                print(json.dumps({"storage": kind, **result}), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
