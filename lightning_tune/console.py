"""What the console shows: our progress and results, each library's message at most once and only where
the user can act on it, and a `--help` that lists the choices a user makes.

Every filter of another library's warnings and log lines lives here, each with its reason. A run calls
`quiet_run` as it starts, the sweeper `quiet_sweep`. Imported when Hydra starts (the `--help` resolver),
so it imports nothing heavy at the top.
"""

import difflib
import importlib.resources
import logging
import os
import re
import signal
import string
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

# Lightning's INFO lines that nobody acts on, or that our own lines already say.
DROPPED_LIGHTNING_LINES = re.compile(
    "|".join(
        [
            r"💡 Tip: ",  # advertisements (litlogger, litmodels), in every run, fold and trial
            r"Restoring states from the checkpoint path at ",  # the run logs "best checkpoint: <path>" itself
            r"Loaded model weights from the checkpoint at ",  # the same
            r"Loading `train_dataloader` to estimate number of stepping batches",  # a schedule being sized
            r"\s*Detected KeyboardInterrupt, attempting graceful shutdown",  # the run says `interrupted` itself
        ]
    )
)
# Lightning's INFO lines that are the same for every run, fold and trial of a process: once is enough.
ONCE_LIGHTNING_LINES = re.compile(r"(GPU|TPU) available: |LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES: ")
LIGHTNING_LOGGERS = ["pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                     "pytorch_lightning.accelerators.cuda"]  # fmt: skip

# The options of the sweep groups come as dataclasses (hydra-optuna-sweeper's samplers, our pruners), not as
# YAML files whose first comment describes them: their one-line descriptions for `--help`.
DESCRIPTIONS = {
    "hydra/sweeper/sampler": {
        "tpe": "Bayesian optimization (tree-structured Parzen estimator): the default",
        "random": "independent uniform draws",
        "cmaes": "CMA-ES evolution strategy: models interval and range params; choices are drawn at random",
        "grid": "every combination of choice and range params exactly once",
        "nsgaii": "NSGA-II genetic algorithm, for several objectives (generations of 50 trials)",
        "nsgaiii": "NSGA-III genetic algorithm, for many objectives (reference points)",
        "gp": "Bayesian optimization with a Gaussian process",
        "qmc": "quasi-random (Sobol) points that cover the space evenly",
        "motpe": "removed in Optuna 4: tpe handles several objectives",
    },
    "hydra/sweeper/pruner": {
        "none": "every trial runs to its end (the default)",
        "median": "stop a trial worse than the median of earlier trials at the same epoch",
        "asha": "asynchronous successive halving: keep the top 1/reduction_factor at each rung",
        "hyperband": "several successive-halving brackets of different aggressiveness",
    },
}


class Lines(logging.Filter):
    """Drops a logger's records that match `dropped`, and the repeats of those that match `once`."""

    def __init__(self, once: re.Pattern, dropped: Optional[re.Pattern] = None) -> None:
        super().__init__()
        self.once, self.dropped = once, dropped
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.dropped is not None and self.dropped.match(message):
            return False
        if self.once.match(message):
            if message in self.seen:
                return False
            self.seen.add(message)
        return True


LIGHTNING_LINES = Lines(once=ONCE_LIGHTNING_LINES, dropped=DROPPED_LIGHTNING_LINES)
# Python shows a warning once per place until a filter changes, and every run changes them (Lightning's
# checkpoint loading, our own `check_optimization`): each warning would come back with every fold and trial.
WARNING_LINES = Lines(once=re.compile(""))


def quiet_run() -> None:
    """Lightning's log lines and the warnings of a run as this module says; idempotent. Where the user sets
    warning filters (`python -W ...`, PYTHONWARNINGS), the warnings are theirs to filter."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).addFilter(LIGHTNING_LINES)
    if sys.warnoptions:
        return
    from lightning_fabric.utilities.warnings import PossibleUserWarning

    # Warnings become log lines ("py.warnings"), in the run's log file too, and each is shown once per process:
    # Lightning's hints on the settings (fewer batches than log_every_n_steps, few loader workers) included.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addFilter(WARNING_LINES)
    if "SLURM_JOB_ID" not in os.environ:
        # "srun is available but not used": SLURM's commands on this machine, but no allocation to run in.
        # Our SLURM trials run under srun (submitit); inside an allocation made by hand the hint stays.
        warnings.filterwarnings("ignore", "The `srun` command is available", PossibleUserWarning)
    # torch deprecates LeafSpec, which Lightning's own code uses: nothing for the user to change
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`", FutureWarning, r"pytorch_lightning\.")


def quiet_sweep() -> None:
    """Optuna's INFO lines ("A new study created ...") repeat what the sweeper logs; its warnings stay."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def header_comment(text: str) -> str:
    """The first line of a YAML file's leading comment, past `# @package`; "" without one."""
    for line in text.splitlines():
        if line.startswith("# @package"):
            continue
        return line.lstrip("#").strip() if line.startswith("#") else ""
    return ""


def group_options(sources: Any, group: str) -> dict[str, str]:
    """Each option of `group` on Hydra's search path (`hydra.runtime.config_sources`) and its description;
    where two sources have an option, the first wins, as in Hydra."""
    options: dict[str, str] = {}
    for source in reversed(list(sources)):
        if source.schema == "structured":
            try:
                names = [name[: -len(".yaml")] for name in ConfigStore.instance().list(group) if name.endswith(".yaml")]
            except OSError:  # no such group in the store
                names = []
            options.update({name: DESCRIPTIONS.get(group, {}).get(name, "") for name in names})
            continue
        root = Path(source.path) if source.schema == "file" else importlib.resources.files(source.path)  # pkg
        folder = root.joinpath(group)
        if folder.is_dir():
            for file in folder.iterdir():
                if file.name.endswith(".yaml"):
                    options[file.name[: -len(".yaml")]] = header_comment(file.read_text())
    return options


def help_groups(*groups: str, _root_: DictConfig) -> str:
    """`${lt.help_groups:model,optimizer,...}` in `hydra.help.template`: each group, its options with their
    descriptions, and a `*` at the option chosen. `$` is doubled for Hydra's string.Template."""
    runtime = _root_.hydra.runtime
    options = {group: group_options(runtime.config_sources, group) for group in groups}
    width = max((len(name) for names in options.values() for name in names), default=0)
    lines = []
    for group, described in options.items():
        lines.append(f"{group}:")
        for name in sorted(described):
            mark = "*" if name == runtime.choices.get(group) else " "
            lines.append(f"  {mark} {name:<{width}}  {described[name]}".rstrip())
    return "\n".join(lines).replace("$", "$$")


def register_help_resolver() -> None:
    OmegaConf.register_resolver("lt.help_groups", help_groups, replace=True)


def print_help(config_dir: Path, config_name: str) -> None:
    """`python train.py --help` without overrides: the app's `hydra.help.template`, composed as Hydra's own
    `--help` composes it. Hydra lists every config group first, the template's unused `$APP_CONFIG_GROUPS`
    and `$HYDRA_CONFIG_GROUPS`, copying its whole config store for each group: 2 to 5 s."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir.absolute())):
        cfg = compose(config_name, return_hydra_config=True)
    print(string.Template(cfg.hydra.help.template).safe_substitute())


def is_config_group(name: str) -> bool:
    """A config group of lightning-tune's (a folder of `lightning_tune/conf`)."""
    return (importlib.resources.files("lightning_tune.conf") / name).is_dir()


def first_line(error: BaseException) -> str:
    """`ValueError: the first line of its message`, for a one-line log or error. Hydra's ImportError of a
    target (`Error loading 'x':`, then its cause, then a question) is whole, its lines joined."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return f"{type(error).__name__}: {' '.join(lines) if isinstance(error, ImportError) else lines[0]}"


def hydra_error_line(error: BaseException) -> str:
    """Hydra's error of composing a command, on one line: `trainer.max_epochs=1.5: Value '1.5' of type
    'float' could not be converted to Integer`. Hydra spreads it over 3 to 12 lines, with its config search
    path; for a key that no schema or group has, it suggests `+key=...`, which adds a key nothing reads."""
    cause = error.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key and cause.parent_node is not None:
        keys = [str(key) for key in cause.parent_node.keys() if not str(key).startswith("_") and key != "hydra"]
        close = difflib.get_close_matches(str(cause.key), keys, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        parent = cause.full_key.rpartition(".")[0]
        typed = re.match(r"Could not override '([^']+)'", str(error))
        if not parent and typed and typed[1].startswith(f"{cause.full_key}.") and is_config_group(cause.full_key):
            return (
                f"{typed[1]} is no setting of the {cause.full_key} option chosen here, which has none (python train.py "
                f"--help lists the {cause.full_key} options: choose one with {cause.full_key}=<option>)"
            )
        if not parent:
            return f"{cause.full_key} is no config group or setting{hint} (python train.py --help lists the groups)"
        return f"{cause.full_key} is no setting of {parent}{hint} (its settings: {', '.join(keys)})"
    parts: list[str] = []
    for line in str(error).split("Config search path:")[0].splitlines():
        if line.startswith("\t") and parts:  # a group's options, one per line
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line.strip()
        elif line.strip() and not re.match(r"\s*(full_key|object_type|reference_type)\b", line):  # OmegaConf's
            parts.append(line.strip().rstrip("."))
    text = "; ".join(parts)
    if isinstance(error, OmegaConfBaseException) and error.full_key:  # resolving `${...}`: name its key
        text = f"{error.full_key}: {text}"
    if cause is not None and str(cause):
        text += f": {str(cause).splitlines()[0]}"
    return text


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Around `python train.py`: Hydra's composition errors and Ctrl-C end it with one line, not Hydra's
    several lines or a traceback. Hydra prints its errors itself unless HYDRA_FULL_ERROR=1, which hands them to us
    (and a bug's whole traceback to the user); where the user set it, Hydra's output is theirs."""
    users = "HYDRA_FULL_ERROR" in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    # Ctrl-C waits until the job or sweep starts (`accept_interrupts`): interrupted halfway, Hydra's start-up
    # and the imports of numpy and torch leave half-made objects that fail with AttributeErrors and
    # RecursionErrors of their own, not with KeyboardInterrupt. The start-up takes 1 to 3 s.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    except (HydraException, OmegaConfBaseException) as error:
        if users:
            raise
        sys.exit(f"error: {hydra_error_line(error)}")
    except KeyboardInterrupt:  # a sweep resumes where it was
        sys.exit("interrupted")


def accept_interrupts() -> None:
    """End the start-up's hold on Ctrl-C (`one_line_errors`): once the job or sweep has imported what it needs.
    A Ctrl-C pressed meanwhile raises KeyboardInterrupt here."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
