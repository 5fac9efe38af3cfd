"""L1, L2 and dropout: which tensors are penalized, and by how much.

L2 comes in two forms (`l2_mode`):
- `weight_decay`: the optimizer's `weight_decay` on the penalized tensors. For SGD, Adam and
  RMSprop this is the coupled form, the gradient of l2/2 * sum(w^2) added to the gradient (and
  rescaled by Adam's adaptive step); for AdamW it is decoupled decay, w <- w - lr * l2 * w, which
  does not pass through the adaptive step (Loshchilov & Hutter 2019).
- `penalty`: l2/2 * sum(w^2) added to the loss explicitly; same gradient as coupled weight decay,
  but visible in the logged loss and the same for every optimizer, AdamW included.
L1 is always explicit: l1 * sum(|w|) added to the training loss.

`regularization=sklearn` takes scikit-learn's `C` and `penalty` instead (`SklearnRegularization`).
"""

from dataclasses import dataclass

import torch
from torch import nn

from lightning_tune.errors import ConfigError

L2_MODES = ("weight_decay", "penalty")


@dataclass(frozen=True)
class Regularization:
    l1: float = 0.0
    l2: float = 0.0
    dropout: float = 0.0
    l2_mode: str = "weight_decay"
    exclude_bias_and_norm: bool = True

    def __post_init__(self) -> None:
        for key in ("l1", "l2"):
            if getattr(self, key) < 0:
                raise ConfigError(f"regularization.{key}={getattr(self, key)} must be >= 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"regularization.dropout={self.dropout} must be in [0, 1)")
        if self.l2_mode not in L2_MODES:
            raise ConfigError(f"regularization.l2_mode={self.l2_mode!r} is not valid; choose one of: {', '.join(L2_MODES)}")

    def for_train_size(self, n_train: int) -> "Regularization":
        """The regularization of a run whose training split holds `n_train` samples: this one."""
        return self

    @property
    def weight_decay(self) -> float:
        """What the optimizer applies to the penalized tensors."""
        return self.l2 if self.l2_mode == "weight_decay" else 0.0

    @property
    def has_loss_penalty(self) -> bool:
        return self.l1 > 0 or (self.l2 > 0 and self.l2_mode == "penalty")

    def penalty(self, params: list[torch.Tensor]) -> torch.Tensor:
        """The term added to the training loss: l1 * sum|w| (+ l2/2 * sum w^2 in penalty mode)."""
        if not params:
            return torch.zeros(())
        total = params[0].new_zeros(())
        if self.l1 > 0:
            total = total + self.l1 * torch.stack([p.abs().sum() for p in params]).sum()
        if self.l2 > 0 and self.l2_mode == "penalty":
            total = total + 0.5 * self.l2 * torch.stack([p.pow(2).sum() for p in params]).sum()
        return total


SKLEARN_PENALTIES = ("l1", "l2", "elasticnet", "none")


@dataclass(frozen=True)
class SklearnRegularization:
    """scikit-learn's `LogisticRegression(C=..., penalty=...)`, as our `l1` and `l2`.

    scikit-learn minimizes C * sum_i loss_i + penalty(w), with penalty(w) = sum|w| for l1 and
    sum(w^2) / 2 for l2 (elasticnet: l1_ratio * the first + (1 - l1_ratio) * the second), the intercept
    unpenalized. Divided by C * n, that is mean loss + penalty(w) / (C * n), and our training loss is the
    batch mean: so l1 = 1 / (C * n) and, with l2_mode=penalty (which adds l2/2 * sum w^2), l2 = 1 / (C * n),
    n being the size of the training split (of the fold, with cv.folds), known once the data is built.
    """

    C: float = 1.0
    penalty: str = "l2"
    l1_ratio: float = 0.5  # elasticnet only: the L1 share
    dropout: float = 0.0
    exclude_bias_and_norm: bool = True

    def __post_init__(self) -> None:
        if not self.C > 0:
            raise ConfigError(f"regularization.C={self.C} must be > 0 (the inverse regularization strength)")
        if self.penalty not in SKLEARN_PENALTIES:
            valid = ", ".join(SKLEARN_PENALTIES)
            raise ConfigError(f"regularization.penalty={self.penalty!r} is not valid; choose one of: {valid}")
        if not 0 <= self.l1_ratio <= 1:
            raise ConfigError(f"regularization.l1_ratio={self.l1_ratio} must be in [0, 1]")
        Regularization(dropout=self.dropout)  # checks the dropout

    def for_train_size(self, n_train: int) -> Regularization:
        strength = 1.0 / (self.C * n_train)
        l1_share = {"l1": 1.0, "l2": 0.0, "elasticnet": self.l1_ratio, "none": 0.0}[self.penalty]
        l2_share = 0.0 if self.penalty == "none" else 1.0 - l1_share
        return Regularization(
            l1=l1_share * strength,
            l2=l2_share * strength,
            dropout=self.dropout,
            l2_mode="penalty",
            exclude_bias_and_norm=self.exclude_bias_and_norm,
        )


def split_parameters(net: nn.Module, exclude_bias_and_norm: bool = True) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(penalized, exempt) trainable parameters.

    With `exclude_bias_and_norm`, tensors of dimension < 2 (biases, norm scales and shifts) are
    exempt: penalizing them constrains nothing useful and can hurt (nanoGPT's rule).
    """
    penalized, exempt = [], []
    for param in net.parameters():
        if not param.requires_grad:
            continue
        (exempt if exclude_bias_and_norm and param.ndim < 2 else penalized).append(param)
    return penalized, exempt
