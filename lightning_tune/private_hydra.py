"""Hydra's private names that lightning-tune uses, all in this module; checked against hydra-core 1.4.0rc3.

tests/test_private_apis.py fails, naming the name and Hydra's version, when one is gone, takes other
arguments, or acts otherwise than Hydra's public API (whose result it is compared with).

- The composition cache (`sweeping/composition.py`) runs the steps of Hydra's own composition
  (`ConfigLoaderImpl._load_configuration_impl`), keeping what trials share. Hydra's public API composes a
  whole config only (`hydra.compose`, `ConfigLoader.load_configuration` and `load_sweep_config`): about
  70 ms a trial, which the cache saves. The steps, from `hydra._internal`: `ConfigLoaderImpl` (its
  `repository`, `validate_sweep_overrides_legal`, `_process_config_searchpath`,
  `_compose_config_from_defaults_list`, `_apply_overrides_to_config`,
  `_ensure_sweep_config_controller_unchanged`), `CachingConfigRepository` (whose `group_exists` and
  `get_sources` composition.py calls) and `create_defaults_list` (its result's `defaults` and
  `overrides.known_choices`).
- `Singleton.get_state`, as hydra-joblib-launcher's `_core.launch` calls it for every launch: Hydra's global
  state (the ConfigStore, the sweep's config, ...), deep-copied and pickled again for each trial sent to a
  worker process, about 40 ms of the sweep's own time per trial. `joblib_state_once` has it return one copy
  per sweep, pickled once; the launcher has no other way in.
- `JobReturn._return_value` of a failed job, its error: the public `JobReturn.return_value` raises it
  instead, writing "Error executing job with overrides: ..." to stderr, which a sweep's console must not
  show for a trial whose failure it records. (It is written by the public setter, `ret.return_value = error`.)
"""

import pickle
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.config_repository import CachingConfigRepository
from hydra._internal.defaults_list import create_defaults_list
from hydra.core.override_parser.types import Override
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn
from hydra.types import RunMode
from omegaconf import DictConfig


def searchpath_repository(
    loader: ConfigLoaderImpl, config_name: Optional[str], overrides: list[Override]
) -> CachingConfigRepository:
    """The config repository with the primary config's and the overrides' search path, as Hydra builds it."""
    repo = CachingConfigRepository(loader.repository)
    loader._process_config_searchpath(config_name, overrides, repo)
    return repo


def compose_defaults(
    loader: ConfigLoaderImpl, repo: CachingConfigRepository, config_name: Optional[str], overrides: list[Override]
) -> tuple[DictConfig, dict[str, Any]]:
    """Hydra's composition of the defaults list, before any value override: the config, and the group
    choices made (`hydra.runtime.choices`)."""
    defaults_list = create_defaults_list(
        repo=repo, config_name=config_name, overrides_list=overrides, prepend_hydra=True, skip_missing=False
    )
    cfg = loader._compose_config_from_defaults_list(defaults=defaults_list.defaults, repo=repo)
    return cfg, dict(defaults_list.overrides.known_choices)


def validate_trial_overrides(loader: ConfigLoaderImpl, overrides: list[Override]) -> None:
    """Hydra's refusal of a sweep (`a=1,2`) in one trial's overrides."""
    loader.validate_sweep_overrides_legal(overrides=overrides, run_mode=RunMode.RUN, from_shell=True)


def apply_value_overrides(overrides: list[Override], cfg: DictConfig) -> None:
    """`key=value`, `+key=value`, `~key`, ... applied to `cfg` in place, by Hydra's own rules and errors."""
    ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)


def ensure_controller_unchanged(master_config: DictConfig, sweep_config: DictConfig) -> None:
    """Hydra's refusal of a trial config whose launcher or sweeper differs from the sweep's."""
    ConfigLoaderImpl._ensure_sweep_config_controller_unchanged(master_config=master_config, sweep_config=sweep_config)


def failed_job_error(ret: JobReturn) -> Any:
    """What a failed job raised (or the error its launcher gave it), without raising it."""
    return ret._return_value


class PickledState(dict):
    """Hydra's global state, which pickles as the bytes it was pickled to once: unpickled, a plain dict."""

    def __init__(self, state: dict[str, Any]) -> None:
        import cloudpickle  # as joblib sends tasks: the state holds OmegaConf's resolvers, local functions

        super().__init__(state)
        self.pickled = cloudpickle.dumps(state)

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return pickle.loads, (self.pickled,)


_state_lock = threading.Lock()
_state_users = 0  # launches under way, from the sweep's slot threads
_hydras_get_state = Singleton.__dict__["get_state"]


@contextmanager
def joblib_state_once(state: PickledState) -> Iterator[None]:
    """Within the block, `Singleton.get_state()` gives `state`: the joblib launcher sends it to the trial's
    worker process as the bytes pickled once. Safe for the launches of several threads at once."""
    global _state_users
    with _state_lock:
        if _state_users == 0:
            Singleton.get_state = staticmethod(lambda: state)  # type: ignore[method-assign]
        _state_users += 1
    try:
        yield
    finally:
        with _state_lock:
            _state_users -= 1
            if _state_users == 0:
                Singleton.get_state = _hydras_get_state  # type: ignore[method-assign]
