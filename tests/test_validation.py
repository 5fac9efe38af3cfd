"""Every numeric setting of every schema has its valid values, and a value outside them is refused on one
line naming the key and what is valid, before anything is written. Parametrized over the schemas' fields:
a field added later is tested without a new case."""

import copy
import dataclasses
import functools
import os
import re
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import pytest
from conftest import CONF, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from lightning_tune.errors import ConfigError
from lightning_tune.schemas import SCHEMAS, register_schemas
from lightning_tune.sweeping.config import PRUNERS, TuningSweeperConf
from lightning_tune.validation import ORDERED, TOP_LEVEL, check_settings, invalid_settings

NUMBERS = (int, float)


def numeric(annotation: Any) -> bool:
    """int or float, alone, optional, or in a list or tuple."""
    if annotation in NUMBERS:
        return True
    return any(numeric(arg) for arg in typing.get_args(annotation) if arg is not type(None))


def option_of(group: str, schema: str) -> str:
    """An option of `group` whose YAML file extends schema `schema/<group>/<schema>`."""
    for path in sorted((CONF / group).glob("*.yaml")):
        if f"/schema/{group}/{schema}@" in path.read_text():
            return path.stem
    raise AssertionError(f"no conf/{group}/*.yaml extends schema/{group}/{schema}")


def group_fields() -> list[tuple[str, str, dataclasses.Field]]:
    return [(group, option_of(group, name), field) for group, schemas in SCHEMAS.items()
            for name, schema in schemas.items() for field in dataclasses.fields(schema)]  # fmt: skip


def overridden(value: Any) -> str:
    return f"[{','.join(map(str, value))}]" if isinstance(value, list) else str(value)


@functools.lru_cache(maxsize=None)
def composed(*overrides: str) -> Any:
    """conf/train.yaml composed with `overrides` (once for each: the tests change copies)."""
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        return compose("train", list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("group, option, field", group_fields(), ids=lambda x: getattr(x, "name", x))
def test_every_numeric_field_of_every_schema_has_its_valid_values(group, option, field):
    if numeric(field.type):
        assert "valid" in field.metadata, f"{group}.{field.name} ({option}) has no valid values: give it a setting(...)"


SWEEPER_FIELDS = [("", field) for field in dataclasses.fields(TuningSweeperConf)]
SWEEPER_FIELDS += [(name, field) for name, schema in PRUNERS.items() for field in dataclasses.fields(schema)]


@pytest.mark.parametrize("pruner, field", SWEEPER_FIELDS, ids=lambda x: getattr(x, "name", x))
def test_every_numeric_field_of_the_sweeper_and_pruners_has_its_valid_values(pruner, field):
    if numeric(field.type) and field.name not in ("min_resource",):  # min_resource: an int or "auto"
        assert "valid" in field.metadata, f"hydra.sweeper.{field.name} has no valid values"


VALIDATED = [(g, o, f) for g, o, f in group_fields() if "valid" in f.metadata]


@pytest.mark.parametrize("group, option, field", VALIDATED, ids=[f"{g}={o}.{f.name}" for g, o, f in VALIDATED])
def test_a_value_outside_a_settings_valid_values_is_one_line_naming_it(group, option, field):
    valid = field.metadata["valid"]
    key = f"{group}.{field.name}"
    shipped = composed(f"{group}={option}")
    check_settings(shipped)  # the shipped values are valid
    cfg = copy.deepcopy(shipped)
    OmegaConf.update(cfg, key, valid.outside)
    with pytest.raises(ConfigError) as error:
        check_settings(cfg)
    assert re.fullmatch(rf"{re.escape(key)}=\S+ must be {re.escape(valid.text)}", str(error.value)), error.value


@pytest.mark.parametrize("key", TOP_LEVEL)
def test_a_top_level_setting_outside_its_valid_values_is_one_line_naming_it(key):
    valid = TOP_LEVEL[key]
    shipped = composed("lr_find=true", "cv.folds=3")
    check_settings(shipped)
    cfg = copy.deepcopy(shipped)
    with open_dict(OmegaConf.select(cfg, key.rpartition(".")[0])):  # `+trainer.limit_val_batches=0`: no schema key
        OmegaConf.update(cfg, key, valid.outside)
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=\S+ must be {re.escape(valid.text)}$"):
        check_settings(cfg)


@pytest.mark.parametrize("smaller, larger, equal", ORDERED, ids=[f"{s}<{l}" for s, l, _ in ORDERED])
def test_settings_whose_order_matters_are_refused_out_of_order(smaller, larger, equal):
    cfg = copy.deepcopy(composed("lr_find=true", "scheduler=cosine"))
    OmegaConf.update(cfg, larger, 2)
    OmegaConf.update(cfg, smaller, 2)
    if equal:
        check_settings(cfg)
        OmegaConf.update(cfg, smaller, 3)
    with pytest.raises(ConfigError, match=rf"^{re.escape(smaller)}=\d+ must be <=? {re.escape(larger)}=2$"):
        check_settings(cfg)


SWEEPER_VALIDATED = [(p, f) for p, f in SWEEPER_FIELDS if "valid" in f.metadata]


@pytest.mark.parametrize("pruner, field", SWEEPER_VALIDATED, ids=[f"{p or 'sweeper'}.{f.name}" for p, f in SWEEPER_VALIDATED])
def test_a_sweeper_or_pruner_value_outside_its_valid_values_is_named(pruner, field):
    key = f"hydra.sweeper.{'pruner.' if pruner else ''}{field.name}"
    valid = field.metadata["valid"]
    cfg = copy.deepcopy(composed("hparams_search=tpe", f"hydra/sweeper/pruner={pruner or 'median'}"))
    OmegaConf.update(cfg, key, valid.outside)
    [problem] = invalid_settings(cfg.hydra.sweeper, "hydra.sweeper.")
    assert re.fullmatch(rf"{re.escape(key)}=\S+ must be {re.escape(valid.text)}", problem), problem


def train_py(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python train.py ARGS` in `tmp_path`, a directory of its own, with the default output directories."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    command = [sys.executable, str(ROOT / "train.py"), *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


# What users typed (issue 12), each refused before anything is written: (overrides, the one line's start)
REFUSED = [
    ("model=resnet model.depth=6", "error: model.depth=6 with model.stem=small halves"),  # needs the data: in the run
    ("trainer.max_epochs=0", "error: trainer.max_epochs=0 must be >= 1"),
    ("optimizer=sgd optimizer.momentum=2", "error: optimizer.momentum=2.0 must be in [0, 1)"),
    ("+optimzer=adam", "error: optimzer is no config group or setting; did you mean optimizer=adam?"),
    ("-m hparams_search=tpe hydra.sweeper.timeout_s=-10", "error: hydra.sweeper.timeout_s=-10.0 must be > 0"),
    ("-m hparams_search=tpe hydra.sweeper.max_failure_rate=-0.5", "error: hydra.sweeper.max_failure_rate=-0.5"),
    ("-m hparams_search=tpe launcher=joblib launcher.n_jobs=0", "error: launcher.n_jobs=0 must be a positive int"),
    ("-m hparams_search=tpe hydra.sweeper.params.optimizer.lr='interval(0.1,0.01)'", "error: optimizer.lr=interval"),
    ("-m hparams_search=tpe hydra.sweeper.params.optimizer.lr='tag(log,interval(0,1))'", "error: optimizer.lr=tag"),
    ("-m hparams_search=tpe optimizer.lr=interval(-1,1)", "error: the sweep of optimizer.lr reaches -1.0"),
    ("-m hparams_search=tpe hydra.sweeper.enqueue_trials=[{optimizer.lr:abc}]", "error: hydra.sweeper.enqueue_trials[0]"),
    ("+optimizer.lrr=0.1 trainer.max_epochs=1", "error: optimizer: Adam.__init__() got an unexpected keyword argument"),
    # Hydra's own composition errors, which it prints over 3 to 12 lines
    ("trainer.max_epochs=1.5", "error: Error merging override trainer.max_epochs=1.5: Value '1.5' of type 'float' "
                               "could not be converted to Integer"),
    ("optimizer.lrr=0.1", "error: optimizer.lrr is no setting of optimizer; did you mean lr? (its settings: lr, "),
    ("-m hparams_search=tpe optimizer.lrr=0.1", "error: optimizer.lrr is no setting of optimizer; did you mean lr?"),
    ("optimzer=adam", "error: optimzer is no config group or setting; did you mean optimizer? (python train.py --help"),
    ("launcher.n_jobs=2", "error: launcher.n_jobs is no setting of the launcher option chosen here, which has none ("),
    ("optimizer=adamx", "error: In 'train': Could not find 'optimizer/adamx'; Available options in 'optimizer': adam, "
                        "adamw, rmsprop, sgd"),
    ("optimizer.lr=???", "error: optimizer.lr=??? must be given a value"),
    ("seed=${oc.env:LT_UNSET}", "error: seed: KeyError raised while resolving interpolation: \"Environment variable "
                                "'LT_UNSET' not found\""),
    # found by a new user's try of the fixes above
    ("seed=-1", "error: seed=-1 must be in [0, 4294967295]"),
    ("-m hparams_search=tpe seed=-1", "error: seed=-1 must be in [0, 4294967295]"),
    ("data.split_seed=-5", "error: data.split_seed=-5 must be in [0, 4294967295]"),
    ("optimizer.lr=inf", "error: optimizer.lr=inf must be a finite number > 0"),
    ("~model", "error: model is needed: choose one with model=<option>"),
    ("lr_find=true lr_finder.min_lr=1 lr_finder.max_lr=0.1", "error: lr_finder.min_lr=1 must be < lr_finder.max_lr=0.1"),
    ("-m hparams_search=tpe cv.folds=1", "error: cv.folds=1 must be an int >= 2"),
    ("-m hparams_search=tpe hydra/launcher=joblib hydra.launcher.n_jobs=0", "error: hydra.launcher.n_jobs=0 must be a "),
    ("-m hparams_search=grid optimizer=choice(adam,foo)", "error: the sweep of optimizer has optimizer=foo: "),
    ("-m hparams_search=tpe optimizer.lr=tag(lgo,interval(0.001,0.1))", "error: optimizer.lr=tag(lgo,interval(0.001,0.1)):"
                                                                         " unknown tag 'lgo'"),
    # found by a new user's review (stop 21): a traceback after training, or no best.ckpt and no word of it
    ("+trainer.limit_val_batches=0", "error: trainer.limit_val_batches=0 must be an int >= 1 (batches) or a float"),
    ("trainer.check_val_every_n_epoch=5 trainer.max_epochs=2", "error: trainer.check_val_every_n_epoch=5 must be <= "
                                                               "trainer.max_epochs=2"),
    ("+trainer.enable_checkpointing=false", "error: trainer.enable_checkpointing=false must be true: a run keeps"),
    ("trial.pruning=maybe", "error: trial.pruning=maybe must be true or false"),
    ("-m hparams_search=random optimzer.lr=interval(0.001,0.1)", "error: optimzer.lr is no config group or setting; "
                                                                "did you mean optimizer.lr?"),
    ("+callbacks.x._target_=pytorch_lightning.callbacks.Nope trainer.max_epochs=1", "error: callbacks.x: ImportError: "
     "Error loading 'pytorch_lightning.callbacks.Nope': ModuleNotFoundError(\"No module named 'pytorch_lightning."),
    ("+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping +callbacks.stop.monitor=val/accc",
     "error: callbacks.stop.monitor=val/accc is no metric a fit logs; choose one of: val/acc, val/precision, val/"),
    # found by the new user's review of those (stop 22)
    ("+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping +callbacks.stop.monitor=val_loss",
     "error: callbacks.stop.monitor=val_loss is no metric a fit logs; choose one of: val/acc, "),
    ("+callbacks.stop.monitor=val/loss", "error: callbacks.stop has no _target_: give the class of a Lightning callback"),
    ("+callbacks.x._target_=torch.nn.Identity +execution_whitelist.torch=torch.nn.* trainer.max_epochs=1",
     "error: callbacks.x: Identity is no Lightning Callback"),
    ("-m hparams_search=random +optimzer.lr=interval(0.001,0.1)", "error: +optimzer.lr adds a key nothing reads; did "
                                                                 "you mean optimizer.lr?"),
    ("-m hparams_search=random +trainer.limit_val_batches=interval(0,1)", "error: the sweep of trainer.limit_val_batches"
                                                                          " reaches 0.0, but trainer.limit_val_batches "),
    ("-m hparams_search=random cv.folds=choice(1,3)", "error: the sweep of cv.folds reaches 1, but cv.folds must be an "),
]


# refused before Hydra's directory, by the schemas, by Hydra's composition; after it, by the run
QUICK = {"trainer.max_epochs=0", "trainer.max_epochs=1.5", "optimizer=adamx", "model=resnet model.depth=6", "seed=-1"}


@pytest.mark.parametrize(
    "overrides, line",
    [pytest.param(*case, marks=[] if case[0] in QUICK else [pytest.mark.slow], id=case[0]) for case in REFUSED],
)
def test_what_users_typed_is_refused_on_one_line_and_leaves_no_directory(tmp_path, overrides, line):
    result = train_py(tmp_path, *overrides.split())
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(line), result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [], "a refused command left files"


@pytest.mark.slow
def test_a_preset_without_multirun_says_it_runs_once(tmp_path):
    result = train_py(tmp_path, "hparams_search=tpe", "trainer.max_epochs=1", "+trainer.limit_train_batches=2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hparams_search=tpe sweeps only with -m; without it, this is one run of its defaults" in result.stdout


def test_a_refused_run_keeps_a_directory_that_held_something_else(tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    result = train_py(tmp_path, "model=resnet", "model.depth=6", "hydra.run.dir=.")  # refused once the data is known
    assert result.returncode == 1 and (tmp_path / "notes.txt").is_file()
    assert OmegaConf.load(tmp_path / ".hydra" / "overrides.yaml")  # Hydra's files stay beside the user's


def test_a_sweeps_fixed_values_are_read_as_hydra_reads_them():
    """The released sweeper keeps `trainer.max_epochs=1` as the text "1": it is an int >= 1 all the same."""
    from lightning_tune.sweeping.space import SearchSpace, check_values

    base = composed("hparams_search=tpe")
    choices = {"trainer": "default", "optimizer": "adam"}
    check_values(SearchSpace({}, {"trainer.max_epochs": "1", "optimizer.lr": "1e-3"}), choices, lambda g, o: base)
    with pytest.raises(ConfigError, match=r"^the sweep of trainer.max_epochs reaches 0, but trainer.max_epochs must be >= 1$"):
        check_values(SearchSpace({}, {"trainer.max_epochs": "0"}), choices, lambda g, o: base)
    with pytest.raises(ConfigError, match=r"^the sweep of trainer.limit_val_batches reaches 0, but trainer.limit_val"):
        check_values(SearchSpace({}, {"+trainer.limit_val_batches": "0"}), choices, lambda g, o: base)  # a key added
    check_values(SearchSpace({}, {"+trainer.limit_val_batches": "2", "cv.folds": "3"}), choices, lambda g, o: base)


AFTER_S = [pytest.param(s, marks=[] if s == 1.0 else [pytest.mark.slow]) for s in (0.1, 0.5, 1.0, 2.0)]


@pytest.mark.parametrize("after_s", AFTER_S)
def test_ctrl_c_while_the_run_starts_is_one_line(tmp_path, after_s):
    """Interrupted halfway through importing Hydra, its start-up or torch's import, the libraries failed with 28 to 100
    lines of AttributeError or RecursionError; the start-up (about 3 s) now takes Ctrl-C once it is done."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py")], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(after_s)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert (process.returncode, stderr) == (1, "interrupted\n")


@pytest.mark.slow
def test_hydras_own_multirun_stops_at_a_bad_job_on_one_line_keeping_the_jobs_before_it(tmp_path):
    result = train_py(tmp_path, "-m", "optimizer.lr=0.01,-1", "trainer.max_epochs=1", "+trainer.limit_train_batches=2")
    assert result.returncode == 1 and result.stderr == "error: optimizer.lr=-1.0 must be > 0\n", result.stderr[-2000:]
    [sweep_dir] = (tmp_path / "multirun").glob("*/*")
    assert (sweep_dir / "0" / "metrics.json").is_file() and not (sweep_dir / "1").exists()


@pytest.mark.slow
def test_ctrl_c_during_training_is_one_line(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "logger=csv"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("outputs/**/metrics.csv")):  # Lightning's CSV logger writes it as epoch 1 ends
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert (process.returncode, stderr) == (1, "interrupted\n")
    assert "KeyboardInterrupt" not in stdout


@pytest.mark.slow
def test_what_lightning_finds_wrong_once_it_has_the_data_is_one_line(tmp_path):
    """digits' validation set is one batch: a share of it below one batch is refused by Lightning at fit."""
    result = train_py(tmp_path, "+trainer.limit_val_batches=0.5", "trainer.max_epochs=1")
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "error: trainer: MisconfigurationException: You requested to check 0.5 of the `val_dataloader` but "
        "0.5 * 1 < 1. Please increase the `limit_val_batches` argument. Try at least `limit_val_batches=1.0`"
    ], result.stderr[-2000:]
