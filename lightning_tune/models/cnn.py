"""Plain convolutional net: (conv -> norm -> activation -> pool) per entry of `channels`."""

from typing import Optional, Sequence, Union

import torch
from torch import nn

from lightning_tune.errors import ConfigError
from lightning_tune.models.layers import activation as make_activation
from lightning_tune.models.layers import check_positive, choose, norm2d, per_layer, require_image, widths


class CNN(nn.Module):
    """`depth` blocks whose widths start at `width` and double, or explicit per-block `channels`."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = 2,
        width: int = 32,
        channels: Optional[Sequence[int]] = None,
        kernel_sizes: Union[int, Sequence[int]] = 3,
        pool: str = "max",
        norm: str = "batch",
        activation: str = "relu",
        head_hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels, height, image_width = require_image(input_shape, "cnn")
        key = "model.channels" if channels is not None else "model.depth"
        channels = list(channels) if channels is not None else widths("model", depth, width, double=True)
        check_positive("model.channels", channels)
        kernels = per_layer("model.kernel_sizes", kernel_sizes, len(channels))
        pool = choose("model.pool", pool, ["max", "avg", "none"])
        if head_hidden < 0:
            raise ConfigError(f"model.head_hidden={head_hidden} must be >= 0 (0: a linear head)")
        if pool != "none" and min(height, image_width) < 2 ** len(channels):
            raise ConfigError(
                f"{key}: {len(channels)} pooling blocks, which need inputs of at least "
                f"{2 ** len(channels)}x{2 ** len(channels)}, but the data is {height}x{image_width}; "
                f"use at most {min(height, image_width).bit_length() - 1} blocks or model.pool=none"
            )
        layers: list[nn.Module] = []
        for out_channels, kernel in zip(channels, kernels):
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=norm == "none"),
                norm2d(norm, out_channels),
                make_activation(activation),
            ]
            if pool != "none":
                layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            layers.append(nn.Dropout2d(dropout) if dropout > 0 else nn.Identity())
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).numel()
        head: list[nn.Module] = [nn.Flatten()]
        if head_hidden > 0:
            head += [nn.Linear(flat, head_hidden), make_activation(activation), nn.Dropout(dropout)]
            flat = head_hidden
        head.append(nn.Linear(flat, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

