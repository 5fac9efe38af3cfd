"""Every option of every config group composes and trains: a new YAML file is covered without a new test."""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import CONF, assert_learned, fast_without, group_options, needs_gpu
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from omegaconf import OmegaConf
from torch import nn

from lightning_tune.data import TorchvisionDataModule
from lightning_tune.errors import ConfigError
from lightning_tune.run import build, build_network, train

FLAT_MODELS = {"mlp", "linear"}  # trained on iris below; every other model is an image model, trained on digits
DATA_OVERRIDES = {"iris": ["model=mlp"], "synthetic": ["data.input_shape=[3,16,16]", "data.num_samples=200"]}
# One CPU process: with more devices Lightning would relaunch this pytest command for the other ranks.
TRAINER_OVERRIDES = {"ddp": ["trainer.accelerator=cpu", "trainer.devices=1"]}


def needs_download(option: str) -> bool:
    """Options whose data module fetches a torchvision data set (the optional `vision` extra)."""
    target = OmegaConf.load(CONF / "data" / f"{option}.yaml")._target_
    return issubclass(get_class(target), TorchvisionDataModule)


BUILT_IN_DATA = [option for option in group_options("data") if not needs_download(option)]
DOWNLOADED_DATA = [option for option in group_options("data") if needs_download(option)]


def data_for(model: str) -> list[str]:
    """Iris for flat models (logistic regression takes a larger step, and 5 epochs of 2 batches, to learn it),
    digits for the others."""
    if model == "linear":
        return ["data=iris", "optimizer.lr=0.05", "trainer.max_epochs=5"]
    return ["data=iris"] if model in FLAT_MODELS else ["data=digits"]


def check_run(cfg, output_dir: Path) -> dict:
    """Train, check that the net learned and that the returned objective is metrics.json's; return metrics.json."""
    value = train(cfg)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["value"] == pytest.approx(value)
    assert_learned(metrics["val"]["acc"], build(cfg.data, "data").num_classes)
    return metrics


@pytest.fixture
def restore_distributed():
    """An in-process ddp run leaves environment variables behind (and its process group, if a test fails): remove them."""
    environ = dict(os.environ)
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    os.environ.clear()
    os.environ.update(environ)


@pytest.mark.parametrize("regularization", group_options("regularization"))
@pytest.mark.parametrize("model", group_options("model"))
def test_every_model_trains_with_every_regularization(make_cfg, tmp_path, model, regularization):
    cfg = make_cfg(f"model={model}", *data_for(model), f"regularization={regularization}")
    check_run(cfg, tmp_path)
    dropout = cfg.regularization.dropout
    if dropout > 0:  # the rate reaches the network: some dropout layer uses exactly it
        net = build_network(cfg.model, build(cfg.data, "data"), dropout)
        rates = {module.p for module in net.modules() if isinstance(module, nn.modules.dropout._DropoutNd)}
        assert dropout in rates, f"model={model} has no dropout layer with p={dropout}: {rates}"


@pytest.mark.parametrize("optimizer", group_options("optimizer"))
def test_every_optimizer_trains(make_cfg, tmp_path, optimizer):
    check_run(make_cfg(f"optimizer={optimizer}"), tmp_path)


@pytest.mark.parametrize("scheduler", group_options("scheduler"))
def test_every_scheduler_trains(make_cfg, tmp_path, scheduler):
    """Two epochs, so that epoch-wise schedules step at least once with a validation metric in hand."""
    check_run(make_cfg(f"scheduler={scheduler}", "trainer.max_epochs=2"), tmp_path)


@pytest.mark.parametrize("logger", group_options("logger"))
def test_every_logger_trains(make_cfg, tmp_path, logger):
    check_run(make_cfg(f"logger={logger}"), tmp_path)
    if logger != "none":
        assert (tmp_path / logger).is_dir()


@pytest.mark.parametrize("data", BUILT_IN_DATA)
def test_every_built_in_data_set_trains(make_cfg, tmp_path, data):
    metrics = check_run(make_cfg(f"data={data}", *DATA_OVERRIDES.get(data, [])), tmp_path)
    assert "test" in metrics


@pytest.mark.parametrize("data", DOWNLOADED_DATA)
def test_downloaded_data_needs_the_vision_extra(make_cfg, tmp_path, data):
    cfg = make_cfg(f"data={data}")
    assert cfg.data.download is True
    try:
        import torchvision  # noqa: F401

        pytest.skip(f"torchvision is installed: data={data} would download")
    except ImportError:
        pass
    with pytest.raises(ConfigError) as error:
        train(cfg)
    message = str(error.value)
    assert f"data={data}" in message and "lightning-tune[vision]" in message
    assert "\n" not in message
    assert not any(tmp_path.iterdir()), "a rejected config left files behind"


@pytest.mark.parametrize("trainer", group_options("trainer"))
def test_every_trainer_option_composes(make_cfg, trainer):
    cfg = make_cfg(f"trainer={trainer}")
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    assert cfg.trainer.max_epochs == 1  # FAST's value overrides still apply under the chosen option


@pytest.mark.parametrize("trainer", [option for option in group_options("trainer") if option != "gpu"])
def test_every_trainer_option_but_gpu_trains(make_cfg, tmp_path, restore_distributed, trainer):
    """ddp trains the default CNN, batch norm and all: SyncBatchNorm is GPU-only, so it is off on CPU."""
    overrides = [f"trainer={trainer}", *TRAINER_OVERRIDES.get(trainer, [])]
    check_run(make_cfg(*fast_without("trainer="), *overrides, fast=False), tmp_path)
    assert not torch.distributed.is_initialized(), "the run left its process group to the interpreter's exit"


@needs_gpu
@pytest.mark.parametrize("precision", ["32-true", "16-mixed", "bf16-mixed"])
def test_gpu_trainer_trains(make_cfg, tmp_path, precision):
    cfg = make_cfg(*fast_without("trainer="), "trainer=gpu", f"trainer.precision={precision}", fast=False)
    check_run(cfg, tmp_path)


@pytest.mark.parametrize("launcher", group_options("launcher"))
def test_every_launcher_composes(make_cfg, launcher):
    """The launcher is Hydra's own setting (`hydra.launcher`), outside the job's config."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(config_name="train", overrides=[f"launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.runtime.choices.launcher == launcher
    assert cfg.hydra.launcher._target_


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("model", group_options("model"))
def test_every_model_trains_in_mixed_precision_on_cpu(make_cfg, tmp_path, model, precision):
    check_run(make_cfg(f"model={model}", *data_for(model), f"trainer.precision={precision}"), tmp_path)
