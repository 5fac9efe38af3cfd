"""Another project's Hydra app composes our config groups: through the search-path plugin of an installed
package (editable, as the README installs it, or not), or through one `hydra.searchpath` line."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import FAST, ROOT, assert_learned
from packaging.version import Version


APP = '''\
import hydra
import lightning_tune
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config", execution_whitelist="lightning_tune.*")
def main(cfg: DictConfig) -> float:
    from lightning_tune.run import run_from_hydra

    print("lightning_tune from", lightning_tune.__file__)
    return run_from_hydra(cfg)


if __name__ == "__main__":
    main()
'''

WHOLE_RUN = """\
defaults:
  - train                 # lightning-tune's whole run config: every group, seed, optimized_metric, ...
  - override model: mlp
  - _self_

seed: 7
"""

GROUP_BY_GROUP = """\
defaults:
  - model: resnet
  - optimizer: sgd
  - regularization: l2
  - _self_
"""

SEARCH_PATH = """
hydra:
  searchpath:
    - pkg://lightning_tune.conf
"""


def can_build_offline() -> bool:
    """pip builds our wheel without a download only where the build backend is already installed."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    return Version(setuptools.__version__) >= Version("70.1") or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A real, non-editable install of this checkout into a directory for PYTHONPATH, as `pip install` gives it."""
    if not can_build_offline():
        pytest.skip("building the wheel offline needs setuptools>=70.1 (or wheel) in this environment")
    source, site = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("site")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("lightning_tune", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--target", str(site), str(source)],
        check=True,
        capture_output=True,
    )
    return site


def write_app(directory: Path, config: str) -> Path:
    (directory / "conf").mkdir(parents=True)
    (directory / "conf" / "config.yaml").write_text(config)
    (directory / "app.py").write_text(APP)
    return directory


def run_app(app: Path, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """The app run from its own directory, as its user would: the repository is nowhere on the path."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "app.py", f"hydra.run.dir={app / 'run'}", *args],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_installed_package_trains_from_another_projects_app(installed, tmp_path):
    app = write_app(tmp_path / "project", WHOLE_RUN)
    result = run_app(app, "optimizer=sgd", *FAST, pythonpath=installed)
    assert result.returncode == 0, result.stderr
    assert f"lightning_tune from {installed}" in result.stdout  # the installed copy, not the checkout
    metrics = json.loads((app / "run" / "metrics.json").read_text())
    assert_learned(metrics["val"]["acc"], 10)
    config = yaml.safe_load((app / "run" / ".hydra" / "config.yaml").read_text())
    assert config["model"]["_target_"] == "lightning_tune.models.MLP"
    assert config["optimizer"]["_target_"] == "torch.optim.SGD"
    assert config["seed"] == 7


def test_installed_package_groups_compose_one_by_one(installed, tmp_path):
    app = write_app(tmp_path / "project", GROUP_BY_GROUP)
    result = run_app(app, "--cfg", "job", pythonpath=installed)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["model"]["_target_"] == "lightning_tune.models.ResNet"
    assert config["optimizer"]["dampening"] == 0.0  # a default only the typed schema holds: the schemas are there
    assert config["regularization"]["l2"] == pytest.approx(5e-4)


def readme_app(directory: Path) -> Path:
    """The README's own app.py and conf/config.yaml ("Using lightning-tune from your own Hydra app"), verbatim."""
    section = (ROOT / "README.md").read_text().split("## Using lightning-tune from your own Hydra app")[1]
    app, config = (section.split(f"```{kind}\n")[1].split("```")[0] for kind in ("python", "yaml"))
    assert "searchpath" not in config  # the plugin alone brings our groups
    (directory / "conf").mkdir(parents=True)
    (directory / "conf" / "config.yaml").write_text(config)
    (directory / "app.py").write_text(app)
    return directory


def test_this_environments_install_shows_the_plugin_to_another_projects_app(tmp_path):
    """The install the tests run in (the README's `pip install -e`) is found by Hydra's plugin scan from
    another project's directory: our groups compose and our sweeper is there, with no `hydra.searchpath`."""
    app = readme_app(tmp_path / "project")
    result = run_app(app, "optimizer=sgd", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    optimizer = yaml.safe_load(result.stdout)["optimizer"]
    assert optimizer["_target_"] == "torch.optim.SGD" and {"momentum", "nesterov"} <= set(optimizer)
    result = run_app(app, "--info", "plugins")
    assert result.returncode == 0, result.stderr
    assert "LightningTuneSearchPathPlugin" in result.stdout and "LightningTuneSweeper" in result.stdout
    result = run_app(app, "hydra/sweeper=lightning_tune", "--cfg", "hydra")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["hydra"]["sweeper"]["_target_"] == "hydra_plugins.lightning_tune.LightningTuneSweeper"


def test_search_path_line_composes_without_the_plugin(tmp_path):
    """Where the plugin is not discovered, the one line is enough (and beside the plugin it does no harm)."""
    app = write_app(tmp_path / "project", WHOLE_RUN + SEARCH_PATH)
    result = run_app(app, "model.hidden_sizes=[16]", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["model"]["_target_"] == "lightning_tune.models.MLP"
    assert config["model"]["hidden_sizes"] == [16]
    assert config["seed"] == 7


def test_unknown_option_from_another_project_lists_ours(tmp_path):
    app = write_app(tmp_path / "project", WHOLE_RUN + SEARCH_PATH)
    result = run_app(app, "optimizer=adamax")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Could not find 'optimizer/adamax'" in result.stderr and "rmsprop" in result.stderr


def test_users_own_model_option_sits_beside_ours(installed, tmp_path):
    """A project's own conf/model/*.yaml joins our `model` group; its module, next to app.py, needs no PYTHONPATH."""
    app = write_app(tmp_path / "project", WHOLE_RUN)
    example = ROOT / "examples" / "custom_model"
    shutil.copy(example / "my_models.py", app / "my_models.py")
    (app / "conf" / "model").mkdir()
    shutil.copy(example / "conf" / "model" / "tiny_net.yaml", app / "conf" / "model" / "tiny_net.yaml")
    result = run_app(app, "model=tiny_net", "--cfg", "job", pythonpath=installed)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["model"]["_target_"] == "my_models.TinyNet"
    result = run_app(app, "model=nope", pythonpath=installed)
    assert "tiny_net" in result.stderr and "resnet" in result.stderr  # both kinds of option are listed


def test_the_sweepers_process_does_not_import_torch():
    """A SLURM or joblib sweep's own process only asks, records and reports: it starts without torch and
    Lightning (seconds), so that a bad launcher or search space is reported at once."""
    code = (
        "import sys, hydra_plugins.lightning_tune, lightning_tune.sweeping.sweeper, lightning_tune.slurm;"
        "print(sorted(m for m in ('torch', 'torchmetrics', 'pytorch_lightning') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
