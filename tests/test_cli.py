"""`python train.py` as a user runs it: a bad input stops with one clear line, a sweep leaves one directory per job."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import FAST, ROOT, assert_learned, fast_without, group_options

from lightning_tune.errors import ConfigError
from lightning_tune.run import train



def train_py(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """`python train.py ARGS` from the repository root, with every output directory under `tmp`."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "train.py", *args, f"hydra.run.dir={tmp / 'run'}", f"hydra.sweep.dir={tmp / 'sweep'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def vision_installed() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


# (overrides, the key the message must name, raised by us as a ConfigError rather than by Hydra's composition)
BAD_INPUTS = [
    ("model=foo", "model", False),
    ("optimizer.lr=abc", "optimizer.lr", False),
    ("model.chanels=3", "model.chanels", False),
    ("regularization.dropout=1.5", "regularization.dropout", True),
    ("regularization.l2=-1", "regularization.l2", True),
    ("data.batch_size=0", "data.batch_size", True),
    ("model=resnet model.depth=6", "model.depth", True),
    ("data=mnist", "data=mnist", True),
    ("cv.folds=1", "cv.folds", True),
    ("data=iris model=linear cv.folds=41", "cv.folds", True),  # iris' CV pool holds 40 flowers of each class
]


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Every bad input's run, two at a time: each one pays seconds of torch import before failing."""

    def run(overrides: str) -> tuple[Path, subprocess.CompletedProcess]:
        tmp = tmp_path_factory.mktemp("bad")
        return tmp, train_py(tmp, *overrides.split(), *fast_without("logger="))  # the default logger writes files

    cases = [overrides for overrides, _, _ in BAD_INPUTS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(cases, pool.map(run, cases)))


@pytest.mark.parametrize("overrides, key, ours", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_exits_non_zero_with_a_line_naming_the_key(bad_runs, overrides, key, ours):
    if overrides == "data=mnist" and vision_installed():
        pytest.skip("torchvision is installed: data=mnist is valid here")
    tmp, result = bad_runs[overrides]
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert any(key in line for line in result.stderr.splitlines()), result.stderr
    if ours:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
        assert key in lines[0]
    # Hydra writes .hydra/ and train.log before the job starts; the job itself must leave nothing.
    run_dir = tmp / "run"
    left = {path.name for path in run_dir.iterdir()} if run_dir.exists() else set()
    assert left <= {".hydra", "train.log"}, left


def test_unknown_option_lists_the_valid_ones(bad_runs):
    _, result = bad_runs["model=foo"]
    assert "model/foo" in result.stderr
    for option in group_options("model"):
        assert option in result.stderr


def test_missing_extra_names_the_install_command(bad_runs):
    if vision_installed():
        pytest.skip("torchvision is installed: data=mnist is valid here")
    _, result = bad_runs["data=mnist"]
    assert "pip install 'lightning-tune[vision]'" in result.stderr


@pytest.mark.slow
def test_grid_sweep_runs_every_combination_in_its_own_directory(tmp_path):
    result = train_py(tmp_path, "-m", "optimizer=adam,sgd", "optimizer.lr=1e-3,1e-2", *FAST)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    jobs = sorted(path for path in (tmp_path / "sweep").iterdir() if path.is_dir())
    assert [job.name for job in jobs] == ["0", "1", "2", "3"]
    combinations = set()
    for job in jobs:
        assert (job / "metrics.json").is_file()
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        values = dict(item.split("=", 1) for item in overrides)
        combinations.add((values["optimizer"], float(values["optimizer.lr"])))
    assert combinations == {(name, lr) for name in ("adam", "sgd") for lr in (1e-3, 1e-2)}
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        "optimizer.lr=-0.1",
        "optimizer=sgd optimizer.nesterov=true optimizer.momentum=0",
        "scheduler=onecycle scheduler.pct_start=2",
    ],
)
def test_config_errors_found_by_torch_still_leave_no_files(make_cfg, tmp_path, overrides):
    """torch rejects these only when the optimizer or schedule is built: that must happen before any output."""
    with pytest.raises(ConfigError):
        train(make_cfg(*overrides.split(), "logger=tensorboard"))
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    """Lightning relaunches train.py for rank 1 with the same overrides; rank 0 alone writes the results."""
    overrides = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *fast_without("trainer=")]
    result = train_py(tmp_path, *overrides)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    assert_learned(json.loads((run_dir / "metrics.json").read_text())["val"]["acc"], 10)
    assert [path.name for path in (run_dir / "checkpoints").iterdir()] == ["best.ckpt"]


@pytest.mark.slow
def test_ddp_with_cross_validation(tmp_path):
    """Both ranks train every fold together; the folds' results and their mean are written once, whole."""
    overrides = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *fast_without("trainer="),
                 "data=iris", "model=linear", "cv.folds=2"]  # fmt: skip
    result = train_py(tmp_path, *overrides)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["value"] == pytest.approx(sum(metrics["cv"]["values"]) / 2)
    for fold in ("fold_0", "fold_1"):
        assert json.loads((run_dir / fold / "metrics.json").read_text())["value"] in metrics["cv"]["values"]
    assert not list(run_dir.rglob("*.tmp"))
