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
- `hydra_plugins.hydra_optuna_sweeper._impl.create_optuna_distribution_from_override`: Hydra's sweep syntax
  (`choice`, `range`, `interval`, `tag(log, ...)`) to Optuna distributions, as the Optuna sweeper reads it;
  the plugin has no public function for it.
"""

from typing import Any

import optuna
from hydra.core.override_parser.types import Override
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override


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


def distribution_from_override(override: Override) -> Any:
    """The Optuna distribution of a sweep override (`x=interval(0,1)`), or a plain override's value as a string;
    ValueError for an empty or reversed range, a log range from 0, ..."""
    return create_optuna_distribution_from_override(override)
