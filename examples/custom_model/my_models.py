"""A user's own network, outside the package: any `nn.Module` whose constructor takes the data's
`input_shape` and `num_classes` plugs into `model=`; a `dropout` argument lets regularization=dropout reach it."""

import math
from typing import Sequence

import torch
from torch import nn


class TinyNet(nn.Module):
    """One hidden layer on flattened inputs."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(math.prod(input_shape), width)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.relu(self.hidden(x.flatten(1)))))
