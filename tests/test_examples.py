"""examples/custom_model: a user's own network, from outside the package, trained through `model=`."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import FAST, ROOT, assert_learned
from torch import nn

from lightning_tune.errors import ConfigError
from lightning_tune.run import build, build_network, train
from lightning_tune.trust import trusted_run

EXAMPLE = ROOT / "examples" / "custom_model"

NO_DROPOUT_MODULE = '''\
import math

from torch import nn


class PlainNet(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))

    def forward(self, x):
        return self.layers(x)
'''


def test_example_command_trains_the_users_model(tmp_path):
    """`PYTHONPATH=examples/custom_model python train.py --config-dir examples/custom_model/conf model=tiny_net`"""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, ["examples/custom_model", os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "train.py", "--config-dir", "examples/custom_model/conf", "model=tiny_net", *FAST]
        + [f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert_learned(json.loads((tmp_path / "metrics.json").read_text())["val"]["acc"], 10)
    assert yaml.safe_load((tmp_path / ".hydra" / "config.yaml").read_text())["model"]["_target_"] == "my_models.TinyNet"
    # The weights saved are TinyNet's own layers, so the user's class, not a built-in one, was trained.
    state = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert {key for key in state if key.startswith("net.")} == {
        "net.hidden.weight",
        "net.hidden.bias",
        "net.out.weight",
        "net.out.bias",
    }


@pytest.fixture
def user_cfg(make_cfg, monkeypatch):
    """`make_cfg`, with the example's config dir on Hydra's search path and its module importable."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    return lambda *overrides: make_cfg(f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]", *overrides)


def test_dropout_reaches_the_users_model(user_cfg, tmp_path):
    cfg = user_cfg("model=tiny_net", "model.width=16", "regularization=dropout", "optimizer.lr=0.01")
    with trusted_run(cfg):  # as `train` builds it: the example's config trusts my_models.*
        net = build_network(cfg.model, build(cfg.data, "data"), cfg.regularization.dropout)
    assert type(net).__module__ == "my_models"
    assert [module.p for module in net.modules() if isinstance(module, nn.Dropout)] == [cfg.regularization.dropout]
    assert_learned(train(cfg), 10)


@pytest.fixture
def plain_net(tmp_path, monkeypatch) -> tuple[str, str]:
    """The overrides of a user's model whose constructor has no `dropout` argument: it, and its trust."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "plain_net.py").write_text(NO_DROPOUT_MODULE)
    monkeypatch.syspath_prepend(str(source))
    return "model._target_=plain_net.PlainNet", "+execution_whitelist.plain_net=plain_net.PlainNet"


def test_model_without_dropout_argument_trains_without_dropout(make_cfg, tmp_path, plain_net):
    assert_learned(train(make_cfg("model=linear", *plain_net, "regularization=none")), 10)
    assert (tmp_path / "metrics.json").is_file()


def test_model_without_dropout_argument_rejects_dropout_in_one_line(make_cfg, tmp_path, plain_net):
    with pytest.raises(ConfigError) as error:
        train(make_cfg("model=linear", *plain_net, "regularization=dropout"))
    message = str(error.value)
    assert "regularization.dropout" in message and "plain_net.PlainNet" in message
    assert "\n" not in message
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "checkpoints").exists()


def test_model_that_cannot_be_imported_is_one_line(make_cfg):
    with pytest.raises(ConfigError) as error:
        train(make_cfg("model=linear", "model._target_=not_on_the_path.Net"))
    message = str(error.value)
    assert "model._target_" in message and "not_on_the_path" in message
    assert "\n" not in message
