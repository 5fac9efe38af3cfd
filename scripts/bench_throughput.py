"""Training throughput of our Lightning path against a hand-written PyTorch loop (issue 5).

    python scripts/bench_throughput.py [--repeats 5] [--epochs N] [--threads 2] [--extras] [--loaders] [--fused] [--num-samples N] [--cases NAME ...]

Three ways of training the same network (same seed, same initial weights) on the same in-memory
training tensors, with the same batch size and optimizer, in this process, in turn, after one
untimed warm-up round (`--repeats` timed rounds):

- `ours`: conf/train.yaml composed with the case's overrides and built by `lightning_tune.run`'s
  `build_run` and `build_trainer`, as `python train.py` builds them: our module, our data module's
  tensor batches, checkpointing and the TensorBoard logger a sweep trial has (into a temporary
  directory); validation off (`+trainer.limit_val_batches=0`, no sanity check). Timed: `trainer.fit`.
- `floor`: the same, with a module whose training step is only forward and cross-entropy (no
  metrics, no logging, no divergence check): what Lightning's own loop costs, which ours cannot beat.
- `hand`: `net.train()`, then per epoch one `randperm` gather and batches sliced from it (the same
  batches as ours: a final batch of one is dropped), forward, cross-entropy, `zero_grad`, backward,
  `optimizer.step()`. Timed: the loop.

Prints JSON: samples/s of each round and the median of each side; `throughput_ratio`, the median
over rounds of ours / hand in the same round (the machine drifts: rounds far apart compare worse),
with each round's ratio in `throughput_ratios`; `floor_ratio`, the same for floor / hand. `--extras`
adds ResNet variants (channels_last, compile, bf16-mixed), each against the hand loop with
the same setting, and against ours in plain fp32 (`speedup_vs_fp32`, of the medians); one that this
machine cannot run is skipped with the reason. `--loaders` times the tensor-resident loader against
torch's `DataLoader` over a `TensorDataset` (per-sample indexing and collation, as most training
scripts load in-memory data): one epoch of batches only, and the hand loop of the CNN on digits fed
by each (`loaders`). `--fused` adds, for the CNN on digits, what closing its gap would take: Lightning's
lightest loop (manual optimization, no logger, checkpoint or metrics) with 1 or 4 batches, or the whole
epoch, per training step (`fused_*_ratio`).
"""

import argparse
import contextlib
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from torch.utils.data import DataLoader, TensorDataset

from lightning_tune.metrics import OptimizedMetric
from lightning_tune.module import ClassificationModule
from lightning_tune.run import build, build_run, build_trainer
from lightning_tune.schemas import register_schemas

ROOT = Path(__file__).resolve().parents[1]
# Training only, with what a sweep trial has: the TensorBoard logger and checkpointing.
TRAINING_ONLY = ["trainer=cpu", "+trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "logger=tensorboard"]
CASES = {  # name: (overrides of `python train.py`, epochs per timed run)
    "cnn_digits": (["model=cnn", "data=digits"], 30),  # `python train.py`'s 30 epochs of 20 steps
    "resnet_synthetic": (["model=resnet", "data=synthetic"], 1),
}
EXTRAS = {  # ResNet variants, compared with resnet_synthetic in fp32
    "resnet_channels_last": (["model=resnet", "data=synthetic", "channels_last=true"], 1),
    "resnet_compile": (["model=resnet", "data=synthetic", "compile=true"], 1),
    # A CPU without bf16 instructions (no AVX-512 BF16 or AMX) runs it ~12x slower than fp32: fewer samples.
    "resnet_bf16_mixed": (
        ["model=resnet", "data=synthetic", "trainer.precision=bf16-mixed", "data.num_samples=400"],
        1,
    ),
}
LOADER_CASES = {"digits": ["data=digits"], "synthetic_3x32x32": ["data=synthetic"]}


class FloorModule(ClassificationModule):
    """Our module less its own per-step and per-epoch work: forward and cross-entropy only."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.forward(x), y)

    def on_train_epoch_end(self) -> None:
        pass


def compose_cfg(overrides: list[str], epochs: int, output_dir: str) -> DictConfig:
    """conf/train.yaml with the case's overrides, as `python train.py <overrides>` composes it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf")):
        return compose(
            config_name="train",
            overrides=[*TRAINING_ONLY, *overrides, f"trainer.max_epochs={epochs}", f"output_dir={output_dir}"],
        )


def samples_per_epoch(size: int, batch_size: int) -> int:
    """What one epoch trains on: every sample, less a final batch of one (which would break batch norm)."""
    return size - 1 if size % batch_size == 1 and size > 1 else size


def fit(cfg: DictConfig, module_class: type[ClassificationModule]) -> float:
    """Seconds of `trainer.fit`, with the data, module and trainer built as `lightning_tune.run.train` builds them."""
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build_run(cfg)
    if module_class is not ClassificationModule:
        module = module_class(
            module.net,
            module.optimizer_factory,
            num_classes=datamodule.num_classes,
            regularization=module.regularization,
            schedule=module.schedule,
            optimized_metric=cfg.optimized_metric,
            channels_last=module.channels_last,
        )
    trainer = build_trainer(cfg, OptimizedMetric.parse(cfg.optimized_metric), Path(cfg.output_dir))
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    if trainer.current_epoch != cfg.trainer.max_epochs:
        raise RuntimeError(f"fit stopped after {trainer.current_epoch} of {cfg.trainer.max_epochs} epochs")
    return seconds


def run_ours(cfg: DictConfig) -> float:
    return fit(cfg, ClassificationModule)


def run_floor(cfg: DictConfig) -> float:
    return fit(cfg, FloorModule)


def sliced_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch as our tensor batches serve it: one `randperm` gather, then slices (a final batch of one dropped)."""
    order = torch.randperm(len(y))
    xs, ys = x[order], y[order]
    for begin in range(0, samples_per_epoch(len(y), batch_size), batch_size):
        yield xs[begin : begin + batch_size], ys[begin : begin + batch_size]


def dataloader_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, workers: int = 0) -> DataLoader:
    """One epoch as most training scripts load in-memory data: per-sample indexing and collation."""
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, num_workers=workers)


def run_hand(cfg: DictConfig, batches: Callable[[torch.Tensor, torch.Tensor, int], Iterable[Any]] = sliced_batches) -> float:
    """Seconds of a plain PyTorch loop over the same batches as ours, or over those `batches(x, y, batch_size)` makes."""
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build_run(cfg)  # the same network, initialized from the same seed
    net, (x, y) = module.net, datamodule.splits["train"]
    optimizer = build(cfg.optimizer, "optimizer")(net.parameters())
    autocast = precision_context(cfg.trainer.precision)
    start = time.perf_counter()
    net.train()
    for _ in range(cfg.trainer.max_epochs):
        for inputs, targets in batches(x, y, datamodule.batch_size):
            if module.channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast():
                loss = F.cross_entropy(net(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def precision_context(precision: str) -> Callable[[], Any]:
    """What Lightning's `bf16-mixed` does on CPU: autocast to bfloat16; nothing in full precision. (On CPU,
    Lightning trains `16-mixed` as `bf16-mixed` too, with a warning.)"""
    if precision == "bf16-mixed":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    if precision != "32-true":
        raise ValueError(f"no hand-written loop for precision {precision}")
    return contextlib.nullcontext


class FusedSteps(pl.LightningModule):
    """What closing the last gap would take: manual optimization, and several batches per Lightning step,
    so that Lightning's per-step work is paid once per chunk; no logger, no checkpoint, no metrics."""

    def __init__(self, net: torch.nn.Module, optimizer_factory: Callable[..., torch.optim.Optimizer]) -> None:
        super().__init__()
        self.net, self.optimizer_factory = net, optimizer_factory
        self.automatic_optimization = False

    def training_step(self, chunk: list[tuple[torch.Tensor, torch.Tensor]], batch_idx: int) -> None:
        optimizer = self.optimizers()
        for inputs, targets in chunk:
            loss = F.cross_entropy(self.net(inputs), targets)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.net.parameters())


class Chunks:
    """An epoch of our tensor batches, `size` batches per item."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, size: int) -> None:
        self.x, self.y, self.batch_size, self.size = x, y, batch_size, size

    def __len__(self) -> int:
        return math.ceil(math.ceil(samples_per_epoch(len(self.y), self.batch_size) / self.batch_size) / self.size)

    def __iter__(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        batches = list(sliced_batches(self.x, self.y, self.batch_size))
        for begin in range(0, len(batches), self.size):
            yield batches[begin : begin + self.size]


def run_fused(cfg: DictConfig, chunk: int) -> float:
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build_run(cfg)
    x, y = datamodule.splits["train"]
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=cfg.trainer.max_epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(FusedSteps(module.net, build(cfg.optimizer, "optimizer")), train_dataloaders=Chunks(x, y, datamodule.batch_size, chunk))
    return time.perf_counter() - start


SIDES = {"ours": run_ours, "hand": run_hand, "floor": run_floor}
FUSED_SIDES = {  # --fused: Lightning's lightest loop, 1 and 4 batches per step, and the whole epoch in one step
    "fused_1": lambda cfg: run_fused(cfg, 1),
    "fused_4": lambda cfg: run_fused(cfg, 4),
    "fused_epoch": lambda cfg: run_fused(cfg, 10**9),
}


def measure(overrides: list[str], epochs: int, repeats: int, fused: bool = False) -> dict[str, Any]:
    """A warm-up round, then `repeats` rounds of ours, hand and floor (in reverse every other round, so
    that a slow drift of the machine evens out); samples/s of each, and each round's ratios to hand."""
    sides = {**SIDES, **(FUSED_SIDES if fused else {})}
    rates: dict[str, list[float]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as output_dir:
        cfg = compose_cfg(overrides, epochs, output_dir)
        datamodule = build(cfg.data, "data")
        datamodule.setup()
        samples = epochs * samples_per_epoch(len(datamodule.splits["train"][1]), datamodule.batch_size)
        for repeat in range(repeats + 1):
            order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
            for side in order:
                seconds = sides[side](cfg)
                if repeat > 0:
                    rates[side].append(samples / seconds)
    ratios = {side: [a / b for a, b in zip(rates[side], rates["hand"])] for side in sides if side != "hand"}
    return {
        "overrides": overrides,
        "epochs": epochs,
        "samples_per_run": samples,
        "samples_per_s": {side: [round(rate, 1) for rate in values] for side, values in rates.items()},
        "median_samples_per_s": {side: round(statistics.median(values), 1) for side, values in rates.items()},
        "throughput_ratio": round(statistics.median(ratios["ours"]), 3),
        "throughput_ratios": [round(ratio, 3) for ratio in ratios["ours"]],
        "floor_ratio": round(statistics.median(ratios["floor"]), 3),
        **{f"{side}_ratio": round(statistics.median(ratios[side]), 3) for side in FUSED_SIDES if side in ratios},
    }


def measure_extra(overrides: list[str], epochs: int, repeats: int, fp32: Optional[dict[str, Any]]) -> dict[str, Any]:
    """A variant against the hand loop with the same setting and against ours in fp32 (when that case ran),
    or why it was skipped."""
    try:
        result = measure(overrides, epochs, repeats)
    except Exception as error:  # the point is to report what this machine cannot run
        return {"overrides": overrides, "skipped": f"{type(error).__name__}: {error}".splitlines()[0]}
    if fp32 is not None:
        speedup = result["median_samples_per_s"]["ours"] / fp32["median_samples_per_s"]["ours"]
        result["speedup_vs_fp32"] = round(speedup, 3)
    return result


def measure_loaders(repeats: int) -> dict[str, Any]:
    """Samples/s of one epoch of batches alone (tensor batches, DataLoader, DataLoader with 2 workers), and
    of the CNN's hand loop on digits fed by tensor batches or by a DataLoader; medians of `repeats` rounds."""
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as output_dir:
        for name, overrides in LOADER_CASES.items():
            datamodule = build(compose_cfg(overrides, 1, output_dir).data, "data")
            datamodule.setup()
            x, y = datamodule.splits["train"]
            loaders = {
                "tensor_batches": lambda: datamodule.train_dataloader(),
                "dataloader": lambda: dataloader_batches(x, y, datamodule.batch_size),
                "dataloader_2_workers": lambda: dataloader_batches(x, y, datamodule.batch_size, workers=2),
            }
            rates: dict[str, list[float]] = {loader: [] for loader in loaders}
            for _ in range(repeats):
                for loader, make in loaders.items():
                    start = time.perf_counter()
                    count = sum(len(targets) for _, targets in make())
                    rates[loader].append(count / (time.perf_counter() - start))
            result[f"{name}_batches_only"] = {loader: round(statistics.median(r)) for loader, r in rates.items()}
        cfg = compose_cfg(CASES["cnn_digits"][0], CASES["cnn_digits"][1], output_dir)
        seconds: dict[str, list[float]] = {"tensor_batches": [], "dataloader": []}
        for _ in range(repeats):
            seconds["tensor_batches"].append(run_hand(cfg))
            seconds["dataloader"].append(run_hand(cfg, dataloader_batches))
        medians = {loader: statistics.median(s) for loader, s in seconds.items()}
        result["cnn_digits_hand_loop_s"] = {loader: round(s, 3) for loader, s in medians.items()}
        result["cnn_digits_hand_loop_speedup_of_tensor_batches"] = round(medians["dataloader"] / medians["tensor_batches"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per case, after one warm-up round")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per timed run (default: per case)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads, for all sides")
    parser.add_argument("--extras", action="store_true", help="also the ResNet with channels_last, compile, mixed precision")
    parser.add_argument("--loaders", action="store_true", help="also tensor batches against torch's DataLoader")
    parser.add_argument("--fused", action="store_true", help="also, for the CNN, Lightning with several batches per step")
    parser.add_argument("--num-samples", type=int, help="data.num_samples of the synthetic cases (default: per case)")
    parser.add_argument("--cases", nargs="+", choices=[*CASES, *EXTRAS], help="only these cases")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    register_schemas()
    names = args.cases or [*CASES, *(EXTRAS if args.extras else [])]
    report: dict[str, Any] = {
        "command": " ".join(["python scripts/bench_throughput.py", *sys.argv[1:]]),
        "timed": "trainer.fit (training only: limit_val_batches=0, TensorBoard logger) vs the hand loop",
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        "cases": {},
    }
    for name in names:
        overrides, epochs = {**CASES, **EXTRAS}[name]
        if args.num_samples and "data=synthetic" in overrides:
            overrides = [*overrides, f"data.num_samples={args.num_samples}"]
        if name in EXTRAS:
            fp32 = report["cases"].get("resnet_synthetic")
            result = measure_extra(overrides, args.epochs or epochs, args.repeats, fp32)
        else:
            result = measure(overrides, args.epochs or epochs, args.repeats, fused=args.fused and name == "cnn_digits")
        report["cases"][name] = result
    if args.loaders:
        report["loaders"] = measure_loaders(args.repeats)
    report["torch_threads_at_end"] = torch.get_num_threads()
    report["load_average_at_end"] = [round(load, 2) for load in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
