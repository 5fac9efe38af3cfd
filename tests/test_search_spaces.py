"""Every param that a preset or an experiment sweeps takes effect: the run built at two of its values differs
(network structure, optimizer or schedule hyperparameters, regularization, batch size, trainer). A swept
param that changes nothing wastes trials and misleads the importance plots."""

from typing import Any

import pytest
from conftest import CONF
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution

from lightning_tune.optim import build_optimizer
from lightning_tune.run import build_run
from lightning_tune.sweeping.space import flatten_params, parse_search_space

SPACES = {  # the config a trial of each starts from, and its search space
    f"{group}={path.stem}": OmegaConf.load(path).hydra.sweeper.params
    for group in ("hparams_search", "experiment")
    for path in sorted((CONF / group).glob("*.yaml"))
    if OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params")
}
CASES = [
    (space, name, distribution)
    for space, params in SPACES.items()
    for name, distribution in parse_search_space(flatten_params(params))[0].items()
]


def two_values(distribution: BaseDistribution) -> tuple[Any, Any]:
    """The two ends of a distribution: its first and last choice, or its low and high."""
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[0], distribution.choices[-1]
    return distribution.low, distribution.high


def built(cfg) -> dict[str, Any]:
    """What a run builds from `cfg`, as plain values that compare."""
    datamodule, module = build_run(cfg)
    optimizer = build_optimizer(module.optimizer_factory, module.net, module.regularization, lr=module.lr)
    schedule = module.schedule
    return {
        "net": repr(module.net),
        "optimizer": (type(optimizer).__name__, [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]),
        "schedule": None if schedule is None else (repr(schedule.factory), schedule.interval, schedule.warmup_epochs),
        "regularization": repr(module.regularization),
        "batch_size": datamodule.batch_size,
        "trainer": OmegaConf.to_container(cfg.trainer),
    }


def test_every_preset_and_experiment_with_a_search_space_is_covered():
    assert {"hparams_search=tpe", "hparams_search=grid", "hparams_search=nsga2", "experiment=iris_logreg_grid"} <= set(SPACES)
    assert ("hparams_search=tpe", "model.width") in {(space, name) for space, name, _ in CASES}


@pytest.mark.parametrize("space, name, distribution", CASES, ids=[f"{space} {name}" for space, name, _ in CASES])
def test_each_swept_param_changes_what_the_run_builds(make_cfg, space, name, distribution):
    low, high = two_values(distribution)
    runs = [built(make_cfg(space, f"{name}={value}")) for value in (low, high)]
    changed = [part for part in runs[0] if runs[0][part] != runs[1][part]]
    assert changed, f"{name}={low} and {name}={high} build the same run"
