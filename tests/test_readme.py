"""The README is a test: every `python train.py ...` command in its code blocks, and in the command list of
the user contract (../shared/docs/interface.md), runs verbatim through the shell, in a scratch copy of the
repository, with the default run and sweep directories, and leaves the files the README says it leaves.

Only overrides that shrink the work (epochs, trials) or that this machine forces (its SLURM partition, a
CPU count its node has) are appended; never `hydra.run.dir` or `hydra.sweep.dir`. A command added to the
README later is picked up here without a change to this file.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import CONF, ROOT, cluster_partition
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lightning_tune.schemas import register_schemas

README = ROOT / "README.md"
INTERFACE = ROOT.parent / "shared" / "docs" / "interface.md"
NOT_IN_A_CLONE = {".git", ".venv", "outputs", "multirun", "data", "lightning_logs", ".pytest_cache", "build"}


def not_in_a_clone(directory: str, names: list[str]) -> set[str]:
    """What a fresh clone lacks: at the top, the ignored folders of earlier runs; anywhere, Python's caches."""
    top = set(names) & NOT_IN_A_CLONE if Path(directory) == ROOT else set()
    return top | {name for name in names if name == "__pycache__" or name.endswith(".egg-info")}


def strip_comment(line: str) -> str:
    """`line` without its end-of-line `# comment` (a `#` inside quotes stays)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def commands_in(text: str, fenced: bool) -> list[str]:
    """The `python train.py ...` commands, as printed: in ```-fenced blocks (README) or indented blocks
    (interface.md); continued lines joined, comments dropped, `a && python train.py ...` cut at `&&`."""
    if fenced:
        lines = [line for block in re.findall(r"```\w*\n(.*?)```", text, re.S) for line in block.splitlines()]
    else:
        lines = [line.strip() for line in text.splitlines() if line.startswith("    ")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    parts = [strip_comment(part).strip() for line in joined.splitlines() for part in line.split("&&")]
    return [part for part in parts if re.match(r"^(\w+=\S+ )*python train\.py\b", part)]


def documented_commands() -> list[str]:
    """The README's commands (in code blocks, and in inline code unless it holds a `<placeholder>`), then
    the contract's."""
    text = README.read_text()
    commands = commands_in(text, fenced=True)
    commands += re.findall(r"`(python train\.py[^`<]*)`", text)
    if INTERFACE.is_file():  # the contract sits beside the repository in the workplace; a clone alone lacks it
        commands += commands_in(INTERFACE.read_text(), fenced=False)
    return sorted(set(commands), key=commands.index)


def backticked_files(section: str) -> list[str]:
    """The file names in the first column of the table under README heading `section`."""
    text = README.read_text().split(section, 1)[1]
    rows = re.findall(r"^\| (.+?) \|", text.split("\n## ", 1)[0], re.M)
    return [name for row in rows for name in re.findall(r"`([^`]+)`", row)]


RUN_FILES = backticked_files("## What a run leaves behind")  # .hydra/, tensorboard/, checkpoints/best.ckpt, ...
SWEEP_FILES = [name for name in backticked_files("**Results**") if not name.startswith("<")]  # trials.csv, ...


@dataclass(frozen=True)
class Command:
    """A documented command, what this machine appends to it, and what it must leave."""

    text: str

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def sweeps_with_optuna(self) -> bool:
        """A `-m` command whose composed config chooses our Optuna sweeper (a preset, or an experiment that
        brings its own search), rather than Hydra's basic one."""
        if "-m" not in self.words:
            return False
        overrides = [word for word in self.words if word.startswith(("hparams_search=", "experiment=", "hydra/sweeper="))]
        register_schemas()
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF)):
            sweeper = compose("train", overrides, return_hydra_config=True).hydra.sweeper
        GlobalHydra.instance().clear()
        return sweeper._target_.endswith("LightningTuneSweeper")

    @property
    def needs_gpu(self) -> bool:
        return "trainer=gpu" in self.words or any(w.startswith("launcher.gpus_per_task=") for w in self.words)

    @property
    def on_slurm(self) -> bool:
        return "launcher=slurm" in self.words

    @property
    def on_postgres(self) -> bool:
        return "scripts/start-postgres" in self.text

    def shrunk(self, partition: str = "") -> str:
        """The command with the work cut down: one short epoch, two trials."""
        if {"--help", "--cfg"} & set(self.words):
            return self.text
        extra = ["trainer.max_epochs=1", "+trainer.limit_train_batches=4"]
        if self.sweeps_with_optuna:
            extra.append("hydra.sweeper.n_trials=2")
        if self.on_slurm:  # the local cluster's partition, and a CPU count its 2-CPU node has
            extra += [f"launcher.partition={partition}", "launcher.cpus_per_task=1", "launcher.mem_gb=1"]
        return f"{self.text} {shlex.join(extra)}"


COMMANDS = [Command(text) for text in documented_commands()]


def marks(command: Command) -> list:
    found = []
    if command.needs_gpu:
        found.append(pytest.mark.gpu)
        reason = "needs a CUDA GPU: torch.cuda.is_available() is False here"
        found.append(pytest.mark.skipif(not torch.cuda.is_available(), reason=reason))
    if command.on_slurm:
        found.append(pytest.mark.slurm)
    if command.text != "python train.py" and not {"--help", "--cfg"} & set(command.words):
        found.append(pytest.mark.slow)  # the quick part keeps the main job, the help and the printed config
    return found


README_DATABASE = "lt_readme"  # start-postgres's database for the README's PostgreSQL command: made, then dropped


def drop_readme_database(scratch: Path) -> None:
    """Drop README_DATABASE, so that the next run's sweep starts with an empty study as a new user's does."""
    url = run_in(scratch, "scripts/start-postgres", LIGHTNING_TUNE_PG_DB=README_DATABASE).stdout.strip()
    import sqlalchemy

    server = sqlalchemy.make_url(url).set(database="postgres")  # not the database it drops
    engine = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{README_DATABASE}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of the repository, as a clone has it, to run in: its outputs/ and multirun/ start empty."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=not_in_a_clone)
    return copy


def run_in(directory: Path, command: str, **extra_env: str) -> subprocess.CompletedProcess:
    """`command` through bash in `directory`, with this interpreter's environment first on PATH, as after
    `. .venv/bin/activate`."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra_env)
    return subprocess.run(
        ["bash", "-c", command], cwd=directory, env=env, capture_output=True, text=True, timeout=900
    )


def leaves(run_dir: Path, command: Command) -> list[str]:
    """The run files the README lists that `run_dir` lacks (`tensorboard/` only with the default logger). With
    cross-validation, each `fold_<i>/` holds a fold's checkpoints, logs and metrics.json."""
    expected = [name for name in RUN_FILES if name != "tensorboard/" or not any(
        w.startswith("logger=") and w != "logger=tensorboard" for w in command.words)]  # fmt: skip
    folds = sorted(run_dir.glob("fold_*"))
    missing = [name for name in expected if name in (".hydra/", "metrics.json") or not folds if not (run_dir / name).exists()]
    for fold in folds:
        missing += [f"{fold.name}/{name}" for name in expected if name != ".hydra/" and not (fold / name).exists()]
    return missing


def test_the_readme_documents_commands_of_every_kind():
    assert len(COMMANDS) >= 20, [c.text for c in COMMANDS]
    assert "python train.py" in [c.text for c in COMMANDS]
    assert any(c.sweeps_with_optuna for c in COMMANDS) and any(c.on_slurm for c in COMMANDS)
    assert RUN_FILES[:1] == [".hydra/"] and "metrics.json" in RUN_FILES
    assert {"trials.csv", "best.yaml", "optimization_results.yaml", "report.md", "optuna.db"} <= set(SWEEP_FILES)


@pytest.mark.parametrize(
    "command",
    [pytest.param(c, marks=marks(c), id=c.text.split("python train.py", 1)[1].strip()[:80] or "default") for c in COMMANDS],
)
def test_documented_command_runs_as_printed(command: Command, scratch: Path, request):
    partition = ""
    if command.on_slurm:
        partition = cluster_partition()
        if partition is None:
            pytest.fail("no SLURM cluster here: run ../shared/slurm/start-local-cluster as root, as .ci/run does")
    extra_env = {}
    if command.on_postgres:  # the storage tests' server (skipped without it, failed in CI), and a database of
        request.getfixturevalue("postgres_server")  # this test's, which start-postgres makes and the test drops
        extra_env["LIGHTNING_TUNE_PG_DB"] = README_DATABASE
        request.addfinalizer(lambda: drop_readme_database(scratch))
    result = run_in(scratch, command.shrunk(partition), **extra_env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output and "error:" not in output, output[-4000:]

    words = command.words
    if "--help" in words:
        assert all(f"{group}:" in result.stdout for group in ("model", "optimizer", "hparams_search")), result.stdout
        return
    if "--cfg" in words:
        assert "_target_: lightning_tune.models" in result.stdout and not (scratch / "outputs").exists()
        return
    if command.sweeps_with_optuna:
        sweep_dirs = list((scratch / "multirun").iterdir())
        assert len(sweep_dirs) == 1, sweep_dirs  # every trial in the sweep's one directory
        sweep_dir = sweep_dirs[0]
        storage = next((w.split("=", 1)[1] for w in words if w.startswith("hydra.sweeper.storage=")), None)
        # the study's file in the sweep directory: SQLite's by default, a journal's, or none (a database server)
        study_file = "optuna.db" if storage is None else None
        if storage is not None and storage.startswith("journal:"):
            study_file = storage.removeprefix("journal:")
        expected = [name for name in SWEEP_FILES if name != "optuna.db"] + [study_file] * (study_file is not None)
        assert [name for name in expected if not (sweep_dir / name).exists()] == []
        run_dirs = sorted(path for path in sweep_dir.iterdir() if path.name.isdigit())
        assert [path.name for path in run_dirs] == ["0", "1"]
    elif "-m" in words:  # Hydra's own sweeper: multirun/<date>/<time>/<job>/
        run_dirs = sorted(scratch.glob("multirun/*/*/[0-9]*"))
        assert run_dirs, output[-2000:]
    else:
        run_dirs = list(scratch.glob("outputs/*/*"))
        assert len(run_dirs) == 1, run_dirs
    for run_dir in run_dirs:
        assert leaves(run_dir, command) == [], f"{run_dir} lacks them"


@pytest.mark.slow
def test_the_same_sweep_command_again_resumes_its_study_in_the_default_directory(scratch: Path):
    """`python train.py -m hparams_search=tpe` typed twice: one sweep directory, no trial run twice; a larger
    `n_trials` extends the same study."""
    command = Command("python train.py -m hparams_search=tpe").shrunk()
    runs = [run_in(scratch, command) for _ in range(2)]
    runs.append(run_in(scratch, f"{command} hydra.sweeper.n_trials=3"))
    for run in runs:
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    (sweep_dir,) = (scratch / "multirun").iterdir()
    assert "Launching" not in runs[1].stdout + runs[1].stderr  # the study already holds its 2 trials
    assert sorted(path.name for path in sweep_dir.iterdir() if path.name.isdigit()) == ["0", "1", "2"]
    assert [line.split(",")[0] for line in (sweep_dir / "trials.csv").read_text().splitlines()[1:]] == ["0", "1", "2"]
