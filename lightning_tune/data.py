"""Data modules: every built-in data set is held in memory as tensors and served in whole batches.

A split is stratified and fixed by `split_seed`, so all trials of a sweep see the same split;
normalization statistics come from the training split only. With `cv.folds=k`, the samples outside
the test split (the CV pool, in the data set's own order) are cut into k stratified folds by
`fold_indices`, also fixed by `split_seed`: fold i is the validation split, the other folds train.
"""

import math
from abc import abstractmethod
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_tune.errors import ConfigError

Arrays = tuple[np.ndarray, np.ndarray]


def fold_indices(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) indices into `labels` of each of `folds` stratified folds: scikit-learn's
    `StratifiedKFold(folds, shuffle=True, random_state=seed)`, so anyone can rebuild them."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    smallest = int(counts[counts > 0].min()) if len(labels) else 0
    if folds > smallest:  # a fold without some class: StratifiedKFold would only warn
        valid = f"choose 2 to {smallest}" if smallest >= 2 else "it needs two samples of every class"
        raise ConfigError(
            f"cv.folds={folds} is more than the {smallest} sample(s) of the smallest class in the CV pool; "
            f"{valid} (or null: no cross-validation)"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(labels), 1)), labels))


class TensorBatches:
    """Batches sliced from tensors: one shuffle (a single gather) per epoch, no per-sample Python.

    Under DDP each process takes its own interleaved share of the permutation.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, rank: int = 0, world_size: int = 1
    ) -> None:
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.rank, self.world_size = rank, world_size
        self.size = len(y) // world_size  # equal shares, so no process waits on another
        # A final batch of one sample would break batch norm in training: drop it there.
        self.drop_last = shuffle and self.size % batch_size == 1 and self.size > 1

    def __len__(self) -> int:
        return self.size // self.batch_size if self.drop_last else math.ceil(self.size / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.x, self.y
        if self.shuffle or self.world_size > 1:
            order = torch.randperm(len(y)) if self.shuffle else torch.arange(len(y))
            order = order[: self.size * self.world_size][self.rank :: self.world_size]
            x, y = x[order], y[order]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield x[start : start + self.batch_size], y[start : start + self.batch_size]


# The splits last set up, by source: read-only tensors that the next trial of a sweep may share.
LAST_SPLITS: dict[tuple[Any, ...], dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}


class ArrayDataModule(pl.LightningDataModule):
    """A classification data set that fits in memory; subclasses only say how to load the arrays."""

    name = "array"

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: Optional[int] = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size} must be a positive int")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ConfigError(f"data.eval_batch_size={eval_batch_size} must be a positive int or null")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers={num_workers} must be >= 0")
        if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ConfigError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be in (0, 1) "
                "and [0, 1), with a sum below 1"
            )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 8 * batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.fold: Optional[tuple[int, int]] = None  # (index, count) with cv.folds: `use_fold`
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @abstractmethod
    def load(self) -> Arrays:
        """All samples (float features or images shaped N x C x H x W) and integer labels."""

    def split(self, x: np.ndarray, y: np.ndarray, test_size: float) -> list[np.ndarray]:
        """sklearn's stratified split; a split too small to hold every class is a configuration mistake."""
        from sklearn.model_selection import train_test_split

        try:
            return train_test_split(x, y, test_size=test_size, stratify=y, random_state=self.split_seed)
        except ValueError as error:
            raise ConfigError(
                f"data.val_fraction={self.val_fraction} and data.test_fraction={self.test_fraction} leave a split "
                f"too small to stratify; make them larger ({str(error).splitlines()[0]})"
            ) from None

    def split_indices(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Stratified train/val(/test) indices into `load()`'s arrays."""
        held_out = self.val_fraction + self.test_fraction
        train, rest, _, y_rest = self.split(np.arange(len(y)), y, held_out)
        if self.test_fraction == 0:
            return {"train": train, "val": rest}
        val, test, _, _ = self.split(rest, y_rest, self.test_fraction / held_out)
        return {"train": train, "val": val, "test": test}

    def load_splits(self) -> dict[str, Arrays]:
        """Stratified train/val/test; data sets with an official test split override this and `cv_pool`."""
        x, y = self.load()
        return {name: (x[index], y[index]) for name, index in self.split_indices(y).items()}

    def cv_pool(self) -> tuple[Arrays, Optional[Arrays]]:
        """(pool, test) for cross-validation: every sample outside the test split, in `load()`'s order, and
        the test split, the same as without cross-validation (None when `test_fraction` is 0)."""
        x, y = self.load()
        index = self.split_indices(y)
        if "test" not in index:
            return (x, y), None
        pool = np.sort(np.concatenate([index["train"], index["val"]]))
        return (x[pool], y[pool]), (x[index["test"]], y[index["test"]])

    def use_fold(self, index: int, folds: int) -> None:
        """Serve fold `index` of `folds` (`cv.folds`) as the validation split, the other folds as training."""
        self.fold, self.splits = (index, folds), {}

    def fold_splits(self) -> dict[str, Arrays]:
        """The train/val(/test) arrays of the fold chosen by `use_fold`."""
        assert self.fold is not None
        index, folds = self.fold
        (x, y), test = self.cv_pool()
        train, val = fold_indices(y, folds, self.split_seed)[index]
        arrays = {"train": (x[train], y[train]), "val": (x[val], y[val])}
        return arrays if test is None else {**arrays, "test": test}

    @property
    def train_size(self) -> int:
        """Samples in the training split (of this fold, with cross-validation)."""
        self.setup()
        return len(self.splits["train"][1])

    def source(self) -> Optional[tuple[Any, ...]]:
        """All that the split tensors depend on (not the batch size), so that the trials of an in-process
        sweep load and normalize them once; None, the default for a subclass that does not say: load anew."""
        return None

    def split_source(self) -> tuple[Any, ...]:
        return type(self).__qualname__, self.val_fraction, self.test_fraction, self.split_seed, self.pin_memory

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits:
            return
        source = self.source()
        if source is None:
            self.splits = self.normalized_splits()
            return
        source = (*source, self.fold)
        if source not in LAST_SPLITS:
            LAST_SPLITS.clear()
            LAST_SPLITS[source] = self.normalized_splits()
        self.splits = LAST_SPLITS[source]

    def normalized_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        arrays = self.load_splits() if self.fold is None else self.fold_splits()
        x_train = arrays["train"][0].astype(np.float32)
        # Per-channel statistics for images, per-feature for tabular data; train split only.
        axes = (0, 2, 3) if x_train.ndim == 4 else 0
        mean = x_train.mean(axis=axes, keepdims=True)
        std = x_train.std(axis=axes, keepdims=True) + 1e-6
        splits = {}
        for name, (x, y) in arrays.items():
            features = torch.from_numpy(((x.astype(np.float32) - mean) / std).astype(np.float32))
            labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
            if self.pin_memory and torch.cuda.is_available():
                features, labels = features.pin_memory(), labels.pin_memory()
            splits[name] = (features, labels)
        return splits

    @property
    def input_shape(self) -> tuple[int, ...]:
        self.setup()
        return tuple(self.splits["train"][0].shape[1:])

    @property
    def num_classes(self) -> int:
        self.setup()
        return int(max(int(labels.max()) for _, labels in self.splits.values())) + 1

    def _loader(self, split: str, shuffle: bool):
        self.setup()
        if split not in self.splits:
            raise ConfigError(f"data.test_fraction={self.test_fraction} leaves no {split} split; make it > 0")
        x, y = self.splits[split]
        batch_size = self.batch_size if shuffle else self.eval_batch_size
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        batches = TensorBatches(x, y, batch_size, shuffle, rank, world)
        if self.num_workers > 0:
            return DataLoader(
                TensorDataset(x, y),
                batch_size=batch_size,
                shuffle=shuffle,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                persistent_workers=True,
                drop_last=batches.drop_last,  # the same batches as without workers
            )
        return batches

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)


class DigitsDataModule(ArrayDataModule):
    """scikit-learn's 8x8 digits (1797 images, 10 classes), shaped 1 x 8 x 8."""

    def load(self) -> Arrays:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images[:, None].astype(np.float32), digits.target

    def source(self) -> tuple[Any, ...]:
        return self.split_source()


class IrisDataModule(ArrayDataModule):
    """scikit-learn's iris (150 flowers, 4 features, 3 classes)."""

    def load(self) -> Arrays:
        from sklearn.datasets import load_iris

        iris = load_iris()
        return iris.data.astype(np.float32), iris.target

    def source(self) -> tuple[Any, ...]:
        return self.split_source()


class SyntheticDataModule(ArrayDataModule):
    """Gaussian clusters of any shape: one random mean per class, `noise` around it."""

    def __init__(
        self,
        input_shape: tuple[int, ...] = (3, 32, 32),
        num_classes: int = 10,
        num_samples: int = 2048,
        noise: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not input_shape or any(int(d) < 1 for d in input_shape):
            raise ConfigError(f"data.input_shape={list(input_shape)} must be a non-empty list of positive ints")
        if num_classes < 2:
            raise ConfigError(f"data.num_classes={num_classes} must be at least 2")
        if num_samples < 10 * num_classes:
            raise ConfigError(f"data.num_samples={num_samples} must be at least 10 x data.num_classes")
        self.shape, self.classes, self.num_samples, self.noise = tuple(input_shape), num_classes, num_samples, noise

    def source(self) -> tuple[Any, ...]:
        return (*self.split_source(), self.shape, self.classes, self.num_samples, self.noise)

    def load(self) -> Arrays:
        rng = np.random.default_rng(self.split_seed)
        means = rng.normal(size=(self.classes, *self.shape)).astype(np.float32)
        labels = np.arange(self.num_samples) % self.classes
        samples = means[labels] + self.noise * rng.normal(size=(self.num_samples, *self.shape)).astype(np.float32)
        return samples, labels


class TorchvisionDataModule(ArrayDataModule):
    """A torchvision data set loaded once into memory; validation comes out of the official train split."""

    dataset_name = ""
    option = ""

    def __init__(self, data_dir: str = "./data", download: bool = True, **kwargs) -> None:
        kwargs.setdefault("test_fraction", 0.0)
        super().__init__(**kwargs)
        try:
            import torchvision.datasets
        except Exception as error:  # ImportError, or a torchvision built for another torch
            raise ConfigError(
                f"data={self.option} needs torchvision: pip install 'lightning-tune[vision]' ({error})"
            ) from None
        self.dataset_class = getattr(torchvision.datasets, self.dataset_name)
        self.data_dir, self.download = data_dir, download

    def source(self) -> tuple[Any, ...]:
        return (*self.split_source(), str(Path(self.data_dir).resolve()))

    def _arrays(self, train: bool) -> Arrays:
        dataset = self.dataset_class(self.data_dir, train=train, download=self.download)
        images = np.asarray(dataset.data, dtype=np.float32) / 255.0
        images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)  # N x C x H x W
        return images, np.asarray(dataset.targets)

    def load(self) -> Arrays:
        return self._arrays(train=True)

    def load_splits(self) -> dict[str, Arrays]:
        x, y = self.load()
        x_train, x_val, y_train, y_val = self.split(x, y, self.val_fraction)
        return {"train": (x_train, y_train), "val": (x_val, y_val), "test": self._arrays(train=False)}

    def cv_pool(self) -> tuple[Arrays, Optional[Arrays]]:
        return self.load(), self._arrays(train=False)  # the official train split, and its test split


class MNISTDataModule(TorchvisionDataModule):
    dataset_name, option = "MNIST", "mnist"


class FashionMNISTDataModule(TorchvisionDataModule):
    dataset_name, option = "FashionMNIST", "fashion_mnist"


class CIFAR10DataModule(TorchvisionDataModule):
    dataset_name, option = "CIFAR10", "cifar10"
