"""Residual net (He et al. 2016) with configurable stem, depth, width and block type."""

from typing import Sequence, Union

import torch
from torch import nn

from lightning_tune.errors import ConfigError
from lightning_tune.models.layers import choose, per_layer, require_image


class BasicBlock(nn.Module):
    """Two 3x3 convs; the shortcut is a strided 1x1 conv where the shape changes."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.residual(x) + self.shortcut(x))


class Bottleneck(BasicBlock):
    """1x1 reduce, 3x3, 1x1 expand (x4): deeper nets for the same compute."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        nn.Module.__init__(self)
        out_channels = width * self.expansion
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        stem: str = "small",
        depth: int = 3,
        blocks_per_stage: Union[int, Sequence[int]] = 2,
        width: int = 16,
        block: str = "basic",
        zero_init_residual: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels, height, in_width = require_image(input_shape, "resnet")
        stem = choose("model.stem", stem, ["small", "imagenet"])
        block_type = BLOCKS[choose("model.block", block, list(BLOCKS))]
        if depth < 1 or width < 1:
            raise ConfigError(f"model.depth={depth} and model.width={width} must both be at least 1")
        blocks = per_layer("model.blocks_per_stage", blocks_per_stage, depth)
        _check_resolution(stem, depth, min(height, in_width))

        if stem == "small":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        layers: list[nn.Module] = []
        channels = width
        for stage, count in enumerate(blocks):
            stage_width = width * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(block_type(channels, stage_width, stride))
                channels = stage_width * block_type.expansion
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            # Each block starts as the identity, which makes deep nets train like shallow ones at first.
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.residual[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _check_resolution(stem: str, depth: int, size: int) -> None:
    """Every halving needs at least 2 pixels to halve; fail before building a degenerate net."""
    halvings = (2 if stem == "imagenet" else 0) + depth - 1
    if size < 2**halvings:
        most = size.bit_length() - 1 - (2 if stem == "imagenet" else 0) + 1
        hint = f"use model.depth<={most}" if most >= 1 else "use model.stem=small"
        raise ConfigError(
            f"model.depth={depth} with model.stem={stem} halves the resolution {halvings} times, "
            f"which needs inputs of at least {2**halvings}x{2**halvings}, but the data is {size}x{size}; {hint}"
        )
