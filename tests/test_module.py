"""The training epoch's outputs: metrics from them equal torchmetrics updated every step, divergence is found once."""

import math

import pytest
import torch

from lightning_tune.metrics import classification_metrics
from lightning_tune.module import EpochOutputs

NUM_CLASSES = 5


def steps(count: int, batch_size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, targets) of `count` steps; the last batch is shorter, and class 4 is never the target."""
    torch.manual_seed(0)
    sizes = [batch_size] * (count - 1) + [batch_size // 2 + 1]
    return [(torch.randn(size, NUM_CLASSES), torch.randint(0, NUM_CLASSES - 1, (size,))) for size in sizes]


def predicted_zeros(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) of a step whose content does not matter."""
    return torch.zeros(size, NUM_CLASSES), torch.zeros(size, dtype=torch.long)


def test_epoch_metrics_equal_torchmetrics_updated_every_step() -> None:
    per_step, per_epoch = classification_metrics(NUM_CLASSES), classification_metrics(NUM_CLASSES)
    outputs = EpochOutputs()
    for batch, (logits, targets) in enumerate(steps(6)):
        per_step.update(logits, targets)
        outputs.add(batch, logits, targets, torch.tensor(1.0), None)
    per_epoch.update(*outputs.labels())
    expected, actual = per_step.compute(), per_epoch.compute()
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)


def test_epoch_mean_weights_each_step_by_its_batch_size() -> None:
    outputs = EpochOutputs()
    for batch, (size, loss) in enumerate([(16, 1.0), (16, 2.0), (4, 10.0)]):
        outputs.add(batch, *predicted_zeros(size), torch.tensor(loss), None)
    assert outputs.mean(outputs.losses).item() == pytest.approx((16 * 1.0 + 16 * 2.0 + 4 * 10.0) / 36)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_first_non_finite_loss_is_reported_once_with_its_batch(bad: float) -> None:
    outputs = EpochOutputs()
    for batch, loss in enumerate([1.0, 2.0, bad, math.nan]):
        outputs.add(batch + 3, *predicted_zeros(2), torch.tensor(loss), None)
    batch, value = outputs.first_non_finite()
    assert batch == 5 and (math.isnan(value) if math.isnan(bad) else value == bad)
    assert outputs.first_non_finite() is None  # those steps are checked; only new ones are looked at


def test_a_non_finite_penalty_is_divergence_too() -> None:
    outputs = EpochOutputs()
    for batch, penalty in enumerate([0.5, math.inf]):
        outputs.add(batch, *predicted_zeros(2), torch.tensor(1.0), torch.tensor(penalty))
    assert outputs.first_non_finite() == (1, math.inf)


@pytest.mark.parametrize("batch_size, every, logged", [(150, 3, [2, 5, 6]), (16, 3, list(range(7)))])
def test_train_metrics_of_epochs_shorter_than_the_log_interval_are_logged_at_its_steps_and_the_end(
    make_cfg, tmp_path, batch_size, every, logged
):
    """Full-batch iris (one step an epoch): epochs 2 and 5 hold steps 3 and 6, and 6 is the last; with
    batches of 16 (7 steps an epoch) every epoch holds a logging step."""
    from lightning_tune.run import train

    train(make_cfg("data=iris", "model=linear", f"data.batch_size={batch_size}", "trainer.max_epochs=7",
                   f"trainer.log_every_n_steps={every}", "logger=csv"))  # fmt: skip
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    epochs = [int(row.split(",")[header.index("epoch")]) for row in rows[1:] if row.split(",")[header.index("train/acc")]]
    assert epochs == logged
