"""What runs report: TensorBoard's HPARAMS view of several runs, the lr trained with, lr_find's suggestion."""

import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import CONF, FAST, group_options
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict, read_write
from pytorch_lightning.tuner import Tuner
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment

from lightning_tune.errors import ConfigError
from lightning_tune.metrics import METRICS
from lightning_tune.reporting import format_table
from lightning_tune.run import steepest_descent, train
from lightning_tune.schemas import register_schemas

SHORT = ["logger=tensorboard", "++trainer.limit_train_batches=3"]
LR_FIND = ["lr_find=true", "lr_finder.num_training=40"]  # a short range test: 1e-5 to 1 in 40 steps


@pytest.fixture
def hydra_run(tmp_path, monkeypatch):
    """`hydra_run(*overrides)`: `train` as `python train.py *overrides` runs it, Hydra's runtime config (the
    chosen options, the command line) set; FAST first, with `logger=tensorboard` and 3 batches an epoch."""
    register_schemas()
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # put back after the test

    def run(*overrides: str) -> float:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF)):
            overrides = (*FAST, *SHORT, f"output_dir={tmp_path}", *overrides)
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with read_write(cfg), open_dict(cfg):  # as Hydra's run_job hands the config to the task
            del cfg["hydra"]
        return train(cfg)

    yield run
    GlobalHydra.instance().clear()


def hparams_view(logdir: Path) -> api_pb2.Experiment:
    """The columns of the HPARAMS tab of `tensorboard --logdir logdir`, from TensorBoard's own plugin code."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    tb_context = base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider)
    handler = get_experiment.Handler(
        context.RequestContext(), backend_context.Context(tb_context), "", api_pb2.GetExperimentRequest()
    )
    return handler.run()


def test_hparams_view_of_a_sweep_shows_the_union_of_settings_swept_first_and_no_paths(hydra_run, tmp_path):
    """Two of the trials of `-m optimizer=adam,sgd scheduler=none,cosine`: adam alone, sgd with cosine."""
    hydra_run("optimizer=adam", "scheduler=none", f"output_dir={tmp_path / 'multirun' / '0'}")
    hydra_run("optimizer=sgd", "scheduler=cosine", f"output_dir={tmp_path / 'multirun' / '1'}")
    experiment = hparams_view(tmp_path / "multirun")
    names = [info.name for info in experiment.hparam_infos]
    assert {"optimizer.momentum", "optimizer.betas", "scheduler.eta_min", "seed", "trainer.max_epochs"} <= set(names)
    assert {"trainer", "trainer.limit_train_batches"} <= set(names)  # set on the command line
    paths_and_plumbing = [
        name
        for name in names
        if name.split(".")[0] in {"hydra", "trial", "logger", "launcher", "callbacks", "output_dir"}
        or name.endswith(("dir", "storage", "_target_", "num_workers"))
    ]
    assert not paths_and_plumbing
    swept = {"optimizer", "scheduler", "optimizer.lr"}  # the options and sgd's own default lr
    assert set(names[: len(swept)]) == swept, names
    assert all(info.differs for info in experiment.hparam_infos[: len(swept)])
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert {"final/val_acc", "final/test_acc", "final/test_f1"} <= metrics


def test_lr_find_reports_the_lr_it_trained_with(hydra_run, tmp_path):
    hydra_run(*LR_FIND, "optimizer.lr=0.123")
    lr = json.loads((tmp_path / "metrics.json").read_text())["lr"]
    assert lr != pytest.approx(0.123)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [event.value for event in events.Scalars("lr-Adam/pg1")] == [pytest.approx(lr)]  # trained with
    [info] = [info for info in hparams_view(tmp_path).hparam_infos if info.name == "optimizer.lr"]
    assert info.domain_interval.min_value == pytest.approx(lr)


@pytest.mark.parametrize("scheduler", group_options("scheduler"))
def test_lr_find_takes_its_steps_however_few_epochs_the_run_has(make_cfg, tmp_path, monkeypatch, scheduler):
    """40 steps of the range test in a run of one epoch of 3 batches, which then trains one epoch, whatever
    its schedule (each is built for the test, then for the run)."""
    lr_find = Tuner.lr_find
    finders = []

    def recorded(self, *args, **kwargs):
        finders.append(lr_find(self, *args, **kwargs))
        return finders[-1]

    monkeypatch.setattr(Tuner, "lr_find", recorded)
    train(make_cfg(*SHORT, *LR_FIND, f"scheduler={scheduler}"))
    [finder] = finders
    assert len(finder.results["lr"]) == 40 and finder.results["lr"][-1] > 0.5  # up to max_lr=1
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 1


def test_without_lr_find_the_configured_lr_is_reported(make_cfg, tmp_path):
    train(make_cfg(*SHORT, "optimizer.lr=0.0123"))
    assert json.loads((tmp_path / "metrics.json").read_text())["lr"] == pytest.approx(0.0123)


def test_lr_find_without_a_suggestion_fails_on_one_line_and_never_says_it_trains(
    make_cfg, tmp_path, monkeypatch, caplog
):
    """A range test whose every loss is NaN (diverged from the first step) gives no suggestion."""
    lr_find = Tuner.lr_find

    def diverged(self, *args, **kwargs):
        finder = lr_find(self, *args, **kwargs)
        finder.results["loss"] = [float("nan")] * len(finder.results["loss"])
        return finder

    monkeypatch.setattr(Tuner, "lr_find", diverged)
    caplog.set_level(logging.INFO)
    with pytest.raises(ConfigError) as error:
        train(make_cfg(*SHORT, *LR_FIND))
    assert "training with it" not in caplog.text
    message = str(error.value)
    assert message.startswith("lr_find=true") and "lr_finder.min_lr" in message and "\n" not in message
    assert not (tmp_path / "metrics.json").exists()


def test_lr_find_trains_with_the_steepest_descent_per_decade():
    """A loss that falls fastest per decade at lr=1e-2 on a log-spaced range, then diverges."""
    lrs = torch.logspace(-5, 0, 101)
    losses = 2.3 - 2.0 * torch.sigmoid(4 * (lrs.log10() + 2)) + 3 * (lrs > 0.3)
    assert steepest_descent(lrs.tolist(), losses.tolist()) == pytest.approx(1e-2, rel=0.15)
    assert steepest_descent(lrs.tolist(), sorted(losses.tolist())) is None  # never falls


def test_the_console_table_keeps_its_columns_apart_for_any_value():
    values = {"acc": 0.9731, "precision": 1.0, "recall": float("nan"), "f1": 0.5, "loss": 123456789.123}
    table = format_table({"val": values, "test": {**values, "loss": -1e30}})
    header, *rows = table.splitlines()
    assert header.split() == list(METRICS)
    assert [row.split() for row in rows] == [
        ["val", "0.9731", "1.0000", "nan", "0.5000", "1.235e+08"],
        ["test", "0.9731", "1.0000", "nan", "0.5000", "-1e+30"],
    ]
    assert {len(line) for line in table.splitlines()} == {6 + 11 * len(METRICS)}
