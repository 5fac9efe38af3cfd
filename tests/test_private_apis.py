"""The private names of other libraries that lightning-tune uses, each library's in one module of ours
(whose docstring says why no public API serves): a test here fails, naming the library, its version and
the name, when the name is gone, takes other arguments, or acts otherwise than the public API it is
compared with. tests/test_composition.py checks the composition cache as a whole against Hydra's own.
"""

import inspect
import os
import pickle
import pkgutil
import stat
import time
import warnings
from contextlib import contextmanager
from dataclasses import fields
from importlib.metadata import version
from pathlib import Path
from typing import Iterator, Optional

import optuna
import pytest
from conftest import CONF
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

# each library: the version its private names were checked against, and our module that holds them
CHECKED = {
    "hydra-core": ("1.4.0rc3", "lightning_tune/private_hydra.py"),
    "optuna": ("5.0.0", "lightning_tune/sweeping/private_optuna.py"),
    "hydra-optuna-sweeper": ("1.4.0rc3", "lightning_tune/sweeping/private_optuna.py"),
    "submitit": ("1.5.4", "lightning_tune/private_submitit.py"),
    "hydra-joblib-launcher": ("1.4.0rc3", "lightning_tune/private_hydra.py"),
}
LOADER = "hydra._internal.config_loader_impl.ConfigLoaderImpl"
STORAGE = "optuna.storages.BaseStorage"
# (library, private name, its parameters as we call it)
SIGNATURES = [
    ("hydra-core", f"{LOADER}._process_config_searchpath", ["self", "config_name", "parsed_overrides", "repo"]),
    ("hydra-core", f"{LOADER}._compose_config_from_defaults_list", ["self", "defaults", "repo"]),
    ("hydra-core", f"{LOADER}._apply_overrides_to_config", ["overrides", "cfg"]),
    ("hydra-core", f"{LOADER}._ensure_sweep_config_controller_unchanged", ["master_config", "sweep_config"]),
    ("hydra-core", f"{LOADER}.validate_sweep_overrides_legal", ["overrides", "run_mode", "from_shell"]),
    ("hydra-core", "hydra._internal.config_repository.CachingConfigRepository", ["delegate"]),
    ("hydra-core", "hydra._internal.defaults_list.create_defaults_list",
     ["repo", "config_name", "overrides_list", "prepend_hydra", "skip_missing"]),
    ("optuna", "optuna.trial.Trial", ["study", "trial_id"]),
    ("optuna", f"{STORAGE}.get_study_id_from_name", ["self", "study_name"]),
    ("optuna", f"{STORAGE}.get_trial_id_from_study_id_trial_number", ["self", "study_id", "trial_number"]),
    ("optuna", f"{STORAGE}.set_trial_user_attr", ["self", "trial_id", "key", "value"]),
    ("optuna", "optuna.storages.RDBStorage.record_heartbeat", ["self", "trial_id"]),
    ("optuna", "optuna.storages.RDBStorage._get_stale_trial_ids", ["self", "study_id"]),
    ("optuna", "optuna.storages.RDBStorage.get_trial_number_from_id", ["self", "trial_id"]),
    ("hydra-optuna-sweeper", "hydra_plugins.hydra_optuna_sweeper._impl.create_optuna_distribution_from_override",
     ["override"]),
    ("submitit", "submitit.slurm.slurm.SlurmExecutor._make_submission_file_text", ["self", "command", "uid"]),
]  # fmt: skip


def changed(library: str, name: str, what: str) -> str:
    checked, module = CHECKED[library]
    return (
        f"{library} {version(library)}: its private `{name}` {what}. lightning-tune uses it in {module} (checked "
        f"against {library} {checked}), whose docstring says why: move to a public API if one serves now, or follow "
        f"the change there"
    )


@contextmanager
def private_use(library: str, name: str) -> Iterator[None]:
    """A private name used inside: failing as a changed API fails (gone, other arguments), the test says so."""
    try:
        yield
    except (ImportError, AttributeError, TypeError) as error:
        pytest.fail(changed(library, name, f"fails: {type(error).__name__}: {error}"))


@pytest.mark.parametrize("library, name, parameters", SIGNATURES, ids=[name for _, name, _ in SIGNATURES])
def test_each_private_name_is_there_with_the_arguments_we_pass(library, name, parameters):
    try:
        found = pkgutil.resolve_name(name)
    except (ImportError, AttributeError) as error:
        pytest.fail(changed(library, name, f"is gone ({type(error).__name__}: {error})"))
    now = list(inspect.signature(found).parameters)
    assert now == parameters, changed(library, name, f"takes ({', '.join(now)}), not ({', '.join(parameters)})")


# --- Hydra --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hydra_loader():
    """Hydra's config loader of conf/, as the sweeper gets it (`HydraContext.config_loader`)."""
    from lightning_tune.schemas import register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        yield GlobalHydra.instance().config_loader()
    GlobalHydra.instance().clear()


def test_hydras_composition_steps_give_hydras_own_config(hydra_loader):
    """Group choices composed, then values applied: the config and choices of Hydra's public composition."""
    lines = ["optimizer=sgd", "scheduler=cosine", "optimizer.lr=0.05", "model.depth=2", "+extra=1"]
    overrides = OverridesParser.create().parse_overrides(lines)
    steps = f"{LOADER}'s composition steps"
    with private_use("hydra-core", steps):
        from lightning_tune.private_hydra import apply_value_overrides, compose_defaults, searchpath_repository

        repo = searchpath_repository(hydra_loader, "train", overrides)
        cfg, choices = compose_defaults(hydra_loader, repo, "train", overrides)
        OmegaConf.set_struct(cfg, True)
        apply_value_overrides([o for o in overrides if not repo.group_exists(o.key_or_group)], cfg)
    hydras = hydra_loader.load_configuration("train", lines, run_mode=RunMode.RUN)
    ours, theirs = OmegaConf.to_container(cfg), OmegaConf.to_container(hydras)
    ours.pop("hydra"), theirs.pop("hydra")
    assert ours == theirs, changed("hydra-core", steps, "compose another config than Hydra's load_configuration")
    assert choices == OmegaConf.to_container(hydras.hydra.runtime.choices), changed(
        "hydra-core", "hydra._internal.defaults_list.create_defaults_list(...).overrides.known_choices",
        "holds other group choices than Hydra's hydra.runtime.choices",
    )


def hydras_error(call) -> Optional[str]:
    """The message of the ConfigCompositionException that `call()` raises, or None."""
    try:
        call()
    except ConfigCompositionException as error:
        return str(error)
    return None


def test_hydras_refusals_of_a_trial_config_are_its_own(hydra_loader):
    """A sweep in a trial's overrides, a trial that changes the launcher: refused as Hydra's load_sweep_config does."""
    master = hydra_loader.load_configuration("train", ["hydra.sweep.dir=/tmp/sweep"], run_mode=RunMode.MULTIRUN)
    joblib = hydra_loader.load_configuration("train", ["hydra/launcher=joblib"], run_mode=RunMode.RUN)
    refusals = f"{LOADER}.validate_sweep_overrides_legal and ._ensure_sweep_config_controller_unchanged"
    with private_use("hydra-core", refusals):
        from lightning_tune.private_hydra import ensure_controller_unchanged, validate_trial_overrides

        ours = [
            hydras_error(lambda: validate_trial_overrides(
                hydra_loader, OverridesParser.create().parse_overrides(["optimizer.lr=1,2"])
            )),
            hydras_error(lambda: ensure_controller_unchanged(master, joblib)),
        ]  # fmt: skip
    theirs = [
        hydras_error(lambda: hydra_loader.load_sweep_config(master, ["optimizer.lr=1,2"])),
        hydras_error(lambda: hydra_loader.load_sweep_config(master, ["hydra/launcher=joblib"])),
    ]
    assert None not in theirs and ours == theirs, changed("hydra-core", refusals, f"refuse otherwise: {ours}, {theirs}")


def test_a_failed_jobs_error_is_what_the_public_return_value_raises(capsys):
    """Read quietly; the public getter raises it and writes to stderr (else it would serve)."""
    ret = JobReturn(overrides=["optimizer.lr=1e30"], status=JobStatus.FAILED)
    ret.return_value = RuntimeError("loss is nan")
    name = "JobReturn._return_value"
    assert "_return_value" in {field.name for field in fields(JobReturn)}, changed("hydra-core", name, "is gone")
    with private_use("hydra-core", name):
        from lightning_tune.private_hydra import failed_job_error

        error = failed_job_error(ret)
    try:
        ret.return_value
    except RuntimeError as raised:
        assert error is raised, changed("hydra-core", name, "is not the error that JobReturn.return_value raises")
    else:
        pytest.fail(changed("hydra-core", name, "is read by JobReturn.return_value now without raising: use it"))
    assert "Error executing job" in capsys.readouterr().err, changed(
        "hydra-core", name, "is read by JobReturn.return_value now without writing to stderr: catch what it raises"
    )


def test_the_joblib_launcher_sends_the_state_that_get_state_gives_within_the_block(hydra_loader):
    """`joblib_state_once` replaces what hydra-joblib-launcher's `_core.launch` sends each worker: the state
    it takes from `Singleton.get_state()`, which the worker hands to `Singleton.set_state`."""
    import cloudpickle
    from hydra.core.singleton import Singleton
    from hydra_plugins.hydra_joblib_launcher import _core

    name = "Singleton.get_state, as hydra_joblib_launcher._core.launch calls it"
    source = inspect.getsource(_core.launch)
    assert "singleton_state = Singleton.get_state()" in source, changed("hydra-joblib-launcher", name, "is not called")
    assert "singleton_state," in inspect.getsource(_core), changed("hydra-joblib-launcher", name, "is not sent")
    with private_use("hydra-core", "Singleton.get_state"):
        from lightning_tune.private_hydra import PickledState, joblib_state_once

        hydras = Singleton.get_state()
        state = PickledState(hydras)
        with joblib_state_once(state), joblib_state_once(state):  # two slots' launches at once
            assert Singleton.get_state() is state
        assert Singleton.get_state() is not state  # Hydra's own again: a fresh copy each call
    received = pickle.loads(cloudpickle.dumps(state))  # as a worker process unpickles its task
    assert type(received) is dict and received.keys() == hydras.keys() == {"instances", "omegaconf_resolvers"}
    assert {type(v) for v in received["instances"].values()} == {type(v) for v in hydras["instances"].values()}
    assert received["omegaconf_resolvers"].keys() == hydras["omegaconf_resolvers"].keys()


# --- Optuna and the Optuna sweeper ------------------------------------------------------------------
@pytest.fixture
def study_and_storage():
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage)
    return optuna.load_study(study_name="s", storage=storage), storage  # as a trial's own process loads it


def test_a_running_trial_rebuilt_elsewhere_reports_to_the_trial_asked_for(study_and_storage):
    study, storage = study_and_storage
    study.ask()
    asked = study.ask()
    name = "optuna.trial.Trial(study, trial_id)"
    with private_use("optuna", name):
        from lightning_tune.sweeping.private_optuna import running_trial

        trial = running_trial(study, storage, asked.number)
        trial.report(0.5, step=0)
        trial.set_user_attr("epochs", 1)
        prunes = trial.should_prune()
    frozen = study.get_trials(deepcopy=False)[asked.number]
    assert (trial.number, frozen.intermediate_values, frozen.user_attrs) == (asked.number, {0: 0.5}, {"epochs": 1}), (
        changed("optuna", name, "reaches another trial than the one asked for")
    )
    assert prunes == study.pruner.prune(study, frozen), changed("optuna", name, "prunes otherwise than its pruner")


def test_a_running_trials_attrs_set_by_number_are_its_own(study_and_storage):
    study, storage = study_and_storage
    asked = study.ask()
    with private_use("optuna", f"{STORAGE}.set_trial_user_attr"):
        from lightning_tune.sweeping.private_optuna import set_running_trial_attrs

        set_running_trial_attrs(storage, "s", asked.number, {"interrupted": True, "fail_reason": "x"})
    study.tell(asked.number, state=TrialState.FAIL)
    assert study.trials[asked.number].user_attrs == {"interrupted": True, "fail_reason": "x"}, changed(
        "optuna", f"{STORAGE}.set_trial_user_attr", "set other attrs than Study.trials shows"
    )


def test_a_heartbeat_recorded_by_number_makes_a_trial_stale_once_it_stops_as_fail_stale_trials_sees_it(tmp_path):
    """Our beat and stale query against Optuna's own `fail_stale_trials`, which fails exactly the stale trials."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name="s", storage=storage)
    beating, stopped, silent = study.ask(), study.ask(), study.ask()
    name = "optuna.storages.RDBStorage._get_stale_trial_ids"
    with private_use("optuna", name):
        from lightning_tune.sweeping.private_optuna import heartbeat, stale_trial_numbers

        with heartbeat(storage, "s", stopped.number, interval_s=60):
            pass
        time.sleep(2.5)  # SQLite's clock counts whole seconds
        with heartbeat(storage, "s", beating.number, interval_s=60):
            stale = stale_trial_numbers(url, "s", grace_s=1)
    assert stale == {stopped.number}, changed("optuna", name, f"finds {stale} stale, not trial {stopped.number} alone")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        beats = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
        optuna.storages.fail_stale_trials(optuna.load_study(study_name="s", storage=beats))
    failed = [t.number for t in study.get_trials(states=(TrialState.FAIL,))]
    assert failed == sorted(stale), changed("optuna", name, f"differs from fail_stale_trials, which failed {failed}")
    assert silent.number not in failed  # a trial that never beat is not stale


@pytest.mark.parametrize(
    "line, expected",
    [
        ("x=choice(adam,sgd)", CategoricalDistribution(["adam", "sgd"])),
        ("x=range(1,5)", IntDistribution(1, 4)),  # Hydra's stop is exclusive
        ("x=interval(0.1,1)", FloatDistribution(0.1, 1)),
        ("x=tag(log,interval(1e-4,1))", FloatDistribution(1e-4, 1, log=True)),
        ("x=3", "3"),  # not swept: the value as typed
        ("x=range(5,1)", ValueError),
    ],
)
def test_the_optuna_sweepers_parser_gives_the_distributions_it_did(line, expected):
    name = "hydra_plugins.hydra_optuna_sweeper._impl.create_optuna_distribution_from_override"
    override = OverridesParser.create().parse_overrides([line])[0]
    with private_use("hydra-optuna-sweeper", name):
        from lightning_tune.sweeping.private_optuna import distribution_from_override

        try:
            parsed = distribution_from_override(override)
        except ValueError as error:
            parsed = error
    if expected is ValueError:
        assert isinstance(parsed, ValueError), changed("hydra-optuna-sweeper", name, f"accepts {line}: {parsed}")
    else:
        assert parsed == expected, changed("hydra-optuna-sweeper", name, f"reads {line} as {parsed}, not {expected}")


# --- submitit ---------------------------------------------------------------------------------------
def test_the_checked_sbatch_script_is_the_one_submitit_submits(tmp_path, monkeypatch):
    """The `#SBATCH` lines of the script checked with `sbatch --test-only` are those of a job submitted by
    submitit's public `submit` (to a stand-in sbatch)."""
    from lightning_tune.slurm import make_executor

    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.parent.mkdir()
    sbatch.write_text("#!/bin/sh\necho 'Submitted batch job 42'\n")
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{sbatch.parent}{os.pathsep}{os.environ['PATH']}")
    executor = make_executor({
        "submitit_folder": str(tmp_path / "%j"), "max_num_timeout": 3, "partition": "gpu", "timeout_min": 60,
        "cpus_per_task": 2, "additional_parameters": {"constraint": "a100"}, "setup": ["module load cuda"],
    })  # fmt: skip
    name = "AutoExecutor._executor._make_submission_file_text"
    with private_use("submitit", name):
        from lightning_tune.private_submitit import sbatch_script

        checked = sbatch_script(executor, "true")
    submitted = Path(executor.submit(print, "trial").paths.submission_file).read_text()

    def directives(script: str) -> list[str]:
        return [line for line in script.splitlines() if line.startswith("#SBATCH")]

    assert directives(checked) == directives(submitted), changed("submitit", name, "writes other #SBATCH lines")
    assert "#SBATCH --partition=gpu" in directives(checked) and checked.rstrip().endswith("true"), changed(
        "submitit", name, f"writes no partition, or another command:\n{checked}"
    )
