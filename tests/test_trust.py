"""Hydra 1.4's execution whitelist: our targets build, a user's own build once their config lists them, and
anything else stops the run on one line. `lightning_tune/trust.py` holds every use of Hydra's whitelist API,
and these tests fail there first when Hydra changes it (1.4's final release may rename it)."""

import subprocess
import sys

import pytest
from conftest import FAST, ROOT
from omegaconf import OmegaConf

from lightning_tune.errors import ConfigError
from lightning_tune.run import build
from lightning_tune.trust import trusted_run


def test_a_listed_target_builds_and_an_unlisted_one_is_named_with_the_fix():
    target = {"_target_": "collections.OrderedDict", "a": 1}
    with trusted_run(OmegaConf.create({"execution_whitelist": {"mine": "collections.OrderedDict"}})):
        assert build(OmegaConf.create(target), "model") == {"a": 1}
    with trusted_run(OmegaConf.create({"execution_whitelist": {}})):
        with pytest.raises(ConfigError) as refused:
            build(OmegaConf.create(target), "model")
    assert str(refused.value) == (
        "model._target_=collections.OrderedDict is not trusted: add it to execution_whitelist in your config, "
        "or on the command line: +execution_whitelist.collections=collections.*"
    )


def test_our_own_targets_build_without_any_user_entry(make_cfg):
    cfg = make_cfg("optimizer=sgd")
    with trusted_run(cfg):
        factory = build(cfg.optimizer, "optimizer")
    assert factory.func.__name__ == "SGD"


@pytest.mark.parametrize("entry", ["*", "my_models.*.x", ".*"])
def test_a_pattern_hydra_cannot_take_is_one_line(entry):
    pattern = r"^execution_whitelist=\{'mine': .*\}: Invalid _execution_whitelist_ entry"
    with pytest.raises(ConfigError, match=pattern) as bad:
        with trusted_run(OmegaConf.create({"execution_whitelist": {"mine": entry}})):
            pass
    assert "\n" not in str(bad.value) and "UNSAFE" not in str(bad.value)


def test_a_whitelist_that_is_not_a_mapping_is_one_line():
    with pytest.raises(ConfigError, match=r"^execution_whitelist=\['my_models\.\*'\] must map names to targets"):
        with trusted_run(OmegaConf.create({"execution_whitelist": ["my_models.*"]})):
            pass


def test_the_readme_custom_model_without_its_whitelist_stops_on_one_line(tmp_path):
    """The example's own config trusts `my_models.*`; with that entry deleted on the command line, it is refused."""
    result = subprocess.run(
        [sys.executable, "train.py", "--config-dir", "examples/custom_model/conf", "model=tiny_net",
         "~execution_whitelist.my_models", f"hydra.run.dir={tmp_path / 'run'}", *FAST],
        cwd=ROOT, env={"PYTHONPATH": "examples/custom_model", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: model._target_=my_models.TinyNet is not trusted: add it to execution_whitelist in your config, "
        "or on the command line: +execution_whitelist.my_models=my_models.*"
    )
    assert not (tmp_path / "run").exists()
