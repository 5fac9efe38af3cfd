"""What one trial costs the study's storage: its write transactions, each an fsync of the SQLite file."""

import os

import pytest
from conftest import ROOT
from omegaconf import OmegaConf
from sweeping import ENV, ONLY_LR, TINY, run_sweep

from lightning_tune.errors import ConfigError
from lightning_tune.sweeping.study import STORAGE_ENV
from lightning_tune.sweeping.trial import trial_callbacks

SWEEP = [
    "hparams_search=random", *[o for o in ONLY_LR if not o.startswith("optimizer.lr=")], *TINY,
    "trainer.max_epochs=3", "optimizer.lr=interval(1e-3,1e-2)", "regularization.dropout=interval(0,0.5)",
]  # fmt: skip


def storage_writes(tmp_path, n_trials: int, *overrides: str) -> int:
    """The write transactions of an in-process sweep of `n_trials`, from its start to its end."""
    counts = tmp_path / f"writes-{n_trials}.txt"
    env = {**ENV, "PYTHONPATH": f"{ROOT / 'tests' / 'storage_writes'}:{os.environ.get('PYTHONPATH', '')}",
           "STORAGE_WRITES_FILE": str(counts)}  # fmt: skip
    run_sweep(tmp_path / f"sweep-{n_trials}", *SWEEP, *overrides, f"hydra.sweeper.n_trials={n_trials}", env=env).ok()
    return sum(int(line) for line in counts.read_text().split())


def per_trial(tmp_path, *overrides: str) -> float:
    return (storage_writes(tmp_path, 3, *overrides) - storage_writes(tmp_path, 1, *overrides)) / 2


@pytest.mark.slow
def test_a_trial_writes_to_the_storage_at_most_six_times_and_each_epoch_only_for_a_pruner(tmp_path):
    """Its creation, its two params, its seed, its duration and its result; not its run directory, which its
    number names, nor, without a pruner, its three epochs' values, which nothing would read."""
    without = per_trial(tmp_path / "none")
    assert without <= 6, without
    with_pruner = per_trial(tmp_path / "median", "hydra/sweeper/pruner=median")  # it prunes from the 6th trial on
    assert with_pruner == without + 3, (with_pruner, without)  # the three epochs' values, which the pruner reads


def test_a_run_directory_named_otherwise_than_by_the_trial_number_is_recorded(tmp_path):
    sweep = run_sweep(tmp_path / "sweep", *SWEEP, "hydra.sweeper.n_trials=2", "hydra.sweep.subdir=run-${trial.number}")
    sweep.ok()
    assert [row["run_dir"] for row in sweep.rows()] == [str((sweep.dir / f"run-{n}").resolve()) for n in (0, 1)]
    assert [trial.user_attrs["run_dir"] for trial in sweep.trials()] == [row["run_dir"] for row in sweep.rows()]
    best = (sweep.dir / "best.yaml").read_text()  # from the run directory recorded: no directory "0" or "1" here
    assert best.startswith("# Best trial ") and "optimizer:" in best


def test_a_trial_of_a_sweep_without_a_pruner_does_not_open_its_study(monkeypatch):
    """`trial.pruning=false`, which the sweeper sets without a pruner: no study is loaded to learn it. Here no
    storage is reachable, so opening the study would raise."""
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    trial_cfg = OmegaConf.create({"number": 0, "study_name": "s", "storage": None, "pruning": None})
    with pytest.raises(ConfigError, match="no study storage"):
        trial_callbacks(trial_cfg, "val/acc")
    trial_cfg.pruning = False
    assert trial_callbacks(trial_cfg, "val/acc") == []
