"""Settings out of their valid range, refused on one line before anything runs.

Hydra's composition checks keys and types against the schemas (`lightning_tune.schemas`); the values
are checked here, from the `Valid` each schema field carries: by a Hydra callback before Hydra makes the
run or sweep directory (`hydra.callbacks.validate` in conf/train.yaml), and again when a run starts, for
a trial's own values. Free of torch: the callback runs before the job imports it.
"""

import dataclasses
import difflib
import logging
import sys
from typing import Any, Iterator, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lightning_tune.errors import ConfigError
from lightning_tune.schemas import Valid

log = logging.getLogger(__name__)


def schema_fields(node: Any) -> dict[str, Valid]:
    """The valid values of each field of `node`'s schema, where it has one."""
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if schema is None or not dataclasses.is_dataclass(schema):
        return {}
    return {f.name: f.metadata["valid"] for f in dataclasses.fields(schema) if "valid" in f.metadata}


def invalid_settings(node: DictConfig, path: str = "") -> Iterator[str]:
    """`key=value must be ...` for each setting of `node` and below that is outside its valid values."""
    for name, valid in schema_fields(node).items():
        value = OmegaConf.select(node, name, throw_on_missing=False)
        if value is not None and not valid.test(OmegaConf.to_object(value) if OmegaConf.is_config(value) else value):
            plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            shown = f"[{','.join(map(str, plain))}]" if isinstance(plain, (list, tuple)) else plain  # as typed
            yield f"{path}{name}={shown} must be {valid.text}"
    for key in node.keys():
        child = node._get_node(key)
        if key != "hydra" and child._is_missing():  # `key=???` on the command line: nothing to train with
            yield f"{path}{key}=??? must be given a value"
        elif isinstance(child, DictConfig) and not child._is_missing() and not child._is_none() and key != "hydra":
            yield from invalid_settings(child, f"{path}{key}.")


def check_settings(cfg: DictConfig) -> None:
    """Raise ConfigError, on one line, for the first setting of `cfg` outside its valid values."""
    for problem in invalid_settings(cfg):
        raise ConfigError(problem)


def valid_of(cfg: DictConfig, key: str) -> Optional[Valid]:
    """The valid values of setting `key` (`optimizer.lr`) of `cfg`, if its schema gives them."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return schema_fields(node).get(name)


def misspelled_groups(cfg: DictConfig, groups: list[str]) -> Iterator[str]:
    """Top-level keys that are not config groups but are one letter or two away from one: `+optimzer=adam`,
    which Hydra's own hint suggests for a misspelled group, adds a key nothing reads."""
    for key in cfg.keys():
        close = difflib.get_close_matches(str(key), groups, n=1, cutoff=0.8)
        if key not in groups and close:
            yield f"{key} is no config group or setting; did you mean {close[0]}={OmegaConf.select(cfg, str(key))}?"


class ValidateConfig(Callback):
    """Refuses a run or sweep whose settings are out of range, before Hydra makes its directory; warns
    when a sweep preset is given without `-m`."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, sweep=False)
        preset = config.hydra.runtime.choices.get("hparams_search")
        if preset:
            log.warning("hparams_search=%s sweeps only with -m; without it, this is one run of its defaults", preset)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, sweep=True)

    @staticmethod
    def _check(config: DictConfig, sweep: bool) -> None:
        groups = [group for group in config.hydra.runtime.choices if "/" not in group]
        problems = [*invalid_settings(config), *misspelled_groups(config, groups)]
        if sweep and OmegaConf.select(config, "hydra.sweeper.n_trials") is not None:  # our sweeper's settings
            problems += invalid_settings(config.hydra.sweeper, "hydra.sweeper.")
        if problems:
            sys.exit(f"error: {problems[0]}")
