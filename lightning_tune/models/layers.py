"""Building blocks shared by the networks, chosen by name from config."""

from typing import Callable, Sequence, Union

from torch import nn

from lightning_tune.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "tanh": nn.Tanh,
}


def choose(key: str, value: str, options: Sequence[str]) -> str:
    """Return `value` if it is one of `options`, else fail naming the key and the valid options."""
    if value not in options:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(options)}")
    return value


def activation(name: str, key: str = "model.activation") -> nn.Module:
    return ACTIVATIONS[choose(key, name, list(ACTIVATIONS))]()


def norm2d(name: str, channels: int, key: str = "model.norm") -> nn.Module:
    """Normalization over image channels: `batch`, `group` (8 groups or fewer) or `none`."""
    kind = choose(key, name, ["batch", "group", "none"])
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


def per_layer(key: str, value: Union[int, Sequence[int]], count: int) -> list[int]:
    """Expand one int to `count` copies, or check that a list has one entry per layer."""
    values = [value] * count if isinstance(value, int) else list(value)
    if len(values) != count or not all(isinstance(v, int) and v > 0 for v in values):
        raise ConfigError(f"{key}={value} must be one positive int or a list of {count} positive ints")
    return values


def require_image(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """Image models need (channels, height, width); tabular data gets a pointer to mlp/linear."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"model={model} needs image data shaped (channels, height, width), but the data gives "
            f"{tuple(input_shape)}; use model=mlp or model=linear"
        )
    channels, height, width = input_shape
    return channels, height, width


def check_positive(key: str, values: Sequence[int]) -> None:
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{key}={list(values)} must be a non-empty list of positive ints")


def widths(prefix: str, depth: int, width: int, double: bool) -> list[int]:
    """Layer widths from the two numbers a sweep tunes: `depth` layers starting at `width`."""
    if depth < 1 or width < 1:
        raise ConfigError(f"{prefix}.depth={depth} and {prefix}.width={width} must both be at least 1")
    return [width * 2**i if double else width for i in range(depth)]
