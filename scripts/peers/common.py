"""What the plain setup's app and the hand-written loop share with each other (and ours with them, for timing):
the digits data, a plain MLP LightningModule, and the callback that records when each trial trains.

Everything here is what a user would write in a few lines on the plain stack: no lightning-tune import.
"""

import json
import os
import time

import pytorch_lightning as pl
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

TIMES_ENV = "PEER_TIMES"  # the file FitTimer appends one JSON line per trial to


def digits_loaders(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """scikit-learn's digits, 85% to train and 15% to validate (stratified, fixed split), scaled to [0, 1]."""
    features, labels = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        features / 16.0, labels, test_size=0.15, stratify=labels, random_state=0
    )
    train = TensorDataset(torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train))
    val = TensorDataset(torch.tensor(x_val, dtype=torch.float32), torch.tensor(y_val))
    return DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(val, batch_size=8 * batch_size)


class PlainMLP(pl.LightningModule):
    """64 inputs, one hidden layer of `width` units with dropout, 10 classes; Adam at `lr`."""

    def __init__(self, lr: float, dropout: float, width: int = 64) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 10))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class FitTimer(pl.Callback):
    """Appends {"fit_start", "fit_end"} (time.time(), s) of each trial's training to $PEER_TIMES."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_start = time.time()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with open(os.environ[TIMES_ENV], "a") as times:
            times.write(json.dumps({"fit_start": self.fit_start, "fit_end": time.time()}) + "\n")
