"""The networks: every model in the registry maps every input shape to logits, and bad settings fail early."""

from typing import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_tune import models
from lightning_tune.errors import ConfigError
from lightning_tune.models import CNN, MLP, Linear, ResNet
from lightning_tune.models.resnet import BasicBlock

MODELS = [getattr(models, name) for name in models.__all__]
IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)]
SHAPES = [(4,), *IMAGE_SHAPES]
NUM_CLASSES = 5


def check_forward_backward(net: nn.Module, input_shape: Sequence[int]) -> None:
    """Logits of shape (batch, classes), finite, and a finite gradient for every parameter."""
    torch.manual_seed(0)
    x = torch.randn(2, *input_shape)
    logits = net(x)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, NUM_CLASSES - 1])).backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"


def assert_one_line_naming(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_model_maps_every_shape_to_logits(model: type, shape: tuple[int, ...]) -> None:
    """Defaults work on every image size; only image models may refuse tabular data, pointing to mlp/linear."""
    try:
        net = model(input_shape=shape, num_classes=NUM_CLASSES)
    except ConfigError as error:
        assert len(shape) != 3, f"{model.__name__} refuses image data {shape}: {error}"
        message = str(error)
        assert "model=mlp" in message and "model=linear" in message and "\n" not in message
        return
    check_forward_backward(net, shape)


@pytest.mark.parametrize("model", [CNN, ResNet])
def test_image_models_refuse_tabular_data_naming_mlp_and_linear(model: type) -> None:
    with pytest.raises(ConfigError) as error:
        model(input_shape=(4,), num_classes=3)
    assert_one_line_naming(error, "(4,)", "model=mlp", "model=linear")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("model", [MLP, Linear])
def test_flat_models_take_tabular_and_image_data(model: type, shape: tuple[int, ...]) -> None:
    check_forward_backward(model(input_shape=shape, num_classes=NUM_CLASSES), shape)


@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=str)
@pytest.mark.parametrize("blocks_per_stage", [2, [1, 2]], ids=["int", "list"])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_resnet_small_stem_variants(shape: tuple[int, ...], block: str, blocks_per_stage: object) -> None:
    net = ResNet(shape, NUM_CLASSES, depth=2, blocks_per_stage=blocks_per_stage, width=4, block=block)
    expected_blocks = 4 if blocks_per_stage == 2 else 3
    assert sum(isinstance(m, BasicBlock) for m in net.modules()) == expected_blocks
    check_forward_backward(net, shape)


@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 96, 128)], ids=str)
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_resnet_imagenet_stem_on_large_inputs(shape: tuple[int, ...], block: str) -> None:
    net = ResNet(shape, NUM_CLASSES, stem="imagenet", depth=3, blocks_per_stage=1, width=4, block=block)
    check_forward_backward(net, shape)


def last_norms(net: ResNet) -> list[nn.BatchNorm2d]:
    """The last BatchNorm of every block's residual branch."""
    blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
    assert blocks
    return [[m for m in block.residual.modules() if isinstance(m, nn.BatchNorm2d)][-1] for block in blocks]


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("zero_init_residual", [True, False])
def test_zero_init_residual_zeroes_the_last_norm_of_every_block(block: str, zero_init_residual: bool) -> None:
    net = ResNet(
        (3, 32, 32), NUM_CLASSES, depth=3, blocks_per_stage=[1, 2, 1], width=4, block=block,
        zero_init_residual=zero_init_residual,
    )
    for norm in last_norms(net):
        assert torch.all(norm.weight == 0) == zero_init_residual
    # The shortcut's norm is never zeroed: a downsampling block would otherwise output nothing.
    shortcuts = [block.shortcut for block in net.modules() if isinstance(block, BasicBlock)]
    shortcut_norms = [m for shortcut in shortcuts for m in shortcut.modules() if isinstance(m, nn.BatchNorm2d)]
    assert shortcut_norms and all(torch.all(norm.weight == 1) for norm in shortcut_norms)
    check_forward_backward(net, (3, 32, 32))


def test_zero_init_residual_blocks_start_as_the_identity() -> None:
    """Why zero-init: a block whose shortcut is the identity maps a non-negative input to itself."""
    net = ResNet((3, 16, 16), NUM_CLASSES, depth=1, blocks_per_stage=2, width=4).eval()
    x = torch.rand(2, 4, 16, 16)
    for block in net.stages:
        assert isinstance(block.shortcut, nn.Identity)
        torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_dropout_argument_inserts_dropout(model: type) -> None:
    """With dropout=0.5 two training passes differ and evaluation is deterministic; with 0 both agree."""
    shape = (1, 8, 8)
    x = torch.randn(4, *shape)
    net = model(input_shape=shape, num_classes=NUM_CLASSES, dropout=0.5)
    assert any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p == 0.5 for m in net.modules())
    torch.manual_seed(0)
    assert not torch.allclose(net.train()(x), net(x))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), net(x))
    plain = model(input_shape=shape, num_classes=NUM_CLASSES, dropout=0.0).train()
    torch.testing.assert_close(plain(x), plain(x))


@pytest.mark.parametrize(
    "build, parts",
    [
        (lambda: ResNet((1, 8, 8), 3, depth=6), ["model.depth=6", "8x8", "model.depth<=4"]),
        (lambda: ResNet((1, 8, 8), 3, stem="imagenet"), ["model.stem=imagenet", "8x8", "model.depth<=2"]),
        (lambda: ResNet((1, 3, 3), 3, stem="imagenet", depth=1), ["model.stem=imagenet", "model.stem=small"]),
        (lambda: CNN((1, 8, 8), 3, channels=[8] * 4), ["model.channels", "at most 3 blocks", "model.pool=none"]),
        (lambda: CNN((1, 28, 28), 3, channels=[4] * 5), ["model.channels", "at most 4 blocks"]),
    ],
    ids=["resnet-stages", "resnet-imagenet-stem", "resnet-imagenet-tiny", "cnn-4-blocks", "cnn-5-blocks-28"],
)
def test_net_too_deep_for_the_input_names_the_key_and_the_limit(build, parts: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert_one_line_naming(error, *parts)


@pytest.mark.parametrize("size", [3, 4, 8, 28, 32, 64])
@pytest.mark.parametrize("stem", ["small", "imagenet"])
def test_resnet_depth_hint_is_exactly_the_deepest_valid_net(stem: str, size: int) -> None:
    """`use model.depth<=k` is right: k stages build on this input and k + 1 do not."""
    with pytest.raises(ConfigError) as error:
        ResNet((1, size, size), 3, stem=stem, depth=9, blocks_per_stage=1, width=1)
    message = str(error.value)
    if "model.depth<=" not in message:
        assert stem == "imagenet" and "use model.stem=small" in message
        return
    most = int(message.rsplit("model.depth<=", 1)[1])
    ResNet((1, size, size), 3, stem=stem, depth=most, blocks_per_stage=1, width=1)
    with pytest.raises(ConfigError):
        ResNet((1, size, size), 3, stem=stem, depth=most + 1, blocks_per_stage=1, width=1)


def test_cnn_without_pooling_takes_any_depth() -> None:
    check_forward_backward(CNN((1, 8, 8), NUM_CLASSES, channels=[4] * 5, pool="none", head_hidden=0), (1, 8, 8))


@pytest.mark.parametrize(
    "build, key, valid",
    [
        (lambda: CNN((1, 8, 8), 3, activation="swish"), "model.activation='swish'", ["relu", "gelu", "silu", "tanh"]),
        (lambda: MLP((4,), 3, activation="swish"), "model.activation='swish'", ["relu", "gelu", "leaky_relu"]),
        (lambda: CNN((1, 8, 8), 3, norm="instance"), "model.norm='instance'", ["batch", "group", "none"]),
        (lambda: MLP((4,), 3, norm="group"), "model.norm='group'", ["batch", "layer", "none"]),
        (lambda: CNN((1, 8, 8), 3, pool="min"), "model.pool='min'", ["max", "avg", "none"]),
        (lambda: ResNet((1, 8, 8), 3, block="wide"), "model.block='wide'", ["basic", "bottleneck"]),
        (lambda: ResNet((1, 8, 8), 3, stem="large"), "model.stem='large'", ["small", "imagenet"]),
    ],
    ids=["cnn-activation", "mlp-activation", "cnn-norm", "mlp-norm", "cnn-pool", "resnet-block", "resnet-stem"],
)
def test_unknown_choice_lists_the_valid_ones(build, key: str, valid: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert_one_line_naming(error, key, "choose one of", *valid)


@pytest.mark.parametrize(
    "build, key",
    [
        (lambda: CNN((1, 8, 8), 3, channels=[4, 4], kernel_sizes=[3]), "model.kernel_sizes"),
        (lambda: CNN((1, 8, 8), 3, channels=[4, 4], kernel_sizes=[3, 3, 3]), "model.kernel_sizes"),
        (lambda: CNN((1, 8, 8), 3, channels=[4, 4], kernel_sizes=0), "model.kernel_sizes"),
        (lambda: ResNet((1, 8, 8), 3, depth=2, blocks_per_stage=[1, 1, 1]), "model.blocks_per_stage"),
        (lambda: ResNet((1, 8, 8), 3, depth=2, blocks_per_stage=0), "model.blocks_per_stage"),
        (lambda: ResNet((1, 8, 8), 3, depth=0), "model.depth"),
        (lambda: ResNet((1, 8, 8), 3, width=0), "model.width"),
        (lambda: CNN((1, 8, 8), 3, channels=[]), "model.channels"),
        (lambda: CNN((1, 8, 8), 3, channels=[8, 0]), "model.channels"),
        (lambda: MLP((4,), 3, hidden_sizes=[16, -1]), "model.hidden_sizes"),
    ],
    ids=[
        "kernels-short", "kernels-long", "kernel-zero", "blocks-long", "blocks-zero", "stages-zero", "width-zero",
        "channels-empty", "channels-zero", "hidden-negative",
    ],
)
def test_bad_sizes_raise_one_line_config_error_naming_the_key(build, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert_one_line_naming(error, key)


def test_per_layer_kernel_sizes_are_used() -> None:
    net = CNN((1, 8, 8), NUM_CLASSES, channels=[4, 4], kernel_sizes=[5, 3])
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [conv.kernel_size for conv in convs] == [(5, 5), (3, 3)]
    check_forward_backward(net, (1, 8, 8))
