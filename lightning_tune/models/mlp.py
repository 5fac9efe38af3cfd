"""Fully connected nets on flattened inputs: the MLP and logistic regression."""

import math
from typing import Optional, Sequence

import torch
from torch import nn

from lightning_tune.models.layers import activation as make_activation
from lightning_tune.models.layers import check_positive, choose, widths


class MLP(nn.Module):
    """Hidden layers (`depth` of `width` units, or explicit `hidden_sizes`): linear -> norm -> activation -> dropout."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = 2,
        width: int = 256,
        hidden_sizes: Optional[Sequence[int]] = None,
        activation: str = "relu",
        norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_sizes = list(hidden_sizes) if hidden_sizes is not None else widths("model", depth, width, double=False)
        check_positive("model.hidden_sizes", hidden_sizes)
        norm = choose("model.norm", norm, ["batch", "layer", "none"])
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for units in hidden_sizes:
            layers.append(nn.Linear(width, units))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(units))
            elif norm == "layer":
                layers.append(nn.LayerNorm(units))
            layers += [make_activation(activation), nn.Dropout(dropout)]
            width = units
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Linear(nn.Module):
    """Multinomial logistic regression; L1/L2 come from the regularization group."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(math.prod(input_shape), num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
