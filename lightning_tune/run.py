"""One training run from a composed config: build, fit, evaluate the best checkpoint, report."""

import contextlib
import copy
import inspect
import io
import logging
import math
import pkgutil
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lightning_tune.console import first_line, hydra_error_line, quiet_run
from lightning_tune.cv import RunOutcome, cross_validate, cv_folds
from lightning_tune.data import ArrayDataModule
from lightning_tune.errors import ConfigError, TrainingDiverged
from lightning_tune.metrics import OptimizedMetric, objective_names
from lightning_tune.module import ClassificationModule
from lightning_tune.optim import ScheduleSpec, build_optimizer, build_scheduler
from lightning_tune.regularization import Regularization
from lightning_tune.requeue import cluster_plugins, requeue_callbacks, resume_checkpoint
from lightning_tune.reporting import collect_results, format_table, log_hparams, run_settings, write_metrics
from lightning_tune.trust import trusted_run, untrusted_line, untrusted_target
from lightning_tune.validation import check_settings

log = logging.getLogger(__name__)


def build(cfg: Any, key: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, its errors on one line naming the config node `key`: Hydra's own (a target
    it cannot import or does not trust), and, as Hydra 1.4 passes them on unwrapped, the target's own.

    A node of the run's config is handed over resolved, as a plain container: given a node and keyword
    arguments, Hydra 1.4 deep-copies the node's whole root config first (5 ms a call, here)."""
    if OmegaConf.is_config(cfg):
        cfg = detached(cfg)
    try:
        return instantiate(cfg, _convert_="all", **kwargs)
    except ConfigError:
        raise
    except InstantiationException as error:
        if target := untrusted_target(error):
            raise ConfigError(untrusted_line(key, target)) from None
        raise ConfigError(f"{key}: {first_line(error.__cause__ or error)}") from None
    except Exception as error:  # noqa: BLE001 - whatever the target raised about its arguments
        raise ConfigError(f"{key}: {first_line(error)}") from None


def detached(node: Any) -> Any:
    """`node` resolved into plain dicts and lists, or `node` itself where a string in it holds `${`: the
    value of an escaped interpolation (`\\${x}`), which Hydra would read as an interpolation again."""
    container = OmegaConf.to_container(node, resolve=True)
    pending = [container]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str) and "${" in value:
            return node
    return container


def build_network(cfg: DictConfig, datamodule: ArrayDataModule, dropout: float) -> nn.Module:
    """The `model` group's network, told its input shape and class count by the data module."""
    kwargs: dict[str, Any] = {"input_shape": datamodule.input_shape, "num_classes": datamodule.num_classes}
    try:  # not hydra.utils.get_class: it logs a multi-line error of its own first
        accepts_dropout = "dropout" in inspect.signature(pkgutil.resolve_name(cfg._target_)).parameters
    except Exception as error:
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        raise ConfigError(
            f"model._target_={cfg.get('_target_')!r} cannot be imported: {reason} (is its module on PYTHONPATH?)"
        ) from None
    if accepts_dropout:
        kwargs["dropout"] = dropout
    elif dropout > 0:
        raise ConfigError(f"regularization.dropout={dropout}, but model {cfg._target_} takes no `dropout` argument")
    return build(cfg, "model", **kwargs)


def flag(cfg: DictConfig, key: str) -> bool:
    """A top-level on/off key of conf/train.yaml, refused unless it is a boolean."""
    value = cfg.get(key)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")
    return value


def compile_network(net: nn.Module) -> None:
    """`compile=true`: torch.compile the network in place, so its state dict and checkpoints keep their keys.

    Compiling happens at the first step, inside `fit`; a tiny function is compiled first, so that a
    machine where torch.compile cannot work (no C++ compiler, an unsupported Python) fails here, on one
    line, before any file is written.
    """
    try:
        torch.compile(lambda x: x + 1)(torch.zeros(1))
        net.compile()
    except Exception as error:  # whatever the backend raises, the remedy is the same
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        raise ConfigError(f"compile=true, but torch.compile does not work here ({reason}); set compile=false") from None


def set_threads(value: Any) -> None:
    """`threads`: how many threads torch gives each operation of this run; null keeps torch's default, one
    per core. Raises ConfigError unless it is a positive int or null."""
    if value is None:
        return
    if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
        raise ConfigError(f"threads={value!r} must be a positive int, or null for torch's default (one per core)")
    torch.set_num_threads(int(value))


def check_optimization(module: ClassificationModule, max_epochs: Optional[int]) -> None:
    """Build the optimizer and schedule once, then drop them, so that a bad lr or schedule fails
    before any file is written rather than inside `fit`, after the logger has started. A key the optimizer
    or schedule does not take (`+optimizer.lrr=0.1`) fails here too, on one line."""
    try:
        optimizer = build_optimizer(module.optimizer_factory, module.net, module.regularization, lr=module.lr)
    except TypeError as error:
        raise ConfigError(f"optimizer: {error}".splitlines()[0]) from None
    if module.schedule is not None:
        metric = module.optimized_metric
        epochs = max(1, max_epochs or 1)
        try:
            scheduler = build_scheduler(
                module.schedule, optimizer, max_epochs=epochs, steps_per_epoch=1, monitor=metric.name, mode=metric.mode
            )["scheduler"]
        except TypeError as error:
            raise ConfigError(f"scheduler: {error}".splitlines()[0]) from None
        try:  # a few steps catch values that only fail when stepped (step_size=0, T_max=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for _ in range(min(epochs, 3)):
                    scheduler.step(0.0) if isinstance(scheduler, ReduceLROnPlateau) else scheduler.step()
        except (ArithmeticError, ValueError) as error:
            raise ConfigError(f"scheduler: {type(error).__name__}: {error}".splitlines()[0]) from None


class SayInterrupted(pl.Callback):
    """Ctrl-C during training: Lightning stops the fit and exits with status 1, saying so among its INFO lines
    (`lightning_tune.console` drops that one); say `interrupted` on stderr, as a Ctrl-C at any other moment does."""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            print("interrupted", file=sys.stderr)


class RunCheckpoint(ModelCheckpoint):
    """The run's own checkpoints/best.ckpt. A class of its own: Lightning keys a callback's state by its class
    and settings, and refuses two alike, so a user's ModelCheckpoint of the same monitor and mode would clash."""


class BestEpochMetrics(pl.Callback):
    """The validation metrics of the epoch whose weights the best checkpoint holds, kept as they are computed,
    so that the checkpoint need not be validated again after fit (a tenth of a small trial's time).

    ModelCheckpoint (save_top_k=1) keeps the first validation with a strictly better monitored value, and never
    a NaN one (`ModelCheckpoint.check_monitor_top_k`): so does this. Its state travels in the checkpoints, so a
    fit resumed from one (a requeued SLURM trial) still knows the epochs before it. It holds the run's own
    `checkpoint` (checkpoints/best.ckpt), which a user's ModelCheckpoint in `callbacks` does not replace."""

    def __init__(self, checkpoint: ModelCheckpoint) -> None:
        self.checkpoint = checkpoint
        self.best: Optional[float] = None
        self.metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        monitor = self.checkpoint.monitor
        if not fitting or trainer.sanity_checking or monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[monitor])
        better = self.best is None or (value > self.best if self.checkpoint.mode == "max" else value < self.best)
        if better and not math.isnan(value):
            self.best = value
            self.metrics = {name: float(v) for name, v in trainer.callback_metrics.items() if name.startswith("val/")}

    def kept(self) -> Optional[dict[str, float]]:
        """The kept metrics, if the checkpoint's best score is the one they were kept with; else None."""
        score = self.checkpoint.best_model_score
        return self.metrics if score is not None and self.best is not None and float(score) == self.best else None

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "metrics": self.metrics}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.metrics = state_dict["best"], state_dict["metrics"]


def build_trainer(cfg: DictConfig, metric: OptimizedMetric, output_dir: Path, epoch_pruning: bool = True) -> pl.Trainer:
    """The Trainer with our checkpointing, the user's `callbacks`, and a sweep trial's pruning by epoch
    (not with cross-validation, where the trial reports once per fold)."""
    logger = build(cfg.logger, "logger") if cfg.get("logger") else False
    callbacks: list[pl.Callback] = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None:  # `callbacks.stop=null` switches one off
            callbacks.append(callback := build(node, f"callbacks.{name}"))
            if not isinstance(callback, pl.Callback):
                raise ConfigError(f"callbacks.{name}: {type(callback).__name__} is no Lightning Callback")
    if epoch_pruning and cfg.get("trial") and cfg.trial.get("number") is not None:
        from lightning_tune.sweeping.trial import trial_callbacks

        callbacks += trial_callbacks(cfg.trial, metric.name)
    callbacks += requeue_callbacks(output_dir)
    checkpoint = RunCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="best",
        monitor=metric.name,
        mode=metric.mode,
        save_top_k=1,
        auto_insert_metric_name=False,
    )
    callbacks += [SayInterrupted(), BestEpochMetrics(checkpoint), checkpoint]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    accelerator = cfg.trainer.get("accelerator")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    # torch's SyncBatchNorm is GPU-only: on CPU, trainer=ddp's processes keep their own batch statistics.
    sync_batchnorm = bool(cfg.trainer.get("sync_batchnorm")) and not on_cpu
    extra = {}
    plugins = cluster_plugins(cfg.trainer.get("devices"))
    if plugins and "plugins" not in cfg.trainer:  # a user's own plugins stay
        extra["plugins"] = plugins
    return build(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(output_dir),
        sync_batchnorm=sync_batchnorm,
        **extra,
    )


def measure_latency_ms(net: nn.Module, input_shape: tuple[int, ...], repeats: int = 20) -> float:
    """Median time of one single-sample forward pass, on the device the net is on."""
    parameter = next(net.parameters())
    sample = torch.zeros(1, *input_shape, device=parameter.device)
    timings = []
    net.eval()
    with torch.inference_mode():
        for _ in range(repeats + 3):
            if parameter.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            net(sample)
            if parameter.is_cuda:
                torch.cuda.synchronize()
            timings.append((time.perf_counter() - start) * 1e3)
    return statistics.median(timings[3:])


def build_run(cfg: DictConfig, fold: Optional[tuple[int, int]] = None) -> tuple[ArrayDataModule, ClassificationModule]:
    """The data (fold `fold[0]` of `fold[1]` with cross-validation) and the LightningModule of a run;
    everything that can reject the config is built here, before the first file is written."""
    configured = build(cfg.regularization, "regularization")
    datamodule: ArrayDataModule = build(cfg.data, "data")
    if fold is not None:
        datamodule.use_fold(*fold)
    # regularization=sklearn scales its penalty by the training split's size; the others stay as they are
    regularization: Regularization = configured.for_train_size(datamodule.train_size)
    net = build_network(cfg.model, datamodule, regularization.dropout)
    if flag(cfg, "compile"):
        compile_network(net)
    module = ClassificationModule(
        net,
        optimizer=build(cfg.optimizer, "optimizer"),
        num_classes=datamodule.num_classes,
        regularization=regularization,
        schedule=ScheduleSpec.from_config(cfg.get("scheduler")),
        optimized_metric=cfg.optimized_metric,
        channels_last=flag(cfg, "channels_last"),
    )
    check_optimization(module, cfg.trainer.get("max_epochs"))
    return datamodule, module


def train(cfg: DictConfig) -> Union[float, list[float]]:
    """Fit, evaluate the best checkpoint on val and test, write metrics.json; with `cv.folds=k`, once per
    fold (`lightning_tune.cv`), with the folds' means in metrics.json.

    Returns `optimized_metric`, or the list of `objectives` for a multi-objective sweep.
    """
    with trusted_run(cfg):  # the targets of our configs, and those its `execution_whitelist` admits
        quiet_run()
        metric = OptimizedMetric.parse(cfg.optimized_metric)
        objectives = objective_names(cfg)
        set_threads(cfg.get("threads"))
        flag(cfg, "lr_find")  # before the Trainer is built and greets
        check_settings(cfg)  # as the command's were before it ran: a trial's own values, or a run without Hydra
        if not isinstance(cfg.seed, int):
            raise ConfigError(f"seed={cfg.seed!r} must be an int")
        folds = cv_folds(cfg)
        if folds is None:
            pl.seed_everything(cfg.seed, workers=True, verbose=False)
            datamodule, module = build_run(cfg)
            values = fit_and_evaluate(cfg, datamodule, module, metric, objectives).values
        else:

            def fit_fold(index: int, output_dir: Path) -> RunOutcome:
                pl.seed_everything(cfg.seed, workers=True, verbose=False)  # every fold starts alike
                datamodule, module = build_run(cfg, fold=(index, folds))
                fold_cfg = copy.deepcopy(cfg)
                with open_dict(fold_cfg):
                    fold_cfg.output_dir = str(output_dir)  # the fold's checkpoints and logs (`${output_dir}`)
                return fit_and_evaluate(fold_cfg, datamodule, module, metric, objectives, epoch_pruning=False)

            values = cross_validate(cfg, folds, objectives, fit_fold)
        end_process_group()
        return values if cfg.get("objectives") else values[0]


def end_process_group() -> None:
    """Under DDP, destroy torch's process group once the run is done, while Python is whole, as torch's
    documentation asks (torch.distributed, "Shutdown"). Lightning destroys only NCCL groups (at exit): a gloo
    group left to the interpreter's exit could abort the process there (SIGABRT, "terminate called without an
    active exception") after a run had written its results."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def steepest_descent(lrs: list[float], losses: list[float]) -> Optional[float]:
    """The lr at which the range test's smoothed loss falls fastest per decade, before its minimum; None where
    it never falls.

    Lightning's own `suggestion()` differentiates by lr, not by log lr (Lightning-AI/pytorch-lightning#21141):
    on its log-spaced range that favours the first bend of the curve, 10 to 100 times too small an lr. The
    first 10 points are skipped, as Lightning does: its running mean of the loss is biased there.
    """
    lr = torch.tensor(lrs[10:], dtype=torch.float64)
    loss = torch.tensor(losses[10:], dtype=torch.float64)
    finite = torch.isfinite(loss)
    lr, loss = lr[finite], loss[finite]
    end = int(loss.argmin()) + 1 if len(loss) else 0  # past the minimum the loss diverges
    if end < 2:
        return None
    slope = torch.gradient(loss[:end], spacing=[lr[:end].log()])[0]
    return float(lr[slope.argmin()])


def find_lr(
    trainer: pl.Trainer, module: ClassificationModule, datamodule: ArrayDataModule, finder_args: DictConfig
) -> float:
    """`lr_find=true`: Lightning's range test (`lr_finder` holds its `Tuner.lr_find` arguments) on the run's
    trainer, from the run's initial weights, which it restores; returns the lr to train with."""
    from pytorch_lightning.tuner import Tuner

    max_epochs = trainer.fit_loop.max_epochs
    # The test takes its `num_training` steps however few epochs the run has (an epoch has a step at least). A
    # schedule built for the test sees that many epochs, and is dropped with the test: the run builds its own.
    trainer.fit_loop.max_epochs = max(max_epochs or 1, finder_args.num_training)
    # Lightning's range test draws a progress bar on stderr whatever `enable_progress_bar` says
    shown = trainer.progress_bar_callback is not None
    try:
        with contextlib.nullcontext() if shown else contextlib.redirect_stderr(io.StringIO()):
            finder = Tuner(trainer).lr_find(module, datamodule=datamodule, update_attr=False, **finder_args)
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    if finder is None:  # fast_dev_run: Lightning skips the test, and says so
        return module.lr
    lr = steepest_descent(finder.results["lr"], finder.results["loss"])
    if lr is None:
        raise ConfigError(
            f"lr_find=true: the loss never fell in the range test from lr_finder.min_lr={finder_args.min_lr} "
            f"to max_lr={finder_args.max_lr} ({len(finder.results['lr'])} steps); set optimizer.lr and lr_find=false"
        )
    log.info("lr_find suggests lr=%.3g; training with it", lr)
    return lr


def fit_and_evaluate(
    cfg: DictConfig,
    datamodule: ArrayDataModule,
    module: ClassificationModule,
    metric: OptimizedMetric,
    objectives: list[str],
    epoch_pruning: bool = True,
) -> RunOutcome:
    """Fit in `cfg.output_dir`, evaluate the best checkpoint on val and test, write metrics.json there."""
    net = module.net
    output_dir = Path(cfg.output_dir)
    trainer = build_trainer(cfg, metric, output_dir, epoch_pruning)
    output_dir.mkdir(parents=True, exist_ok=True)

    if flag(cfg, "lr_find"):
        module.lr = find_lr(trainer, module, datamodule, cfg.lr_finder)

    resume_from = resume_checkpoint(output_dir)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)  # tensors, never code
    except MisconfigurationException as error:  # what Lightning finds wrong once it has the data: a setting
        raise ConfigError(f"trainer: {first_line(error)}") from None
    if resume_from is not None:
        resume_from.unlink(missing_ok=True)  # the trial is past it; best.ckpt holds what is kept
    (best_epoch,) = (callback for callback in trainer.callbacks if isinstance(callback, BestEpochMetrics))
    checkpoint = best_epoch.checkpoint.best_model_path or None  # ours, though a user's comes first in the list
    val = best_epoch.kept()
    if val is None:  # no checkpoint, or one whose epoch is unknown here: validate it
        val = trainer.validate(module, datamodule=datamodule, ckpt_path=checkpoint, verbose=False, weights_only=True)[0]
    stage_outputs = {"val": val}
    if "test" in datamodule.splits:
        stage_outputs["test"] = trainer.test(
            module, datamodule=datamodule, ckpt_path=checkpoint, verbose=False, weights_only=True
        )[0]
    results = collect_results(stage_outputs)
    results["model"] = {"params": float(sum(p.numel() for p in net.parameters() if p.requires_grad))}
    if "model/latency_ms" in objectives:
        results["model"]["latency_ms"] = measure_latency_ms(net, datamodule.input_shape)
    values = [results[name.split("/")[0]][name.split("/")[1]] for name in objectives]
    extra = {
        "optimized_metric": metric.name,
        "value": results["val"][metric.metric],
        "epochs": trainer.current_epoch,
        "lr": module.lr,  # trained with: lr_find's suggestion with lr_find=true
    }
    if cfg.get("objectives"):
        extra["objectives"] = dict(zip(objectives, values))
    if trainer.is_global_zero:  # under DDP every process gets here, with the same (reduced) metrics
        write_metrics(output_dir / "metrics.json", results, {**extra, "best_checkpoint": checkpoint})
        log_hparams(trainer.loggers, run_settings(cfg, module.lr), {stage: results[stage] for stage in stage_outputs})
    log.info("best checkpoint: %s\n%s", checkpoint, format_table(results))
    return RunOutcome(values, results, trainer.current_epoch, module.lr)


def discard_run_dir() -> None:
    """Remove the run directory Hydra made for a run refused before it wrote anything: it holds only Hydra's
    `.hydra/` and log. A directory with anything else in it (an earlier run's files, `hydra.run.dir=.`) stays."""
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    if {path.name for path in run_dir.iterdir()} <= {".hydra", f"{hydra.job.name}.log"}:
        logging.shutdown()  # Hydra's file handler holds the log open
        shutil.rmtree(run_dir)
        for parent in run_dir.parents:  # outputs/<date>/ and outputs/, once empty
            if parent == Path.cwd() or any(parent.iterdir()):
                break
            parent.rmdir()


def run_from_hydra(cfg: DictConfig) -> Union[float, list[float]]:
    """`train`, with a configuration mistake or a diverged run reported as one line, not a traceback; a
    refused single run leaves no directory behind."""
    trial = bool(cfg.get("trial")) and cfg.trial.get("number") is not None  # a trial of our sweeper
    if trial:
        from lightning_tune.sweeping.trial import log_trial_ends_on_one_line

        log_trial_ends_on_one_line()
    try:
        try:
            return train(cfg)
        except (InterpolationResolutionError, MissingMandatoryValue) as error:  # `${oc.env:UNSET}`, a `???` left
            raise ConfigError(hydra_error_line(error)) from None
    except (ConfigError, TrainingDiverged) as error:
        if trial:
            log.error("%s", error)
            raise  # the sweeper records the failed trial and its reason
        # A single run, or a job of Hydra's own multirun (`-m optimizer.lr=0.01,-1`), which would print the
        # traceback; the jobs before it keep their results.
        if isinstance(error, ConfigError) and HydraConfig.initialized():
            discard_run_dir()  # a multirun's directory keeps its other jobs: only the job's own goes
        sys.exit(f"error: {error}")
