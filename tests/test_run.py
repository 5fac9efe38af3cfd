"""End-to-end runs through `train(cfg)`: what a run leaves behind and what it returns."""

import json

import pytest
import pytorch_lightning as pl
import torch
from conftest import assert_learned
from pytorch_lightning.callbacks import ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_tune.errors import ConfigError, TrainingDiverged
from lightning_tune.metrics import METRICS, VALIDATED, OptimizedMetric
from lightning_tune.reporting import collect_results
from lightning_tune.run import BestEpochMetrics, build_run, build_trainer, detached, train
from lightning_tune.validation import check_settings


def test_run_writes_metrics_json_and_returns_the_optimized_metric(make_cfg, tmp_path):
    value = train(make_cfg())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for stage in ("val", "test"):
        assert set(metrics[stage]) == set(METRICS)
        for name in ("acc", "precision", "recall", "f1"):
            assert_learned(metrics[stage][name], 10)
        assert metrics[stage]["loss"] > 0
    assert metrics["optimized_metric"] == "val/acc"
    assert value == pytest.approx(metrics["val"]["acc"])
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


def test_val_and_test_metrics_are_the_best_checkpoints(make_cfg, tmp_path):
    """The weights left after fit are zeroed; val and test must still score the best checkpoint."""
    scramble = "+callbacks.scramble._target_=probes.ScrambleWeightsAfterFit"
    trust = "+execution_whitelist.probes=probes.*"  # the test's own callback, trusted as a user's is
    train(make_cfg("trainer=cpu", "trainer.max_epochs=2", "logger=none", scramble, trust, fast=False))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val"]["acc"] > 0.5 and metrics["test"]["acc"] > 0.5, metrics  # chance is 0.1


def test_a_callback_set_to_null_is_switched_off(make_cfg, tmp_path):
    """An experiment's callback that a command line switches off with `callbacks.<name>=null`."""
    stop = "+callbacks.stop={_target_: pytorch_lightning.callbacks.EarlyStopping, monitor: val/loss}"
    on, off = make_cfg(stop), make_cfg(stop, "callbacks.stop=null")
    check_settings(off)
    built = [build_trainer(cfg, OptimizedMetric.parse("val/acc"), tmp_path).callbacks for cfg in (on, off)]
    assert [[type(c).__name__ for c in callbacks if type(c).__name__ == "EarlyStopping"] for callbacks in built] == [
        ["EarlyStopping"], []
    ]


@pytest.mark.parametrize("monitor, mode", [("val/loss", "min"), ("val/acc", "max")])  # val/acc: the run's own
def test_a_users_own_modelcheckpoint_does_not_replace_the_runs(make_cfg, tmp_path, monitor, mode):
    """Lightning's `trainer.checkpoint_callback` is the first ModelCheckpoint of its list: a user's, in
    `callbacks`, comes before the run's. metrics.json must still score and name checkpoints/best.ckpt. One
    alike the run's (its monitor and mode) must not clash with it (Lightning refuses two of one state key)."""
    mine = ["+callbacks.mine._target_=pytorch_lightning.callbacks.ModelCheckpoint", f"+callbacks.mine.monitor={monitor}",
            f"+callbacks.mine.mode={mode}", f"+callbacks.mine.dirpath={tmp_path / 'mine'}",
            "+callbacks.mine.save_last=true"]  # fmt: skip
    train(make_cfg("trainer.max_epochs=3", "model=mlp", "data=iris", *mine))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best_checkpoint"] == str(tmp_path / "checkpoints" / "best.ckpt")
    assert (tmp_path / "mine" / "last.ckpt").is_file()  # the user's works as well


def test_early_stopping_on_each_validation_metric_finds_it(make_cfg, tmp_path):
    """`callbacks.<name>.monitor` of val/ metrics is checked against VALIDATED before the run: each must be
    what a fit logs (EarlyStopping is strict: a metric it does not find stops the fit)."""
    stops = [f"+callbacks.stop{i}={{_target_: pytorch_lightning.callbacks.EarlyStopping, monitor: '{name}'}}"
             for i, name in enumerate(VALIDATED)]  # fmt: skip
    train(make_cfg("trainer.max_epochs=2", "model=mlp", "data=iris", "logger=none", *stops))
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("optimized", ["val/acc", "val/loss"])
def test_val_metrics_are_those_a_validation_of_the_best_checkpoint_gives(make_cfg, tmp_path, optimized):
    """metrics.json's val metrics are kept from the best epoch as it ran, not from a validation after fit: they
    must be what validating best.ckpt gives, for the optimized metric and every other one."""
    cfg = make_cfg("trainer.max_epochs=4", "model=mlp", "data=iris", f"optimized_metric={optimized}")
    train(cfg)
    kept = json.loads((tmp_path / "metrics.json").read_text())
    datamodule, module = build_run(cfg)
    trainer = build_trainer(cfg, OptimizedMetric.parse(optimized), tmp_path / "again")
    best = str(tmp_path / "checkpoints" / "best.ckpt")
    validated = collect_results({"val": trainer.validate(module, datamodule, ckpt_path=best, verbose=False)[0]})
    assert kept["val"] == pytest.approx(validated["val"], rel=1e-6)


class ScriptedValidation(pl.LightningModule):
    """Logs `val/score` from a script, one value per epoch, and `val/epoch`, the epoch that logged it."""

    def __init__(self, script: list[float]) -> None:
        super().__init__()
        self.script, self.layer = script, nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", self.script[self.current_epoch])
        self.log("val/epoch", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize(
    "mode, script",
    [
        ("max", [0.5, 0.7, 0.7, float("nan"), 0.6]),  # a tie keeps the first; NaN is never best
        ("max", [float("nan"), 0.4, 0.4]),
        ("min", [0.3, 0.2, 0.2, 0.25, 0.1]),
    ],
)
def test_best_epoch_metrics_are_of_the_epoch_modelcheckpoint_keeps(tmp_path, mode, script):
    """Lightning's ModelCheckpoint decides which epoch is best; the kept metrics must be that epoch's."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="val/score", mode=mode, save_top_k=1)
    best_epoch = BestEpochMetrics(checkpoint)
    trainer = pl.Trainer(
        max_epochs=len(script), callbacks=[best_epoch, checkpoint], logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
    )  # fmt: skip
    loader = DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=2)
    trainer.fit(ScriptedValidation(script), loader, loader)
    saved_epoch = torch.load(tmp_path / "best.ckpt", weights_only=True)["epoch"]
    assert best_epoch.kept()["val/epoch"] == saved_epoch


def test_best_epoch_metrics_are_refused_for_another_checkpoints_score():
    """A checkpoint whose best score is not the one the metrics were kept with (its epochs ran elsewhere) gets
    None: the run then validates the checkpoint."""
    checkpoint = ModelCheckpoint(monitor="val/acc", mode="max")
    best_epoch = BestEpochMetrics(checkpoint)
    best_epoch.load_state_dict({"best": 0.8, "metrics": {"val/acc": 0.8}})
    assert best_epoch.kept() is None  # no best yet
    checkpoint.best_model_score = torch.tensor(0.9)
    assert best_epoch.kept() is None
    checkpoint.best_model_score = torch.tensor(0.8, dtype=torch.float64)
    assert best_epoch.kept() == {"val/acc": 0.8}


def test_a_node_is_built_resolved_and_detached_unless_it_holds_an_escaped_interpolation():
    cfg = OmegaConf.create({"lr": 0.1, "plain": {"a": "${lr}", "b": ["${lr}"]}, "escaped": {"c": "\\${lr}"}})
    assert detached(cfg.plain) == {"a": 0.1, "b": [0.1]}
    assert detached(cfg.escaped) is cfg.escaped  # resolved, it would read `${lr}`, an interpolation again


def test_optimized_metric_chooses_what_is_returned(make_cfg, tmp_path):
    value = train(make_cfg("optimized_metric=val/loss"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert value == pytest.approx(metrics["val"]["loss"])


def test_tensorboard_events_hold_scalars_lr_and_hparams(make_cfg, tmp_path):
    train(make_cfg("logger=tensorboard", "trainer.max_epochs=2"))
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_epoch", "val/acc", "val/f1", "train/acc"} <= scalars
    assert any(tag.startswith("lr-") for tag in scalars), scalars
    assert "final/test_acc" in scalars
    # The hparams plugin's session records, and no experiment record: TensorBoard then builds the HPARAMS
    # view of many runs from all of their sessions (tests/test_reporting.py).
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    assert set(content) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["optimizer.lr"].number_value == pytest.approx(1e-3)
    assert session.session_start_info.hparams["trainer.max_epochs"].number_value == 2


def test_csv_logger_writes_metrics(make_cfg, tmp_path):
    train(make_cfg("logger=csv"))
    text = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "val/acc" in text and "final/test_acc" in text


def test_same_seed_same_metrics_other_seed_other_metrics(make_cfg, tmp_path):
    def metrics(seed):
        train(make_cfg(f"seed={seed}", "model=mlp", "regularization=dropout"))
        return json.loads((tmp_path / "metrics.json").read_text())["val"]

    first, again, other = metrics(1), metrics(1), metrics(2)
    assert first == again
    assert first != other


def test_bf16_mixed_precision_on_cpu(make_cfg, tmp_path):
    value = train(make_cfg("trainer.precision=bf16-mixed", "model=resnet", "model.depth=2", "optimizer.lr=0.01"))
    assert_learned(value, 10)
    assert json.loads((tmp_path / "metrics.json").read_text())["val"]["loss"] > 0


def test_a_diverging_run_stops_before_validation_naming_epoch_and_batch(make_cfg, tmp_path):
    """The loss is checked every `log_every_n_steps` steps and at the epoch's last batch, before validation."""
    cfg = make_cfg("optimizer=sgd", "optimizer.lr=1e30", "+trainer.limit_train_batches=8", "trainer.log_every_n_steps=4")
    with pytest.raises(TrainingDiverged, match=r"^training loss is (nan|inf) at epoch 0, batch [1-7]$"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()  # no validation ran, so no checkpoint of a diverged net


def test_channels_last_puts_conv_weights_and_image_inputs_in_nhwc(make_cfg, tmp_path):
    _, module = build_run(make_cfg("channels_last=true", "model=resnet", "model.depth=2"))
    convs = [m for m in module.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convs)
    inputs = []
    convs[0].register_forward_pre_hook(lambda conv, args: inputs.append(args[0]))
    module(torch.randn(2, 1, 8, 8))
    assert inputs[0].is_contiguous(memory_format=torch.channels_last)
    assert_learned(train(make_cfg("channels_last=true", "model=resnet", "model.depth=2", "optimizer.lr=0.01")), 10)


@pytest.mark.slow
def test_compile_trains(make_cfg, tmp_path):
    """torch.compile on CPU: compiling the CNN's forward and backward takes a minute on two cores."""
    assert_learned(train(make_cfg("compile=true")), 10)
    assert json.loads((tmp_path / "metrics.json").read_text())["val"]["loss"] > 0


def test_compile_that_cannot_work_here_fails_on_one_line_before_any_file(make_cfg, tmp_path, monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\n(a long traceback)")

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(ConfigError) as error:
        train(make_cfg("compile=true", "logger=tensorboard"))
    message = str(error.value)
    assert message.startswith("compile=true") and "No working C++ compiler" in message and "compile=false" in message
    assert "\n" not in message
    assert not any(tmp_path.iterdir())


def test_lr_find_sets_the_learning_rate_without_a_progress_bar(make_cfg, caplog, capsys):
    cfg = make_cfg("lr_find=true", "+trainer.limit_train_batches=20", "trainer.max_epochs=1")
    assert not cfg.trainer.enable_progress_bar
    caplog.set_level("INFO")
    train(cfg)
    assert "lr_find suggests lr=" in caplog.text
    assert "Finding best initial lr" not in capsys.readouterr().err  # Lightning's range test draws one regardless


@pytest.mark.slow
def test_default_run_reaches_095_test_accuracy(make_cfg, tmp_path):
    """The README's promise: `python train.py` (CNN on digits, default settings)."""
    train(make_cfg("logger=none", fast=False))
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["acc"] >= 0.95


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimized_metric=val/auc", "optimized_metric"),
        ("optimized_metric=test/acc", "optimized_metric"),
        ("regularization.dropout=1.5", "regularization.dropout"),
        ("regularization.l2=-1", "regularization.l2"),
        ("regularization.l2_mode=decoupled", "regularization.l2_mode"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.val_fraction=0", "data.val_fraction"),
        ("optimizer.lr=-0.1", "optimizer"),
        ("model=resnet model.depth=6", "model.depth"),
        ("model=cnn model.channels=[8,8,8,8]", "model.channels"),
        ("model.depth=4", "model.depth"),
        ("model.activation=swish", "model.activation"),
        ("data=iris", "model=cnn"),
        ("trainer.precision=fp8", "trainer"),
        ("scheduler=plateau scheduler.warmup_epochs=2", "scheduler.warmup_epochs"),
        ("scheduler=step scheduler.interval=batch", "scheduler.interval"),
        ("scheduler=step scheduler.step_size=0", "scheduler"),
        ("scheduler=cosine scheduler.T_max=0", "scheduler"),
        ("data=mnist", "data=mnist"),
        ("channels_last=maybe", "channels_last"),
        ("compile=1", "compile"),
    ],
)
def test_bad_values_raise_one_line_config_error_naming_the_key(make_cfg, override, key):
    overrides = override.split(" ")
    try:
        import torchvision  # noqa: F401

        if "data=mnist" in overrides:
            pytest.skip("torchvision is installed: data=mnist is valid here")
    except Exception:
        pass
    with pytest.raises(ConfigError) as error:
        train(make_cfg(*overrides))
    message = str(error.value)
    assert key in message
    assert "\n" not in message


def test_threads_default_to_omp_num_threads_then_slurms_cpus_then_one(make_cfg, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert str(make_cfg().threads) == "1"
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert str(make_cfg().threads) == "4"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert str(make_cfg().threads) == "2"


def test_threads_set_torchs_thread_count_and_bad_values_are_one_line(make_cfg, tmp_path):
    before = torch.get_num_threads()
    try:
        train(make_cfg("threads=3", "model=mlp"))
        assert torch.get_num_threads() == 3
        for bad in ("0", "-1", "abc", "true", "1.5"):
            with pytest.raises(ConfigError, match=r"^threads=.* must be a positive int, or null"):
                train(make_cfg(f"threads={bad}"))
    finally:
        torch.set_num_threads(before)
