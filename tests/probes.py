"""Callbacks a test passes to `python train.py -m` (`+callbacks.x._target_=probes.X`, with tests/ on
PYTHONPATH) to look inside each trial of an in-process sweep; they write one JSON line per trial to $PROBE_FILE."""

import gc
import json
import os
import pytorch_lightning as pl


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def live(kind: type) -> int:
    """Objects of `kind` that are alive; the type, not isinstance, which weakref proxies pass too."""
    return sum(issubclass(type(obj), kind) for obj in gc.get_objects())


class LeakProbe(pl.Callback):
    """At each trial's start: how many Trainers, LightningModules and TensorBoard writers are alive
    (this trial's own, plus any an earlier trial left behind), and the process's memory, which then
    holds what earlier trials left and this trial's data and model, before it trains."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from torch.utils.tensorboard import SummaryWriter

        gc.collect()
        alive = {"trainers": live(pl.Trainer), "modules": live(pl.LightningModule), "writers": live(SummaryWriter)}
        with open(os.environ["PROBE_FILE"], "a") as probe:
            probe.write(json.dumps({**alive, "rss_mb": rss_mb()}) + "\n")


class ScrambleWeightsAfterFit(pl.Callback):
    """Zeroes the network's weights once training ends: any evaluation that does not reload the best
    checkpoint then scores at chance."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch

        with torch.no_grad():
            for parameter in pl_module.parameters():
                parameter.zero_()


class WorkerProbe(pl.Callback):
    """The process that trains the trial, the GPUs it was given (CUDA_VISIBLE_DEVICES), and how many of its
    objects the garbage collector leaves aside (`gc.freeze`)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seen = {"pid": os.getpid(), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "frozen": gc.get_freeze_count()}
        with open(os.environ["PROBE_FILE"], "a") as probe:
            probe.write(json.dumps(seen) + "\n")


class GcProbe(pl.Callback):
    """At each trial's start: whether the garbage collector runs, the objects it leaves aside (`gc.freeze`),
    and the full collections the process has made so far."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seen = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "full": gc.get_stats()[2]["collections"]}
        with open(os.environ["PROBE_FILE"], "a") as probe:
            probe.write(json.dumps(seen) + "\n")
