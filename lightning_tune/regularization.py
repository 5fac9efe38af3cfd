"""L1, L2 and dropout: which tensors are penalized, and by how much.

L2 comes in two forms (`l2_mode`):
- `weight_decay`: the optimizer's `weight_decay` on the penalized tensors. For SGD, Adam and
  RMSprop this is the coupled form, the gradient of l2/2 * sum(w^2) added to the gradient (and
  rescaled by Adam's adaptive step); for AdamW it is decoupled decay, w <- w - lr * l2 * w, which
  does not pass through the adaptive step (Loshchilov & Hutter 2019).
- `penalty`: l2/2 * sum(w^2) added to the loss explicitly; same gradient as coupled weight decay,
  but visible in the logged loss and the same for every optimizer, AdamW included.
L1 is always explicit: l1 * sum(|w|) added to the training loss.
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
