"""Data modules: fixed stratified splits, train-only normalization, and batches that cover an epoch once."""

import sys
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_tune.data import (
    ArrayDataModule,
    DigitsDataModule,
    IrisDataModule,
    SyntheticDataModule,
    TensorBatches,
    TorchvisionDataModule,
)
from lightning_tune.errors import ConfigError

ARRAY_MODULES = [DigitsDataModule, IrisDataModule]


def split_ids(module_class: type[ArrayDataModule], **kwargs) -> dict[str, np.ndarray]:
    """Which samples each split holds: the same module and labels, with each sample's index as its feature.

    The split depends on the labels and the seed only, so these are the real module's splits.
    """

    class Indexed(module_class):
        def load(self):
            _, y = super().load()
            return np.arange(len(y), dtype=np.float32)[:, None], y

    return {name: x[:, 0].astype(int) for name, (x, _) in Indexed(**kwargs).load_splits().items()}


@pytest.mark.parametrize("val_fraction, test_fraction", [(0.15, 0.15), (0.2, 0.1), (0.25, 0.0)])
@pytest.mark.parametrize("module_class", ARRAY_MODULES, ids=lambda c: c.__name__)
def test_splits_are_disjoint_sized_by_the_fractions_and_stratified(
    module_class: type[ArrayDataModule], val_fraction: float, test_fraction: float
) -> None:
    _, labels = module_class().load()
    ids = split_ids(module_class, val_fraction=val_fraction, test_fraction=test_fraction)
    assert set(ids) == ({"train", "val", "test"} if test_fraction else {"train", "val"})
    everything = np.concatenate(list(ids.values()))
    assert len(everything) == len(labels) and len(set(everything)) == len(labels)  # each sample in one split
    fractions = {"val": val_fraction, "test": test_fraction, "train": 1 - val_fraction - test_fraction}
    overall = Counter(labels.tolist())
    for name, members in ids.items():
        assert abs(len(members) - fractions[name] * len(labels)) < 1.5, name  # up to rounding
        counts = Counter(labels[members].tolist())
        for label, total in overall.items():
            # Stratified: every class's share of the split is its share of the data, up to rounding.
            assert abs(counts[label] - total / len(labels) * len(members)) <= 1.5, (name, label)


@pytest.mark.parametrize("module_class", ARRAY_MODULES, ids=lambda c: c.__name__)
def test_split_seed_fixes_the_split(module_class: type[ArrayDataModule]) -> None:
    first, again, other = (split_ids(module_class, split_seed=seed) for seed in (0, 0, 1))
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert set(first["val"]) != set(other["val"])


@pytest.mark.parametrize(
    "module_class, input_shape, num_classes", [(DigitsDataModule, (1, 8, 8), 10), (IrisDataModule, (4,), 3)]
)
def test_normalization_uses_train_statistics_only(
    module_class: type[ArrayDataModule], input_shape: tuple[int, ...], num_classes: int
) -> None:
    module = module_class()
    assert module.input_shape == input_shape and module.num_classes == num_classes
    raw, labels = module.load()
    ids = split_ids(module_class)
    axes = (0, 2, 3) if raw.ndim == 4 else 0  # per channel for images, per feature for tables
    mean = raw[ids["train"]].mean(axis=axes, keepdims=True)
    std = raw[ids["train"]].std(axis=axes, keepdims=True)
    for name, (features, split_labels) in module.splits.items():
        assert features.dtype == torch.float32 and split_labels.dtype == torch.int64
        np.testing.assert_array_equal(split_labels.numpy(), labels[ids[name]])
        np.testing.assert_allclose(features.numpy(), (raw[ids[name]] - mean) / (std + 1e-6), atol=1e-4)
    train = module.splits["train"][0].numpy()
    np.testing.assert_allclose(train.mean(axis=axes), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=axes), 1, atol=1e-3)
    for name in ("val", "test"):
        held_out = module.splits[name][0].numpy()
        assert np.abs(held_out.mean(axis=axes)).max() > 1e-3, f"{name} was normalized with its own statistics"


def epoch(batches: TensorBatches) -> list[torch.Tensor]:
    return [x for x, _ in batches]


def test_shuffled_epoch_covers_every_sample_once_in_a_new_order() -> None:
    torch.manual_seed(0)
    x = torch.arange(12)
    batches = TensorBatches(x, x.clone(), batch_size=5, shuffle=True)
    first, second = epoch(batches), epoch(batches)
    assert [len(b) for b in first] == [5, 5, 2] and len(batches) == 3
    for one in (first, second):
        assert sorted(torch.cat(one).tolist()) == list(range(12))
    assert not torch.equal(torch.cat(first), torch.cat(second))
    for xb, yb in batches:
        assert torch.equal(xb, yb)  # features and labels are shuffled together


def test_a_trailing_batch_of_one_is_dropped_in_training_only() -> None:
    x = torch.arange(11)
    train = TensorBatches(x, x, batch_size=5, shuffle=True)
    assert len(train) == 2 and [len(b) for b in epoch(train)] == [5, 5]
    evaluation = TensorBatches(x, x, batch_size=5, shuffle=False)
    assert len(evaluation) == 3 and torch.equal(torch.cat(epoch(evaluation)), x)
    single = TensorBatches(x[:1], x[:1], batch_size=4, shuffle=True)
    assert [len(b) for b in epoch(single)] == [1]  # one sample in all is kept: there is nothing else


@pytest.mark.parametrize("shuffle", [True, False])
def test_ddp_shares_are_disjoint_and_equal_sized(shuffle: bool) -> None:
    """Every process seeds alike, so each draws the same permutation and takes its own interleaved share."""
    x = torch.arange(23)
    shares = []
    for rank in range(3):
        torch.manual_seed(0)
        shares.append(torch.cat(epoch(TensorBatches(x, x, batch_size=4, shuffle=shuffle, rank=rank, world_size=3))))
    assert [len(share) for share in shares] == [7, 7, 7]
    assert len(set(torch.cat(shares).tolist())) == 21


def test_num_workers_gives_a_torch_dataloader_with_the_same_batch_shapes() -> None:
    """Same batches either way, including the dropped trailing batch of one in training."""
    in_memory = DigitsDataModule(batch_size=8)
    workers = DigitsDataModule(batch_size=8, num_workers=1)
    in_memory.setup()
    assert len(in_memory.splits["train"][1]) % 8 == 1
    for name in ("train", "val", "test"):
        plain, loader = getattr(in_memory, f"{name}_dataloader")(), getattr(workers, f"{name}_dataloader")()
        assert isinstance(plain, TensorBatches) and isinstance(loader, DataLoader)
        shapes = [(tuple(x.shape), tuple(y.shape)) for x, y in plain]
        assert [(tuple(x.shape), tuple(y.shape)) for x, y in loader] == shapes
        assert shapes[0] == ((8 if name == "train" else 64, 1, 8, 8), (8 if name == "train" else 64,))


@pytest.mark.parametrize("input_shape, num_classes", [([3, 16, 16], 4), ([20], 7), ([1, 8, 8], 2)])
def test_synthetic_data_of_any_shape_is_learnable(input_shape: list[int], num_classes: int) -> None:
    module = SyntheticDataModule(input_shape=input_shape, num_classes=num_classes, num_samples=40 * num_classes)
    assert module.input_shape == tuple(input_shape) and module.num_classes == num_classes
    x_train, y_train = module.splits["train"]
    x_val, y_val = module.splits["val"]
    # Nearest class mean on the validation split: distinct class means make the data learnable.
    centroids = torch.stack([x_train[y_train == c].mean(0) for c in range(num_classes)]).flatten(1)
    predicted = torch.cdist(x_val.flatten(1), centroids).argmin(1)
    assert (predicted == y_val).float().mean() > 0.9
    again = SyntheticDataModule(input_shape=input_shape, num_classes=num_classes, num_samples=40 * num_classes)
    np.testing.assert_array_equal(again.load()[0], module.load()[0])  # the same split_seed, the same data


@pytest.mark.parametrize(
    "build, key",
    [
        (lambda: DigitsDataModule(batch_size=0), "data.batch_size"),
        (lambda: DigitsDataModule(eval_batch_size=0), "data.eval_batch_size"),
        (lambda: DigitsDataModule(num_workers=-1), "data.num_workers"),
        (lambda: DigitsDataModule(val_fraction=0), "data.val_fraction"),
        (lambda: DigitsDataModule(val_fraction=1.2), "data.val_fraction"),
        (lambda: DigitsDataModule(test_fraction=-0.1), "data.test_fraction"),
        (lambda: IrisDataModule(val_fraction=0.5, test_fraction=0.5), "data.test_fraction"),
        (lambda: IrisDataModule(val_fraction=0.01, test_fraction=0.01).setup(), "data.val_fraction"),
        (lambda: SyntheticDataModule(num_classes=1), "data.num_classes"),
        (lambda: SyntheticDataModule(num_classes=5, num_samples=20), "data.num_samples"),
        (lambda: SyntheticDataModule(input_shape=[3, 0, 8]), "data.input_shape"),
        (lambda: SyntheticDataModule(input_shape=[]), "data.input_shape"),
        (lambda: IrisDataModule(test_fraction=0.0).test_dataloader(), "data.test_fraction"),
    ],
    ids=[
        "batch-size", "eval-batch-size", "workers", "val-zero", "val-above-one", "test-negative", "sum-one",
        "too-small-to-stratify", "one-class", "too-few-samples", "shape-zero", "shape-empty", "no-test-split",
    ],
)
def test_bad_values_raise_one_line_config_error_naming_the_key(build, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert key in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("module_class", TorchvisionDataModule.__subclasses__(), ids=lambda c: c.__name__)
def test_vision_data_without_torchvision_names_the_extra(monkeypatch, module_class: type) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(ConfigError) as error:
        module_class()
    message = str(error.value)
    assert f"data={module_class.option}" in message and "lightning-tune[vision]" in message and "\n" not in message


def test_the_trials_of_a_sweep_share_the_loaded_data_when_its_source_is_the_same():
    """An in-process sweep loads and normalizes its data once; any change to what it depends on loads anew."""
    first = SyntheticDataModule(input_shape=[1, 4, 4], num_samples=200, batch_size=16)
    first.setup()
    same = SyntheticDataModule(input_shape=[1, 4, 4], num_samples=200, batch_size=64)  # another batch size
    same.setup()
    assert same.splits["train"][0] is first.splits["train"][0]
    other = SyntheticDataModule(input_shape=[1, 4, 4], num_samples=200, batch_size=16, split_seed=1)
    other.setup()
    assert not torch.equal(other.splits["train"][0], first.splits["train"][0])

    class OwnData(ArrayDataModule):  # says nothing of its source: never shared
        def load(self):
            return np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32), np.arange(100) % 2

    mine, again = OwnData(), OwnData()
    mine.setup(), again.setup()
    assert mine.splits["train"][0] is not again.splits["train"][0]
