"""Settings out of their valid range, refused on one line before anything runs.

Hydra's composition checks keys and types against the schemas (`lightning_tune.schemas`); the values
are checked here, from the `Valid` each schema field carries: by a Hydra callback before Hydra makes the
run or sweep directory (`hydra.callbacks.validate` in conf/train.yaml), and again when a run starts, for
a trial's own values. Free of torch: the callback runs before the job imports it.
"""

import dataclasses
import difflib
import logging
import math
import sys
from typing import Any, Iterator, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from lightning_tune.console import hydra_error_line
from lightning_tune.errors import ConfigError
from lightning_tune.metrics import VALIDATED
from lightning_tune.schemas import AT_LEAST_1, POSITIVE, SEED, JoblibLauncherSchema, SlurmLauncherSchema, Valid, between

log = logging.getLogger(__name__)

def batches(meaning: str) -> Valid:
    """Lightning's count-or-share Trainer settings: an int >= 1, or a float in (0, 1]; `meaning` ends the text."""
    test = lambda v: (type(v) is int and v >= 1) or (type(v) is float and 0 < v <= 1)  # noqa: E731 - bool is no int here
    return Valid(test, f"an int >= 1 ({meaning}", 0)


# The settings of conf/train.yaml itself, which has no schema (users add keys of their own to it).
TOP_LEVEL = {
    "seed": SEED,
    "cv.folds": Valid(lambda k: type(k) is int and k >= 2, "an int >= 2 (k-fold cross-validation), or null (none)", 1),
    "lr_finder.min_lr": POSITIVE,
    "lr_finder.max_lr": POSITIVE,
    "lr_finder.num_training": AT_LEAST_1,
    "lr_finder.early_stop_threshold": between(1, open_low=True),  # a multiple of the best loss
    "trial.pruning": Valid(lambda v: isinstance(v, bool), "true or false (the sweeper sets it), or null", "maybe"),
    # Trainer keys users add with `+trainer.<key>=`, which a run cannot do without: it keeps, and scores, the
    # checkpoint of its best validation epoch.
    "trainer.limit_val_batches": batches("batches) or a float in (0, 1] (a share of them): a run keeps its best "
                                         "validated epoch"),
    "trainer.limit_train_batches": batches("batches) or a float in (0, 1] (a share of them): 0 trains nothing"),
    "trainer.val_check_interval": batches("training batches) or a float in (0, 1] (a share of an epoch)"),
    "trainer.enable_checkpointing": Valid(
        lambda v: v is True, "true: a run keeps the checkpoint of its best epoch, checkpoints/best.ckpt", False
    ),
}
# (smaller, larger): settings that must keep their order; True where they may be equal.
ORDERED = [
    ("trainer.min_epochs", "trainer.max_epochs", True),
    ("lr_finder.min_lr", "lr_finder.max_lr", False),
    ("scheduler.warmup_epochs", "trainer.max_epochs", False),  # the lr would never reach its value
    ("trainer.check_val_every_n_epoch", "trainer.max_epochs", True),  # else no epoch validated, no best.ckpt
]
REQUIRED = ["data", "model", "optimizer", "trainer"]  # the groups a run cannot do without (`~model` removes one)
LAUNCHERS = {"n_jobs": JoblibLauncherSchema, "array_parallelism": SlurmLauncherSchema}  # by a key only it has


def problem(key: str, value: Any, valid: Valid) -> str:
    """`key=value must be ...`; `inf` and `nan` pass no range, which their words alone would not say."""
    finite = not isinstance(value, float) or math.isfinite(value)
    shown = f"[{','.join(map(str, value))}]" if isinstance(value, (list, tuple)) else value  # as typed
    shown = str(value).lower() if isinstance(value, bool) else shown
    return f"{key}={shown} must be {'' if finite else 'a finite number '}{valid.text}"


def schema_fields(node: Any) -> dict[str, Valid]:
    """The valid values of each field of `node`'s schema, where it has one."""
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if schema is None or not dataclasses.is_dataclass(schema):
        return {}
    return {f.name: f.metadata["valid"] for f in dataclasses.fields(schema) if "valid" in f.metadata}


def invalid_settings(node: DictConfig, path: str = "") -> Iterator[str]:
    """`key=value must be ...` for each setting of `node` and below that is outside its valid values."""
    for name, valid in schema_fields(node).items():
        value = OmegaConf.select(node, name, throw_on_missing=False)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        if value is not None and not valid.test(value):
            yield problem(f"{path}{name}", value, valid)
    for key in node.keys():
        if key == "hydra" or OmegaConf.is_interpolation(node, key):  # Hydra's; `${...}`: checked where it points
            continue
        if OmegaConf.is_missing(node, key):  # `key=???` on the command line: nothing to train with
            yield f"{path}{key}=??? must be given a value"
        elif isinstance(child := node[key], DictConfig):  # not None
            yield from invalid_settings(child, f"{path}{key}.")


def invalid_top_level(cfg: DictConfig) -> Iterator[str]:
    """conf/train.yaml's own settings outside their valid values."""
    for key, valid in TOP_LEVEL.items():
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if value is not None and not valid.test(value):
            yield problem(key, value, valid)


def out_of_order(cfg: DictConfig) -> Iterator[str]:
    """Settings, each valid alone, whose order is wrong (`trainer.min_epochs=5 trainer.max_epochs=2`)."""
    for smaller, larger, equal in ORDERED:
        low, high = OmegaConf.select(cfg, smaller), OmegaConf.select(cfg, larger)
        numbers = isinstance(low, (int, float)) and isinstance(high, (int, float))
        if numbers and (low > high or (low == high and not equal)):
            yield f"{smaller}={low} must be {'<=' if equal else '<'} {larger}={high}"


def invalid_launcher(launcher: DictConfig) -> Iterator[str]:
    """`hydra.launcher.<key>` set directly (`hydra/launcher=joblib hydra.launcher.n_jobs=0`) out of its range."""
    for key, schema in LAUNCHERS.items():
        if key in launcher:
            for field in dataclasses.fields(schema):
                value = launcher.get(field.name)
                if "valid" in field.metadata and value is not None and not field.metadata["valid"].test(value):
                    yield problem(f"hydra.launcher.{field.name}", value, field.metadata["valid"])


def invalid_callbacks(cfg: DictConfig) -> Iterator[str]:
    """A user callback without `_target_`, or whose `monitor` is no metric a fit logs at each validation
    (`val/accc`, `val_loss`, `test/acc`): Lightning would stop the run with a traceback after its first epoch.
    (`train/` metrics are logged at the epochs a logging step falls in, `lr-` ones with a logger: left to it.)"""
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:  # `callbacks.stop=null`: an experiment's callback switched off
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            yield f"callbacks.{name} has no _target_: give the class of a Lightning callback, e.g. " \
                  f"+callbacks.{name}._target_=pytorch_lightning.callbacks.EarlyStopping"  # fmt: skip
            continue
        monitor = node.get("monitor")
        if isinstance(monitor, str) and not monitor.startswith(("train/", "lr-")) and monitor not in VALIDATED:
            yield f"callbacks.{name}.monitor={monitor} is no metric a fit logs; choose one of: {', '.join(VALIDATED)}"


def check_settings(cfg: DictConfig) -> None:
    """Raise ConfigError, on one line, for the first setting of `cfg` outside its valid values."""
    for problem in [*invalid_top_level(cfg), *invalid_settings(cfg), *out_of_order(cfg), *invalid_callbacks(cfg)]:
        raise ConfigError(problem)


def valid_of(cfg: DictConfig, key: str) -> Optional[Valid]:
    """The valid values of setting `key` (`optimizer.lr`) of `cfg`, if its schema gives them."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return schema_fields(node).get(name)


def misspelled_groups(cfg: DictConfig, groups: list[str]) -> Iterator[str]:
    """Top-level keys that are not config groups but are one letter or two away from one: `+optimzer=adam`,
    which Hydra's own hint suggests for a misspelled group, adds a key nothing reads."""
    for key in cfg.keys():
        close = difflib.get_close_matches(str(key), groups, n=1, cutoff=0.8)
        if key not in groups and close:
            yield f"{key} is no config group or setting; did you mean {close[0]}={OmegaConf.select(cfg, str(key))}?"


class ValidateConfig(Callback):
    """Refuses a run or sweep whose settings are out of range, before Hydra makes its directory; warns
    when a sweep preset is given without `-m`."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, sweep=False)
        preset = config.hydra.runtime.choices.get("hparams_search")
        if preset:
            log.warning("hparams_search=%s sweeps only with -m; without it, this is one run of its defaults", preset)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, sweep=True)

    @classmethod
    def _check(cls, config: DictConfig, sweep: bool) -> None:
        try:
            problems = cls._problems(config, sweep)
        except (InterpolationResolutionError, MissingMandatoryValue) as error:  # `seed=${oc.env:UNSET}`
            problems = [hydra_error_line(error)]
        if problems:
            sys.exit(f"error: {problems[0]}")

    @staticmethod
    def _problems(config: DictConfig, sweep: bool) -> list[str]:
        groups = [group for group in config.hydra.runtime.choices if "/" not in group]
        problems = [f"{group} is needed: choose one with {group}=<option> (python train.py --help lists them)"
                    for group in REQUIRED if config.get(group) is None]  # fmt: skip
        problems += [*invalid_top_level(config), *invalid_settings(config), *out_of_order(config)]
        problems += invalid_callbacks(config)
        problems += misspelled_groups(config, groups)
        if sweep and OmegaConf.select(config, "hydra.sweeper.n_trials") is not None:  # our sweeper's settings
            problems += invalid_settings(config.hydra.sweeper, "hydra.sweeper.")
        if sweep:
            problems += invalid_launcher(config.hydra.launcher)
        return problems
