"""The search space fitted to the config groups each trial chooses, and the grid's points."""

import re

import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution

from lightning_tune.errors import ConfigError
from lightning_tune.sweeping.space import SearchSpace, check_known, fit_to_groups, typed_param_names

OPTIMIZERS = CategoricalDistribution(["adam", "sgd"])
CONFIGS = {  # the sweep's config with each option: only the keys that matter here
    "adam": {"optimizer": {"lr": 0.001}, "model": {"depth": 2}},
    "sgd": {"optimizer": {"lr": 0.01, "momentum": 0.9}, "model": {"depth": 2}},
    "linear": {"optimizer": {"lr": 0.001}, "model": {}},
}


def option_config(group: str, option: str):
    return OmegaConf.create(CONFIGS[option]) if option in CONFIGS else f"Could not find '{group}/{option}'"


def space(**distributions) -> SearchSpace:
    return SearchSpace({name.replace("__", "."): d for name, d in distributions.items()}, {})


def test_a_param_of_some_options_only_is_tied_to_them():
    fitted, dropped = fit_to_groups(
        space(optimizer=OPTIMIZERS, optimizer__lr=FloatDistribution(0.01, 0.1),
              optimizer__momentum=FloatDistribution(0.5, 0.9)),
        {"optimizer": "adam"}, option_config, typed=set(),
    )  # fmt: skip
    assert dropped == [] and fitted.requires == {"optimizer.momentum": ("optimizer", frozenset({"sgd"}))}
    assert fitted.applies("optimizer.momentum", {"optimizer": "sgd"})
    assert not fitted.applies("optimizer.momentum", {"optimizer": "adam"})
    assert fitted.applies("optimizer.lr", {"optimizer": "adam"})
    assert fitted.ordered()[-1] == "optimizer.momentum"  # after the option it depends on


def test_a_param_no_option_has_is_dropped_from_a_preset_and_refused_from_the_command_line():
    preset = space(model__depth=CategoricalDistribution([1, 2]), optimizer__lr=FloatDistribution(0.01, 0.1))
    fitted, dropped = fit_to_groups(preset, {"model": "linear", "optimizer": "adam"}, option_config, typed=set())
    assert dropped == ["model=linear has no model.depth"] and list(fitted.distributions) == ["optimizer.lr"]
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.params\.model\.depth: model=linear has no key 'depth'$"):
        fit_to_groups(preset, {"model": "linear", "optimizer": "adam"}, option_config, typed={"model.depth"})


def test_an_option_that_does_not_exist_is_left_out_of_a_presets_space_and_refused_in_a_typed_one():
    swept = space(optimizer=CategoricalDistribution(["sgd", "foo"]), optimizer__momentum=FloatDistribution(0.5, 0.9))
    fitted, notes = fit_to_groups(swept, {"optimizer": "sgd"}, option_config, typed=set())
    assert fitted.distributions["optimizer"].choices == ("sgd",) and fitted.requires == {}
    assert notes == ["optimizer=foo does not compose here (Could not find 'optimizer/foo')"]
    with pytest.raises(ConfigError, match=r"^the sweep of optimizer has optimizer=foo: Could not find 'optimizer/foo'$"):
        fit_to_groups(swept, {"optimizer": "sgd"}, option_config, typed={"optimizer"})


def test_the_grid_has_each_point_once_conditional_params_only_where_they_exist_in_the_seeds_order():
    fitted, _ = fit_to_groups(
        space(optimizer=OPTIMIZERS, optimizer__momentum=CategoricalDistribution([0.5, 0.9])),
        {"optimizer": "adam"}, option_config, typed=set(),
    )  # fmt: skip
    points = fitted.grid(seed=1)
    expected = [{"optimizer": "adam"}, {"optimizer": "sgd", "optimizer.momentum": 0.5}, {"optimizer": "sgd", "optimizer.momentum": 0.9}]
    assert sorted(points, key=str) == sorted(expected, key=str)
    orders = {tuple(map(str, fitted.grid(seed))) for seed in range(6)}
    assert len(orders) > 1 and fitted.grid(seed=1) == points


def test_params_typed_on_the_command_line():
    hydra = ["hydra.sweeper.params.optimizer._option_=choice(adam,sgd)", "+hydra.sweeper.params.model.width=choice(8)",
             "hydra.sweeper.n_trials=5"]  # fmt: skip
    task = ["optimizer.lr=interval(0.01,0.1)", "model=mlp", "seed=3"]
    assert typed_param_names(hydra, task) == {"optimizer", "model.width", "optimizer.lr"}


@pytest.mark.parametrize(
    "name, typed, error",
    [
        ("optimzer.lr", False, "hydra.sweeper.params.optimzer.lr is no config group or setting; did you mean optimizer.lr?"),
        ("optimzer.lr", True, "optimzer.lr is no config group or setting; did you mean optimizer.lr?"),
        ("cv.foldz", False, "hydra.sweeper.params.cv.foldz is no config group or setting; did you mean cv.folds?"),
        ("sed", False, "hydra.sweeper.params.sed is no config group or setting; did you mean seed?"),
        ("cv.folds", False, None),
        ("seed", False, None),
        ("optimizer.lrr", False, None),  # a group's own keys: fit_to_groups knows its options
        ("+trainer.limit_train_batches", False, None),  # added, as `+key=value` adds it
        ("+optimzer.lr", True, "+optimzer.lr adds a key nothing reads; did you mean optimizer.lr?"),
        ("+my_key", False, None),
    ],
)
def test_a_param_that_is_no_group_or_setting_is_refused_before_any_trial(name, typed, error):
    """Each of its trials would fail to compose, one after another, all of them."""
    config = OmegaConf.create({"seed": 1, "cv": {"folds": None}, "optimizer": {"lr": 0.1}, "trainer": {}})
    swept = SearchSpace({name: FloatDistribution(1, 2)}, {})
    check = lambda: check_known(swept, config, ["optimizer", "trainer"], {name} if typed else set())  # noqa: E731
    if error is None:
        check()
    else:
        with pytest.raises(ConfigError, match=rf"^{re.escape(error)} \(python train.py --help lists the groups\)$"):
            check()
