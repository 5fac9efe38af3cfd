"""Trial configs from the composition cache are Hydra's own, key for key, errors included."""

import pickle
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.types import RunMode
from omegaconf import OmegaConf

from lightning_tune.schemas import register_schemas
from lightning_tune.sweeping.composition import TrialConfigLoader

CONF = Path(__file__).resolve().parents[1] / "conf"
TASK = ["hparams_search=random", "data=digits", "trainer.max_epochs=1"]  # every trial carries them, as in a sweep
MASTER = [*TASK, "hydra.sweep.dir=/tmp/sweep"]


@pytest.fixture(scope="module")
def loaders():
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF)):
        hydra_loader = GlobalHydra.instance().config_loader()
        master = hydra_loader.load_configuration("train", MASTER, run_mode=RunMode.MULTIRUN)
        yield master, hydra_loader, TrialConfigLoader(hydra_loader)


def both(loaders, overrides):
    master, hydra_loader, cached = loaders
    expected = OmegaConf.to_container(hydra_loader.load_sweep_config(master, [*TASK, *overrides]))
    return OmegaConf.to_container(cached.load_sweep_config(master, [*TASK, *overrides])), expected


TRIALS = [
    ["optimizer.lr=0.01", "model.depth=2", "trial.number=0", "seed=7"],
    ["optimizer=sgd", "optimizer.lr=0.05", "scheduler=cosine", "regularization.l2=0.001", "data.batch_size=32"],
    ["optimizer=sgd", "optimizer.lr=0.2", "scheduler=cosine", "regularization.l2=0.1", "data.batch_size=128"],
    ["model=resnet", "model.width=8", "trial.study_name='s'", "trial.storage='sqlite:////tmp/x.db'"],
    ["+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping", "+callbacks.stop.monitor=val/loss"],
    ["regularization=elastic", "~scheduler"],  # a group deleted: Hydra composes it
    ["logger=csv", "hydra.job.name=renamed"],  # a hydra key: Hydra composes it
    ["optimizer=adamw", "optimizer.betas=[0.8,0.99]", "++extra_key=5"],
]


@pytest.mark.parametrize("overrides", TRIALS, ids=lambda o: " ".join(o)[:40])
def test_trial_config_is_hydras(loaders, overrides):
    cached, expected = both(loaders, overrides)
    assert cached == expected


def test_reused_composition_is_not_changed_by_a_later_trial(loaders):
    master, _, cached = loaders
    first = cached.load_sweep_config(master, [*TASK, "optimizer=sgd", "optimizer.lr=0.05"])
    second = cached.load_sweep_config(master, [*TASK, "optimizer=sgd", "optimizer.lr=0.5"])
    assert (first.optimizer.lr, second.optimizer.lr) == (0.05, 0.5)
    assert list(first.hydra.overrides.task)[-1] == "optimizer.lr=0.05"
    assert first.hydra.runtime.choices.optimizer == "sgd"


@pytest.mark.parametrize(
    "overrides",
    [["model.depth=abc"], ["optimizer=nope"], ["no_such_key=1"], ["optimizer.lr=1,2"], ["optimizer.lr=[1"]],
    ids=str,
)
def test_bad_overrides_fail_as_in_hydra(loaders, overrides):
    master, hydra_loader, cached = loaders
    errors = []
    for loader in (hydra_loader, cached):
        with pytest.raises((ConfigCompositionException, OverrideParseException)) as error:
            loader.load_sweep_config(master, [*TASK, *overrides])
        errors.append((str(error.value), str(error.value.__cause__)))
    assert errors[0] == errors[1]


def test_every_trial_is_in_the_sweeps_own_directory():
    """The presets name the sweep directory by a hash of the command's overrides: a trial's own overrides
    must not move it (each trial landed in a directory of its own)."""
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        hydra_loader = GlobalHydra.instance().config_loader()
        master = hydra_loader.load_configuration("train", ["hparams_search=tpe"], run_mode=RunMode.MULTIRUN)
        cached = TrialConfigLoader(hydra_loader)
        sweep_dir = str(master.hydra.sweep.dir)
        assert sweep_dir.startswith("multirun/tpe-")
        for overrides in (["optimizer.lr=0.01", "trial.number=0"], ["optimizer=sgd", "hydra.job.name=x"]):
            overrides = ["hparams_search=tpe", *overrides]  # the command's own, in every trial
            assert cached.load_sweep_config(master, overrides).hydra.sweep.dir == sweep_dir


def test_copies_sent_to_a_worker_process_share_its_compositions(loaders, monkeypatch):
    """The joblib launcher pickles the loader with every trial: the copies that one worker process unpickles
    compose each set of group choices once between them, and each copy's trial config is still Hydra's."""
    from lightning_tune.sweeping import composition

    master, hydra_loader, cached = loaders
    monkeypatch.setattr(composition, "IN_THIS_PROCESS", {})  # a worker process that has received nothing yet
    composed = []
    compose_base = TrialConfigLoader._compose_base

    def counted(self, *arguments):
        composed.append(arguments)
        return compose_base(self, *arguments)

    monkeypatch.setattr(TrialConfigLoader, "_compose_base", counted)
    sent = pickle.dumps(cached)
    assert b"Composed" not in sent  # the compositions stay where they were made
    trials = [["optimizer=sgd", "optimizer.lr=0.05"], ["optimizer=sgd", "optimizer.lr=0.5"], ["optimizer=adam"]]
    for overrides in trials:
        copy = pickle.loads(sent)  # as each trial's task arrives
        config = copy.load_sweep_config(master, [*TASK, *overrides])
        assert OmegaConf.to_container(config) == OmegaConf.to_container(
            hydra_loader.load_sweep_config(master, [*TASK, *overrides])
        )
    assert len(composed) == 2  # sgd, then adam
    other_sweep = pickle.loads(pickle.dumps(TrialConfigLoader(hydra_loader)))
    other_sweep.load_sweep_config(master, [*TASK, "optimizer=sgd"])
    assert len(composed) == 3  # another sweep's loader keeps its own
