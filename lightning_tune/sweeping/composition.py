"""Trial configs composed once per combination of config-group choices, not once per trial.

Hydra composes every trial's config from scratch: a deep copy of the ConfigStore, the defaults tree,
every YAML file read and merged again (about 70 ms here, as long as a small trial's whole epoch).
The trials of a sweep differ mostly in values, and in a handful of group choices. So the composed
config is kept per group choices, and each trial's value overrides are applied to a copy of it, by
Hydra's own function. The steps mirror hydra-core 1.4's `ConfigLoaderImpl._load_configuration_impl`,
through Hydra's private names, which `lightning_tune.private_hydra` holds; `tests/test_composition.py`
checks that the result is Hydra's own, key for key. Anything unusual in a trial's overrides (adding or
deleting a group, a package, a `hydra.*` key) is left to Hydra.
"""

import copy
import os
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra import __version__, version
from hydra.conf import ConfigSourceInfo
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobRuntime
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from lightning_tune.private_hydra import (
    CachingConfigRepository,
    ConfigLoaderImpl,
    apply_value_overrides,
    compose_defaults,
    ensure_controller_unchanged,
    searchpath_repository,
    validate_trial_overrides,
)


@dataclass
class Composed:
    """A config composed from one set of group choices, before any value override."""

    config: DictConfig
    known_choices: dict[str, Any]
    repo: CachingConfigRepository


@dataclass
class Compositions:
    """What one sweep's loader has composed, in one process."""

    # by config name and hydra overrides: the repository they search, and the overrides parsed
    repos: dict[tuple[Any, ...], tuple[CachingConfigRepository, list[Override]]] = field(default_factory=dict)
    composed: dict[tuple[Any, ...], Composed] = field(default_factory=dict)  # ... and the trial's group choices


IN_THIS_PROCESS: dict[str, Compositions] = {}  # by the sweep's loader: shared by the copies a process unpickles


class TrialConfigLoader:
    """Hydra's config loader, with `load_sweep_config` reusing compositions; the rest is Hydra's."""

    def __init__(self, loader: ConfigLoaderImpl) -> None:
        self.loader = loader
        self.token = uuid.uuid4().hex  # names this sweep's loader in every process its copies reach
        self.compositions = IN_THIS_PROCESS.setdefault(self.token, Compositions())

    def __getattr__(self, name: str) -> Any:
        if "loader" not in self.__dict__:  # while unpickling
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __getstate__(self) -> dict[str, Any]:
        """Sent to the processes that run trials without the compositions: the joblib launcher sends a copy
        with every trial, and each process keeps the compositions of the copies it has received."""
        return {"loader": self.loader, "token": self.token}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.compositions = IN_THIS_PROCESS.setdefault(self.token, Compositions())

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """The trial's config, in the sweep's own directory.

        `hydra.sweep.dir` is the sweep's, resolved from the command line: the presets name it by a hash of
        the command's overrides (`lt.sweep_id`), which would otherwise hash each trial's own overrides too
        and scatter the trials over directories of their own.
        """
        hydra_lines = list(OmegaConf.to_container(master_config.hydra.overrides.hydra))
        try:
            config = self._compose(master_config.hydra.job.config_name, hydra_lines, list(sweep_overrides))
        except OmegaConfBaseException as error:  # as Hydra's `load_configuration` wraps it
            raise ConfigCompositionException().with_traceback(sys.exc_info()[2]) from error
        if config is None:
            config = self.loader.load_sweep_config(master_config, sweep_overrides)
        else:  # as Hydra's own: a trial may not change the launcher or the sweeper
            ensure_controller_unchanged(master_config, config)
            OmegaConf.copy_cache(from_config=master_config, to_config=config)
        config.hydra.sweep.dir = str(master_config.hydra.sweep.dir)
        return config

    def _compose(self, config_name: Optional[str], hydra_lines: list[str], trial_lines: list[str]) -> Optional[DictConfig]:
        """The trial's config, or None when its overrides need Hydra's full composition."""
        parser = OverridesParser.create()
        base_key = (config_name, tuple(hydra_lines))
        repos, composed_by_key = self.compositions.repos, self.compositions.composed
        if base_key not in repos:  # the same for every trial of the sweep: parsed once
            hydra_overrides = parser.parse_overrides(hydra_lines)
            repo = searchpath_repository(self.loader, config_name, hydra_overrides)
            repos[base_key] = (repo, hydra_overrides)
        repo, hydra_overrides = repos[base_key]
        try:
            trial_overrides = parser.parse_overrides(trial_lines)
        except OverrideParseException:
            parser.parse_overrides(hydra_lines + trial_lines)  # Hydra's own error, which counts the hydra lines too
            raise
        choices = split_choices(trial_overrides, repo)
        if choices is None:
            return None
        key = (*base_key, tuple(o.input_line for o in choices))
        if key not in composed_by_key:
            composed_by_key[key] = self._compose_base(config_name, hydra_overrides + choices)
        composed = composed_by_key[key]

        parsed = hydra_overrides + trial_overrides
        validate_trial_overrides(self.loader, parsed)
        cfg = copy.deepcopy(composed.config)
        values = [o for o in parsed if not is_choice(o, composed.repo)]
        apply_value_overrides(values, cfg)
        for override in parsed:
            if override.is_hydra_override():
                cfg.hydra.overrides.hydra.append(override.input_line)
            else:
                cfg.hydra.overrides.task.append(override.input_line)
        with open_dict(cfg.hydra):
            cfg.hydra.runtime.choices.update(composed.known_choices)
            for key in cfg.hydra.job.env_copy:
                cfg.hydra.job.env_set[key] = os.environ[key]
        cfg.hydra.runtime.version = __version__
        cfg.hydra.runtime.version_base = version.getbase()
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.runtime.config_sources = [
            ConfigSourceInfo(path=x.path, schema=x.scheme(), provider=x.provider) for x in composed.repo.get_sources()
        ]
        if "name" not in cfg.hydra.job:
            cfg.hydra.job.name = JobRuntime().get("name")
        cfg.hydra.job.config_name = config_name
        return cfg

    def _compose_base(self, config_name: Optional[str], overrides: list[Override]) -> Composed:
        """Hydra's composition up to, not including, the value overrides."""
        repo = searchpath_repository(self.loader, config_name, overrides)
        cfg, known_choices = compose_defaults(self.loader, repo, config_name, overrides)
        OmegaConf.set_struct(cfg, True)
        OmegaConf.set_readonly(cfg.hydra, False)
        return Composed(cfg, known_choices, repo)


def is_choice(override: Override, repo: CachingConfigRepository) -> bool:
    """`group=option`, as Hydra's defaults list tells a group choice from a value."""
    return repo.group_exists(override.key_or_group) and not isinstance(override.value(), dict)


def split_choices(overrides: list[Override], repo: CachingConfigRepository) -> Optional[list[Override]]:
    """The plain `group=option` overrides of a trial, or None if any override needs Hydra's own
    composition: a sweep, a group added, deleted or placed in a package, or a `hydra.*` key."""
    choices = []
    for override in overrides:
        if override.is_sweep_override() or override.is_hydra_override():
            return None
        if is_choice(override, repo):
            if override.is_add() or override.is_delete() or override.is_force_add() or override.package is not None:
                return None
            choices.append(override)
    return choices
