"""The search space of a sweep: Hydra's sweep syntax parsed into Optuna distributions, fitted to the
config groups each trial chooses, and enumerated for the grid.

A param belongs to a config group by its first key (`optimizer.momentum` to `optimizer`). Where that
group's option is swept too, the param is suggested only in trials whose option has the key (a
conditional search space, as Optuna's define-by-run allows): an adam/sgd sweep tunes momentum for SGD
alone. A param that no option of its group has (`model.depth` with `model=linear`), or a swept option
that does not compose with the rest of the command (`optimizer=sgd` beside an experiment that sets Adam's
`eps`), is left out when a preset or an experiment brought it, and a param is refused when the command
line asked for it.
"""

import difflib
import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial

from lightning_tune.errors import ConfigError
from lightning_tune.schemas import Valid
from lightning_tune.sweeping.private_optuna import distribution_from_override
from lightning_tune.validation import TOP_LEVEL, valid_of

GROUP_OPTION = "_option_"  # in nested params: the config group's own option, e.g. optimizer: {_option_: ...}
PARAMS_KEY = "hydra.sweeper.params"
_ABSENT = object()  # OmegaConf.select's answer for a key that is not there


def flatten_params(params: Any, prefix: str = "") -> list[str]:
    """`{optimizer: {_option_: choice(adam,sgd), lr: ...}}` -> ["optimizer=choice(adam,sgd)", "optimizer.lr=..."]."""
    arguments = []
    for key, value in params.items():
        name = prefix if key == GROUP_OPTION else f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            arguments += flatten_params(value, name)
        else:
            arguments.append(f"{name}={value}")
    return arguments


def parse_search_space(arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
    """Swept and fixed params from `key=sweep` strings, as the Optuna sweeper parses them: `range`'s stop
    is exclusive, as in Python and Hydra (`range(1,5)` is 1 to 4), a float range is Optuna's stepped float."""
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        name = override.get_key_element()
        tags = set(getattr(override.value(), "tags", None) or ())
        if override.is_interval_sweep() and tags - {"log"}:  # the sweeper reads `log` and ignores any other tag
            raise ConfigError(f"{override.input_line}: unknown tag {sorted(tags - {'log'})[0]!r}; an interval takes "
                              f"tag(log, interval(low, high)) for a log scale, or no tag")  # fmt: skip
        try:
            value = distribution_from_override(override)
        except ValueError as error:  # Optuna's word on an empty or reversed range, a log range from 0, ...
            raise ConfigError(f"{override.input_line}: {str(error).splitlines()[0]}") from None
        if isinstance(value, BaseDistribution):
            distributions[name] = value
        else:
            fixed[name] = value
    return distributions, fixed


def suggest(trial: Trial, name: str, distribution: BaseDistribution) -> Any:
    """`trial`'s value of `name` from `distribution`, through Optuna's public suggest API."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    low, high = distribution.low, distribution.high
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, low, high, step=distribution.step, log=distribution.log)
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, low, high, step=distribution.step, log=distribution.log)
    raise TypeError(f"{name}: no suggest call for {distribution!r}")  # the Optuna sweeper makes no other kind


def typed_param_names(hydra_overrides: Iterable[str], task_overrides: Iterable[str]) -> set[str]:
    """The params the command line itself sweeps or sets: `hydra.sweeper.params.<name>=...` and sweeps
    such as `optimizer.lr=choice(...)`; the rest come from a preset or an experiment."""
    names = set()
    for line in hydra_overrides:
        key = line.split("=", 1)[0].lstrip("+~")
        if key.startswith(f"{PARAMS_KEY}."):
            parts = key[len(PARAMS_KEY) + 1 :].split(".")
            names.add(".".join(part for part in parts if part != GROUP_OPTION))
    for override in OverridesParser.create().parse_overrides(list(task_overrides)):
        if override.is_sweep_override():
            names.add(override.get_key_element())
    return names


def grid_choices(name: str, distribution: BaseDistribution) -> list[Any]:
    """Every value of a discrete distribution, each once; a continuous interval has no grid."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        count = int(round((distribution.high - distribution.low) / distribution.step)) + 1
        return [round(distribution.low + i * distribution.step, 12) for i in range(count)]
    raise ConfigError(
        f"{PARAMS_KEY}.{name} is a continuous interval, which the grid sampler cannot enumerate; "
        f"use choice(...) or range(start,stop,step)"
    )


@dataclass
class SearchSpace:
    """Distributions to suggest and values to set in every trial, each param with the options of its
    group that have it (`requires`: param -> (group, options); a param not there applies to every trial)."""

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Any]
    requires: dict[str, tuple[str, frozenset]] = field(default_factory=dict)

    def applies(self, name: str, chosen: Mapping[str, Any]) -> bool:
        """Whether param `name` exists in a trial whose group options are `chosen` ({group: option})."""
        if name not in self.requires:
            return True
        group, options = self.requires[name]
        return chosen.get(group) in options

    def ordered(self) -> list[str]:
        """Swept names with the group options first: the other params depend on them."""
        return sorted(self.distributions, key=lambda name: name in self.requires)

    def categorical_or_conditional(self) -> list[str]:
        """The swept params that CMA-ES cannot model and samples at random, trial by trial: choices
        (categorical), and params that only some trials have."""
        return [name for name, distribution in self.distributions.items()
                if isinstance(distribution, CategoricalDistribution) or name in self.requires]  # fmt: skip

    def grid(self, seed: int) -> list[dict[str, Any]]:
        """Every point of a discrete space once (a conditional param only with the options that have it),
        in an order shuffled by `seed`."""
        ungated = [name for name in self.distributions if name not in self.requires]
        gated = [name for name in self.distributions if name in self.requires]
        points = []
        for values in itertools.product(*(grid_choices(name, self.distributions[name]) for name in ungated)):
            chosen = dict(zip(ungated, values))
            present = [name for name in gated if self.applies(name, chosen)]
            for present_values in itertools.product(*(grid_choices(n, self.distributions[n]) for n in present)):
                points.append({**chosen, **dict(zip(present, present_values))})
        random.Random(seed).shuffle(points)
        return points


def fit_to_groups(
    space: SearchSpace,
    base_choices: Mapping[str, Any],
    option_config: Callable[[str, Any], Union[DictConfig, str]],
    typed: set[str],
) -> tuple[SearchSpace, list[str]]:
    """`space` fitted to the config groups: each param tied to the options of its group that have it; the
    params that no option has, and the swept options that do not compose with the rest of the command,
    left out where a preset or an experiment brought them. Returns the space and a note on each thing left out.

    `base_choices` are the sweep's own group choices ({"model": "cnn", ...}); `option_config(group, option)`
    is the sweep's config with that option, or Hydra's reason why it does not compose. What the command line
    itself sweeps (`typed`) is kept: a param no option has, or an option that does not exist, raises
    ConfigError; an option that does not compose with the rest fails its trials with Hydra's reason.
    """
    distributions, fixed = dict(space.distributions), dict(space.fixed)
    notes: list[str] = []
    for group, distribution in space.distributions.items():
        if group in base_choices and group in typed and isinstance(distribution, CategoricalDistribution):
            for option in distribution.choices:  # a typed option that no file or schema has: a typo, refused
                if isinstance(reason := option_config(group, option), str) and "Could not find" in reason:
                    raise ConfigError(f"the sweep of {group} has {group}={option}: {reason}")
        if group in base_choices and group not in typed and isinstance(distribution, CategoricalDistribution):
            failing = {o: r for o in distribution.choices if isinstance(r := option_config(group, o), str)}
            if failing and len(failing) < len(distribution.choices):
                distributions[group] = CategoricalDistribution([o for o in distribution.choices if o not in failing])
                notes += [f"{group}={option} does not compose here ({reason})" for option, reason in failing.items()]

    def has(group: str, option: Any, name: str) -> bool:
        config = option_config(group, option)
        return isinstance(config, str) or OmegaConf.select(config, name, default=_ABSENT) is not _ABSENT

    requires: dict[str, tuple[str, frozenset]] = {}
    missing: dict[str, list[str]] = {}
    for name in [*distributions, *fixed]:
        group = name.split(".", 1)[0]
        if "." not in name or group not in base_choices:
            continue
        if isinstance(distributions.get(group), CategoricalDistribution):
            options = list(distributions[group].choices)
        else:
            options = [fixed.get(group, base_choices[group])]
        having = [option for option in options if has(group, option, name)]
        if len(having) == len(options):
            continue
        if having:
            requires[name] = (group, frozenset(having))
            continue
        shown = ",".join(map(str, options))
        if name in typed:
            raise ConfigError(f"{PARAMS_KEY}.{name}: {group}={shown} has no key {name.split('.', 1)[1]!r}")
        missing.setdefault(f"{group}={shown}", []).append(name)
        distributions.pop(name, None)
        fixed.pop(name, None)
    notes += [f"{choice} has no {', '.join(names)}" for choice, names in missing.items()]
    fitted = SearchSpace(distributions, fixed, requires)
    check_values(fitted, base_choices, option_config)
    return fitted, notes


def check_known(space: SearchSpace, config: DictConfig, groups: Iterable[str], typed: set[str]) -> None:
    """Raise ConfigError for a param that is neither a config group nor a setting of the sweep's config
    (`hydra.sweeper.params.optimzer.lr`), whose every trial would fail to compose. `+key` adds a key: kept."""
    groups = list(groups)
    for name in [*space.distributions, *space.fixed]:
        top, shown = name.split(".", 1)[0], name if name in typed else f"{PARAMS_KEY}.{name}"
        if name[0] in "+~":  # adds a key: refused only where it adds one beside a group it misspells
            added = top.lstrip("+~")
            if added not in groups and added not in config and (close := difflib.get_close_matches(added, groups, n=1)):
                raise ConfigError(
                    f"{shown} adds a key nothing reads; did you mean {close[0]}{name[len(top):]}? (python train.py "
                    f"--help lists the groups)"
                )
            continue
        if top in groups or OmegaConf.select(config, name, default=_ABSENT) is not _ABSENT:
            continue
        parent, _, key = name.rpartition(".")
        node = OmegaConf.select(config, parent, default=None) if parent else config
        if isinstance(node, DictConfig):  # the key is misspelled (`cv.foldz`)
            close = difflib.get_close_matches(key, [str(k) for k in node.keys()] + ([] if parent else groups), n=1)
            hint = f"; did you mean {f'{parent}.' if parent else ''}{close[0]}?" if close else ""
        else:  # its first part is (`optimzer.lr`)
            close = difflib.get_close_matches(top, groups + [str(k) for k in config.keys()], n=1)
            hint = f"; did you mean {close[0]}{name[len(top):]}?" if close else ""
        raise ConfigError(f"{shown} is no config group or setting{hint} (python train.py --help lists the groups)")


def check_enqueued(trials: list[dict[str, Any]], space: SearchSpace) -> None:
    """Raise ConfigError for an enqueued value its param's sweep cannot take (`{optimizer.lr: abc}`)."""
    for index, trial in enumerate(trials):
        for name, value in trial.items():
            distribution = space.distributions.get(name)
            if isinstance(distribution, CategoricalDistribution):
                inside = value in distribution.choices
            elif distribution is not None:
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                inside = number and distribution.low <= value <= distribution.high
            else:
                continue  # not swept: `_warm_start_params` names it
            if not inside:
                shown = list(distribution.choices) if isinstance(distribution, CategoricalDistribution) else reach(distribution)
                raise ConfigError(f"hydra.sweeper.enqueue_trials[{index}]: {name}={value!r} is outside its sweep {shown}")


def reach(distribution: BaseDistribution) -> list[Any]:
    """The values that decide whether a distribution stays in a setting's valid range: its choices, or its ends."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def check_values(
    space: SearchSpace, base_choices: Mapping[str, Any], option_config: Callable[[str, Any], Union[DictConfig, str]]
) -> None:
    """Raise ConfigError, before any trial, for a swept or fixed value outside its setting's valid values
    (`optimizer.lr=interval(-1,1)`, `optimizer.momentum=choice(0.9,2)`) in any option the param applies to."""
    for name in [*space.distributions, *space.fixed]:
        if name in space.distributions:
            values = reach(space.distributions[name])
        else:  # the released sweeper keeps a fixed value as the text typed: read it as Hydra does
            values = [OverridesParser.create().parse_override(f"{name}={space.fixed[name]}").value()]
        key, group = name.lstrip("+"), name.lstrip("+").split(".", 1)[0]
        if key in TOP_LEVEL:  # conf/train.yaml's own settings, the Trainer keys users add: the same in every option
            valids: list[Optional[Valid]] = [TOP_LEVEL[key]]
        elif "." not in name or group not in base_choices:
            continue
        else:
            if name in space.requires:
                options: Iterable[Any] = space.requires[name][1]
            elif isinstance(space.distributions.get(group), CategoricalDistribution):
                options = space.distributions[group].choices
            else:
                options = [space.fixed.get(group, base_choices[group])]
            configs = [option_config(group, option) for option in options]
            valids = [None if isinstance(config, str) else valid_of(config, name) for config in configs]
        for valid in valids:
            for value in values if valid else []:
                if not valid.test(value):
                    raise ConfigError(f"the sweep of {key} reaches {value}, but {key} must be {valid.text}")
