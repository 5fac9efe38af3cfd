"""A quiet, readable console: a run, its folds and a sweep's trials show our progress and results, and each
library message at most once, only where the user can act on it; `--help` lists the groups a user chooses
from, each option with a line on what it is.

The commands run as a user runs them, in a process of their own, with an `srun` on PATH (a stub: Lightning
hints at it wherever it finds one) and outside any SLURM allocation unless a test says otherwise.
"""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
from conftest import ROOT, group_options

# Lightning's advertisement, torch's deprecation of what Lightning's own code uses, and Lightning's srun hint
NEVER_SHOWN = ["litlogger", "litmodels", "LeafSpec", "srun"]


def train_py(tmp_path: Path, *args: str, env: Optional[dict[str, str]] = None) -> str:
    """The console output (stdout and stderr) of `python train.py *args`, which must succeed."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    (stubs / "srun").write_text("#!/bin/sh\nexit 1\n")
    (stubs / "srun").chmod(0o755)
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SLURM_") and key not in ("PYTHONWARNINGS", "HYDRA_FULL_ERROR")
    }
    environment["PATH"] = os.pathsep.join([str(stubs), str(Path(sys.executable).parent), environment.get("PATH", "")])
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def cv_run(tmp_path: Path, env: Optional[dict[str, str]] = None) -> str:
    """3-fold cross-validation on iris, whose 5 training batches are fewer than `log_every_n_steps`."""
    args = ["data=iris", "model=linear", "cv.folds=3", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}"]
    return train_py(tmp_path, *args, env=env)


def test_a_run_and_its_folds_show_results_and_each_lightning_warning_once(tmp_path: Path):
    output = cv_run(tmp_path)
    assert [word for word in NEVER_SHOWN if word in output] == [], output
    assert output.count("Fold ") == 3 and "3-fold cross-validation" in output, output
    # Lightning's hint on the settings, true of every fold: once
    assert output.count("is smaller than the logging interval") == 1, output
    assert output.count("GPU available") == 1, output


def test_inside_a_slurm_allocation_lightning_still_hints_at_srun_once(tmp_path: Path):
    """There the hint is the user's to act on: `python train.py` without srun runs one process of the job."""
    output = cv_run(tmp_path, env={"SLURM_JOB_ID": "1"})
    assert output.count("The `srun` command is available") == 1, output


@pytest.mark.slow
def test_a_cmaes_sweep_says_once_which_params_it_samples_at_random(tmp_path: Path):
    output = train_py(
        tmp_path,
        "-m",
        "hparams_search=cmaes",
        "hydra.sweeper.n_trials=3",
        "+trainer.limit_train_batches=2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert "Trial 2 (3 of 3 finished)" in output, output
    notes = [line for line in output.splitlines() if "independently" in line]
    assert len(notes) == 1, notes  # Optuna's own: one per categorical param, in every trial after the first
    assert all(name in notes[0] for name in ("model.depth", "optimizer", "data.batch_size")), notes
    assert [word for word in NEVER_SHOWN if word in output] == [], output
    assert "A new study created" not in output  # Optuna's line, which the sweeper's own "Study ..." line says


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--help", "seed=42"], ["--config-dir", "examples/custom_model/conf", "--help"]],
    ids=["quick", "hydra", "own-config-dir"],
)
def test_help_lists_the_groups_a_user_chooses_from_each_option_described(tmp_path: Path, args: list[str]):
    """`--help` alone is answered without Hydra's listing of every group; with anything else, by Hydra: the
    same text."""
    output = train_py(tmp_path, *args)
    assert not re.search(r"^\s*schema/", output, re.M), output
    sections = dict(re.findall(r"^(\S+):\n((?:  .*\n?)+)", output, re.M))
    assert set(sections) >= {"data", "model", "optimizer", "hparams_search", "hydra/sweeper/sampler"}, output
    for group in ("model", "optimizer", "hydra/sweeper/sampler", "hydra/sweeper/pruner"):
        described = dict(re.findall(r"^  [ *] (\S+) +(\S.*)$", sections[group], re.M))
        listed = re.findall(r"^  [ *] (\S+)", sections[group], re.M)
        assert listed == sorted(described), f"{group}: options without a description: {sections[group]}"
    assert set(group_options("model")) <= set(re.findall(r"^  [ *] (\S+)", sections["model"], re.M))
    assert re.search(r"^  \* cnn ", sections["model"], re.M)  # the option in use
    if "--config-dir" in args:
        assert "tiny_net" in sections["model"]
    elif args != ["--help"]:
        assert output == train_py(tmp_path, "--help")
