"""Optuna's and the Optuna sweeper plugin's names that the sweep uses against their advice, all in this
module; checked against optuna 5.0.0 and hydra-optuna-sweeper 1.4.0rc3.

tests/test_private_apis.py fails, naming the name and the library's version, when one is gone, takes other
arguments, or acts otherwise than the public API it is compared with.

- `optuna.trial.Trial(study, trial_id)`: a running trial, rebuilt in the process that trains it (the sweep's
  own, a joblib worker, a SLURM job) to `report` to it and ask `should_prune`. Optuna's docs advise against
  calling the constructor, and give no other way to reach a trial that another process asked for
  (optuna/optuna#2987, closed without one); `study.ask()` would start a new trial.
- `BaseStorage.get_study_id_from_name`, `get_trial_id_from_study_id_trial_number` and `set_trial_user_attr`:
  the id that `Trial` takes, and the user attrs of a trial that a killed sweep left running, which no `Trial`
  in this process holds. Optuna's docs say storages are "not supposed to be directly accessed by library
  users"; `Study` sets attrs of the study, and `tell` finishes a trial by number, but nothing sets a
  trial's attrs by number (`Trial(...)` would also call the sweep's sampler's `before_trial`).
- `RDBStorage.record_heartbeat` and `_get_stale_trial_ids`: Optuna's heartbeat of a running trial, which
  Optuna starts only inside `Study.optimize` (and `Study.ask` warns when the storage has one), and its list of
  running trials without a recent beat, which only `fail_stale_trials` reads and which fails them unasked: a
  worker beats for its own trial, and a trial whose worker SLURM still holds, requeued, must not be failed.
- `hydra_plugins.hydra_optuna_sweeper._impl.create_optuna_distribution_from_override`: Hydra's sweep syntax
  (`choice`, `range`, `interval`, `tag(log, ...)`) to Optuna distributions, as the Optuna sweeper reads it;
  the plugin has no public function for it.
"""

import functools
import threading
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import optuna
from hydra.core.override_parser.types import Override
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

from lightning_tune.sweeping.study import SQLITE_LOCK_WAIT_S


def running_trial(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> optuna.trial.Trial:
    """Trial `number` of `study`, loaded from `storage`, to report to and set attrs on from any process."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


def set_running_trial_attrs(
    storage: optuna.storages.BaseStorage, study_name: str, number: int, attrs: dict[str, Any]
) -> None:
    """User attrs of trial `number`, still running, that no `Trial` object of this process holds."""
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


@contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, study_name: str, number: int, interval_s: float) -> Iterator[None]:
    """Record trial `number`'s heartbeat as the block starts and every `interval_s` while it runs, on a database
    storage (a journal has none: nothing is recorded)."""
    if not isinstance(storage, optuna.storages.RDBStorage):
        yield
        return
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            storage.record_heartbeat(trial_id)

    storage.record_heartbeat(trial_id)  # the first at once, before the block

    thread = threading.Thread(target=beat, name=f"heartbeat-{number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def stale_trial_numbers(url: str, study_name: str, grace_s: float) -> set[int]:
    """The running trials of a database storage's study whose last heartbeat is older than `grace_s` (a trial
    that never beat is not among them); none for a journal."""
    if not url.startswith(("sqlite", "postgresql", "mysql")):
        return set()
    storage = _heartbeat_storage(url, grace_s)
    study_id = storage.get_study_id_from_name(study_name)
    return {storage.get_trial_number_from_id(trial_id) for trial_id in storage._get_stale_trial_ids(study_id)}


@functools.lru_cache(maxsize=None)
def _heartbeat_storage(url: str, grace_s: float) -> optuna.storages.RDBStorage:
    """A second connection whose only use is the stale-trial query, which needs heartbeats set on the storage:
    on the study's own storage, each `ask` would warn that heartbeats are for `optimize`."""
    engine = {"connect_args": {"timeout": SQLITE_LOCK_WAIT_S}} if url.startswith("sqlite") else None
    with warnings.catch_warnings():  # both arguments are experimental: this module is where that is known
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=max(1, int(grace_s) // 2), grace_period=max(1, int(grace_s))
        )


def distribution_from_override(override: Override) -> Any:
    """The Optuna distribution of a sweep override (`x=interval(0,1)`), or a plain override's value as a string;
    ValueError for an empty or reversed range, a log range from 0, ..."""
    return create_optuna_distribution_from_override(override)
