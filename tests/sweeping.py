"""Running `python train.py -m ...` as a user does, and reading what the sweep leaves: shared by the
sweep tests, local and on SLURM."""

import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import optuna
from conftest import ROOT
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

STUDY = "lightning-tune"  # the presets' hydra.sweeper.study_name
# Trials of a second or two: real digits, one short epoch, no logger files.
TINY = ["trainer=cpu", "logger=none", "trainer.max_epochs=1", "+trainer.limit_train_batches=5"]
# Every param of the random/tpe/cmaes presets pinned but optimizer.lr, which the command line sweeps.
ONLY_LR = [
    "model=mlp",
    "model.depth=1",
    "model.width=32",
    "optimizer=adam",
    "scheduler=none",
    "regularization.l2=0.0",
    "regularization.dropout=0.0",
    "data.batch_size=64",
    "optimizer.lr=choice(0.003,1e-06)",  # 1e-6 stays at chance level: a trial to prune
]


def enqueue(*trials: dict[str, str]) -> str:
    """`hydra.sweeper.enqueue_trials=[{optimizer.lr:0.01,...},...]`: these trials run first, in this order."""
    return "hydra.sweeper.enqueue_trials=[" + ",".join(
        "{" + ",".join(f"{name}:{value}" for name, value in trial.items()) + "}" for trial in trials
    ) + "]"


# Two good trials first, then two bad ones: with 2 startup trials the bad ones are pruned at epoch 1.
GOOD_THEN_BAD = enqueue(*({"optimizer.lr": lr} for lr in ("0.003", "0.003", "1e-06", "1e-06")))
# Optuna's journal file storage, in the sweep directory, instead of its SQLite optuna.db
JOURNAL = "hydra.sweeper.storage=journal:optuna.journal"
PRUNING = ["hparams_search=random", *ONLY_LR, GOOD_THEN_BAD, "trainer.max_epochs=3", "hydra.sweeper.n_trials=4"]

# Sweeps share the two cores: one torch thread each keeps them from fighting over them.
ENV = {
    **{key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"},
    "OMP_NUM_THREADS": "1",
}


@dataclass
class Sweep:
    """One `python train.py -m ...` run: its sweep directory and what it printed."""

    dir: Path
    result: subprocess.CompletedProcess
    storage: Optional[str] = None  # the study's database URL, when it is not a file in the sweep directory

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr

    def study(self) -> optuna.Study:
        """The study in `storage`, or else in the sweep directory's `optuna.journal` (JOURNAL's sweeps) or
        `optuna.db`, read through Optuna's own storage classes."""
        if self.storage is not None:
            return optuna.load_study(study_name=STUDY, storage=self.storage)
        journal = self.dir / "optuna.journal"
        if journal.exists():
            storage = JournalStorage(JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal))))
            return optuna.load_study(study_name=STUDY, storage=storage)
        return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{self.dir / 'optuna.db'}")

    def storage_files(self) -> set[str]:
        """The names of the study's files in the sweep directory: `optuna.db`, or `optuna.journal`."""
        return {path.name for path in self.dir.iterdir() if path.name.startswith("optuna.")}

    def trials(self, *states: TrialState) -> list[FrozenTrial]:
        trials = sorted(self.study().get_trials(deepcopy=False), key=lambda trial: trial.number)
        return [trial for trial in trials if not states or trial.state in states]

    def rows(self) -> list[dict[str, str]]:
        with open(self.dir / "trials.csv", newline="") as file:
            return list(csv.DictReader(file))

    def ok(self) -> "Sweep":
        assert self.result.returncode == 0, self.output[-3000:]
        assert "Traceback" not in self.output, self.output[-3000:]
        return self


def command(sweep_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "train.py", "-m", *args, f"hydra.sweep.dir={sweep_dir}"]


def run_sweep(
    sweep_dir: Path, *args: str, env: Optional[dict[str, str]] = None, storage: Optional[str] = None
) -> Sweep:
    """The sweep, to its end. A database URL `storage` reaches it as the README tells users to give one,
    `'hydra.sweeper.storage=${oc.env:DB_URL}'`, and the returned Sweep reads its study there."""
    if storage is not None:
        args, env = (*args, "hydra.sweeper.storage=${oc.env:DB_URL}"), {**(env or ENV), "DB_URL": storage}
    result = subprocess.run(
        command(sweep_dir, *args), cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=300
    )
    return Sweep(sweep_dir, result, storage)


def finished(process: subprocess.Popen, log: Path, sweep_dir: Path, timeout: float = 300) -> Sweep:
    """The sweep that `process` runs in the background, once it has ended (killed after `timeout` s); its
    output is in `log`."""
    try:
        process.wait(timeout=timeout)
    finally:
        process.kill()
    return Sweep(sweep_dir, subprocess.CompletedProcess(process.args, process.returncode, log.read_text(), ""))
