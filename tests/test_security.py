"""No storage password in any message or file; checkpoints loaded as weights only."""

import re

import pytest
import torch
from conftest import ROOT
from sweeping import ENV, ONLY_LR, run_sweep

from lightning_tune.run import train
from lightning_tune.sweeping.study import redact, url_password


SECRET = "S3cr3tPa55"
DB = f"postgresql://user:{SECRET}@127.0.0.1:1/db"  # nothing listens on port 1


@pytest.mark.parametrize(
    "url, masked",
    [
        (DB, "postgresql://user:***@127.0.0.1:1/db"),
        ("mysql+pymysql://me:p%40ss@host/db", "mysql+pymysql://me:***@host/db"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:////tmp/a:b@c/optuna.db", "sqlite:////tmp/a:b@c/optuna.db"),
        (f"postgresql://user@host/db?password={SECRET}&sslmode=require", "postgresql://user@host/db?password=***&sslmode=require"),
    ],
)
def test_redact_masks_a_storage_password_wherever_it_appears(url, masked):
    assert redact(url, url) == masked
    if url_password(url):
        decoded = "p@ss" if "%40" in url else SECRET
        assert redact(f"could not log in with {decoded!r}", url) == "could not log in with '***'"


@pytest.mark.slow
@pytest.mark.parametrize("given", ["typed", "from_env"])
def test_a_storage_password_never_appears_in_the_sweeps_error_line(tmp_path, given):
    """Typed on the command line it is refused (Hydra would write it into every trial's .hydra/hydra.yaml);
    from the environment, a storage that cannot be opened is reported with the password masked."""
    storage = DB if given == "typed" else "${oc.env:LT_TEST_DB}"
    sweep = run_sweep(
        tmp_path / "sweep", "hparams_search=random", f"hydra.sweeper.storage={storage}", env={**ENV, "LT_TEST_DB": DB}
    )
    assert sweep.result.returncode != 0
    (line,) = sweep.result.stderr.strip().splitlines()
    assert line.startswith("error: hydra.sweeper.storage") and "postgresql://user:***@127.0.0.1:1/db" in line, line
    assert SECRET not in sweep.output
    assert ("holds a password" in line) == (given == "typed"), line
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_a_storage_url_from_the_environment_is_written_into_no_trial_file(tmp_path):
    secret_dir = tmp_path / "secret-8f41c2"  # stands for a URL's secret: sqlite URLs hold no password
    secret_dir.mkdir()
    env = {**ENV, "LT_TEST_DB": f"sqlite:///{secret_dir}/optuna.db"}
    sweep = run_sweep(
        tmp_path / "sweep", "hparams_search=random", *ONLY_LR, "trainer=cpu", "logger=tensorboard",
        "trainer.max_epochs=2", "+trainer.limit_train_batches=5", "hydra/sweeper/pruner=median",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.storage=${oc.env:LT_TEST_DB}", env=env,
    ).ok()  # fmt: skip
    rows = sweep.rows()
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE"]
    written = [path for path in sweep.dir.rglob("*") if path.is_file()]
    assert {".hydra/overrides.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml", "train.log", "metrics.json"} <= {
        str(path.relative_to(sweep.dir / "0")) for path in written if path.is_relative_to(sweep.dir / "0")
    }
    assert any("tfevents" in path.name for path in written)
    for path in written:
        assert b"secret-8f41c2" not in path.read_bytes(), path
    # the trials did reach the study: the pruner had their epochs
    import optuna

    study = optuna.load_study(study_name="lightning-tune", storage=env["LT_TEST_DB"])
    assert all(trial.intermediate_values for trial in study.trials)


def test_checkpoints_are_loaded_as_weights_only(make_cfg, monkeypatch):
    """Explicitly, whatever torch's default, and by every torch and Lightning the dependencies allow."""
    calls = []
    load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    train(make_cfg())
    assert calls and all(weights_only is True for weights_only in calls), calls


def test_the_dependency_range_loads_weights_only_by_default():
    """torch 2.6 made weights_only=True torch.load's default; Lightning before 2.6 passes weights_only=False."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    for name in ("torch", "pytorch-lightning"):
        floor = re.search(rf'^\s*"{name}>=([\d.]+)', pyproject, re.MULTILINE)
        assert floor and tuple(map(int, floor[1].split("."))) >= (2, 6), f"{name}: {floor and floor[0]}"
