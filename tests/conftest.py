"""One composed-config fixture for every test: the real conf/, pointed at the test's tmp_path."""

import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from lightning_tune.schemas import register_schemas
from lightning_tune.trust import RUN_TARGETS, trusted

# Hydra's deprecations fail the suite, in its own process and in every run and sweep it starts: one that a
# run or sweep met would reach the user's console (an untrusted `_target_`, `version_base`, a ConfigStore clash)
os.environ["HYDRA_DEPRECATION_WARNINGS_AS_ERRORS"] = "1"
# Started in the background by a non-interactive shell (`... &`, nohup), pytest inherits SIGINT ignored, and so
# would every command the tests start, which then cannot be Ctrl-C'd: let them have it as a terminal gives it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A training run that takes a second or less on CPU: real data, one epoch (19 batches of digits), in
# which the default CNN reaches about 0.9 validation accuracy and every net clearly beats chance.
FAST = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "logger=none",
]


def assert_learned(accuracy: float, num_classes: int) -> None:
    """A trained net scores clearly above chance (1/num_classes): at least twice it, so one that learns
    nothing fails."""
    assert accuracy >= 2 / num_classes, f"accuracy {accuracy:.3f} is not clearly above chance (1/{num_classes})"


def fast_without(*prefixes: str) -> list[str]:
    """FAST less the overrides that start with one of `prefixes`, e.g. to choose another `trainer=`."""
    return [override for override in FAST if not override.startswith(prefixes)]


def needs_gpu(test: Callable) -> Callable:
    """`@needs_gpu`: marked `gpu`, and skipped, saying why, where torch sees no CUDA device."""
    import torch

    reason = "needs a CUDA GPU: torch.cuda.is_available() is False here"
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason=reason)(test))


def group_options(group: str) -> list[str]:
    """Every option of a config group, so a new YAML file is tested without editing a test."""
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


CLUSTER_TURN = Path(tempfile.gettempdir()) / "lightning-tune-tests-slurm.lock"


@pytest.fixture(autouse=True)
def one_cluster_test_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """The tests that use the SLURM cluster (marked `slurm`, or given its `partition`) share its one node of two
    CPUs and size their jobs to fill it: with the tests on two processes (pytest-xdist), they take turns, by an
    exclusive lock on CLUSTER_TURN."""
    if not (request.node.get_closest_marker("slurm") or "partition" in request.fixturenames):
        yield
        return
    with CLUSTER_TURN.open("w") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX)  # released as the file closes
        yield


@pytest.fixture(autouse=True)
def run_targets_trusted() -> Iterator[None]:
    """Tests build the run's parts (`build_run`, optimizers, schedules) as `train` does: our targets trusted."""
    with trusted(RUN_TARGETS):
        yield


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """`make_cfg("model=resnet", fast=True)` composes conf/train.yaml with overrides."""
    register_schemas()

    def compose_cfg(*overrides: str, fast: bool = True) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF)):
            return compose(
                config_name="train",
                overrides=[*(FAST if fast else []), f"output_dir={tmp_path}", *overrides],
            )

    yield compose_cfg
    GlobalHydra.instance().clear()


def cluster_partition() -> Optional[str]:
    """The default partition of a SLURM cluster with a node up, or None and why not."""
    if shutil.which("sbatch") is None:
        return None
    result = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=30)
    up = [line.split() for line in result.stdout.splitlines() if re.search(r" (idle|mix|alloc)", line)]
    defaults = [partition.rstrip("*") for partition, _ in up if partition.endswith("*")]
    return (defaults or [partition.rstrip("*") for partition, _ in up] or [None])[0]


@pytest.fixture(scope="module")
def partition() -> str:
    found = cluster_partition()
    if found is None:
        reason = ("no SLURM cluster with a node up here (sbatch/sinfo): "
                  "run ../shared/slurm/start-local-cluster as root, as .ci/run does")  # fmt: skip
        if os.environ.get("LIGHTNING_TUNE_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


POSTGRES_ENV = "LIGHTNING_TUNE_TEST_POSTGRES"  # the URL scripts/start-postgres prints; .ci/run sets it


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the PostgreSQL server the storage tests use. Without LIGHTNING_TUNE_TEST_POSTGRES they are
    skipped, saying why; with it (as in CI) a server that cannot be reached fails them."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"no PostgreSQL server: run `export {POSTGRES_ENV}=$(scripts/start-postgres)`, as .ci/run does")
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - whatever the driver raises: the server is not there
        pytest.fail(f"{POSTGRES_ENV}={url} cannot be reached ({error}): run scripts/start-postgres")
    finally:
        engine.dispose()
    return url


@pytest.fixture
def postgres_database(postgres_server: str, request) -> Iterator[str]:
    """The URL of a new database on the test server, dropped after the test: no test sees another's studies."""
    import sqlalchemy

    name = f"lt_{re.sub(r'[^a-z0-9]+', '_', request.node.name.lower())[:40]}_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sqlalchemy.make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:  # FORCE: ends the sessions a killed sweep's processes left open
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
