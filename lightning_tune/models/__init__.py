"""Networks: plain `nn.Module`s built from the `model` config group.

Every constructor takes `input_shape` and `num_classes` (given by the data module) and
`dropout` (given by the `regularization` group); a user's own module plugs in the same way.
"""

from lightning_tune.models.cnn import CNN
from lightning_tune.models.mlp import MLP, Linear
from lightning_tune.models.resnet import ResNet

__all__ = ["CNN", "MLP", "Linear", "ResNet"]
