"""What the sweeper and its trials share about the study: its storage, the pruner's record, seeds.

Free of torch and Lightning, so that the sweep's own process starts, and rejects a bad input, quickly.

The storage URL reaches the trials in the environment variable `LIGHTNING_TUNE_STORAGE`, never in their
overrides: those are written into each trial's `.hydra/` files, its log and its TensorBoard hparams, and a
database URL may hold a password. Every process a trial runs in inherits it: the sweep's own, joblib's
workers, and SLURM jobs (sbatch passes the submitting environment on).
"""

import functools
import json
import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote

import optuna
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from lightning_tune.errors import ConfigError
from lightning_tune.trust import trusted

log = logging.getLogger(__name__)

# A study written by Optuna 2 (every sweep of this project before Optuna 5) stores its params' distributions
# under Optuna 2's names (UniformDistribution, LogUniformDistribution, ...), which Optuna 5 reads as the new ones,
# warning on each read, in every process of a resumed sweep: nothing for the user to do, so not shown.
warnings.filterwarnings(
    "ignore", r"\w+Distribution has been deprecated in v3\.0\.0", FutureWarning, module="optuna.distributions"
)

GRID_SAMPLER = "optuna.samplers.GridSampler"
# the targets of `hydra/sweeper/sampler` and `hydra/sweeper/pruner`: Optuna's, and the Optuna sweeper's NSGA factories
SWEEP_TARGETS = ("optuna.samplers.*", "optuna.pruners.*", "hydra_plugins.hydra_optuna_sweeper.*")
PRUNER_ATTR = "pruner"  # study user attr: the pruner's config, so every trial process builds the same one
NO_PRUNER = "optuna.pruners.NopPruner"  # pruner=none
SWEEP_DIR_ATTR = "sweep_dir"  # study user attr: the sweep directory whose study it is, on a storage sweeps share
JOURNAL = "journal:"  # `hydra.sweeper.storage=journal:<file>`: Optuna's journal file storage
STORAGE_ENV = "LIGHTNING_TUNE_STORAGE"  # the study's storage URL, for the trials' processes
# `scheme://user:PASSWORD@host/...`: the password ends at the first `@`, as SQLAlchemy reads it
PASSWORD = re.compile(r"^[\w+.-]+://[^:/@]*:(?P<password>[^@]*)@")
QUERY_PASSWORD = re.compile(r"[?&]password=(?P<password>[^&]*)")  # `...?password=PASSWORD`, which drivers take too


def url_password(url: str) -> Optional[str]:
    """The password written into a storage URL, or None."""
    match = PASSWORD.match(url) or QUERY_PASSWORD.search(url)
    return match["password"] if match and match["password"] else None


def redact(text: str, url: str) -> str:
    """`text` with the password of the storage `url` (as written, and percent-decoded) replaced by `***`:
    every message that may name the storage, or quote a driver's error about it, goes through here."""
    password = url_password(url)
    if password is None:
        return text
    for form in {password, unquote(password)}:
        text = text.replace(form, "***")
    return text


def derive_seed(sweep_seed: int, trial_number: int) -> int:
    """A different, reproducible seed per trial: the same sweep seed gives the same trial seeds."""
    return (sweep_seed * 1_000_003 + trial_number * 7_919) % 2**31


def storage_url(given: Optional[str], sweep_dir: Path) -> str:
    """The study's storage URL as every process of the sweep opens it: `given` (`hydra.sweeper.storage`), or
    SQLite's `optuna.db` in the sweep directory. A journal file (`journal:<file>`) that is not absolute lies in
    the sweep directory: the trials, wherever they run, get its absolute path. Raises ConfigError for
    `journal:` without a file, `journal://...`, or what is no URL (a bare path)."""
    if given is None:
        return f"sqlite:///{sweep_dir / 'optuna.db'}"
    forms = "journal:<file>, sqlite:///<file> or a database's URL (postgresql://user@host/db)"
    if given.startswith(f"{JOURNAL}//"):
        raise ConfigError(
            f"hydra.sweeper.storage={given!r}: a journal is journal:<file>, without //: "
            f"journal:optuna.journal (in the sweep directory) or journal:/shared/path/optuna.journal"
        )
    if not given.startswith(JOURNAL):
        if not re.match(r"^[A-Za-z][\w+.-]*://", given):
            hint = f"journal:{given}" if given.endswith((".journal", ".log")) else f"sqlite:///{given}"
            raise ConfigError(
                f"hydra.sweeper.storage={given!r} is not a storage URL: give {forms} (did you mean {hint}?)"
            )
        return given
    if not (name := given[len(JOURNAL) :].strip()):
        raise ConfigError(
            f"hydra.sweeper.storage={given!r} names no file: give journal:optuna.journal (in the sweep directory) "
            f"or journal:/shared/path/optuna.journal"
        )
    return f"{JOURNAL}{sweep_dir / Path(name).expanduser()}"  # an absolute path stays as it is


def storage_file(url: str) -> Optional[Path]:
    """The file a storage URL keeps its study in, when it is a file of its own: the journal, or SQLite's
    database (not SQLite's `file:` URI form, nor a server)."""
    if url.startswith(JOURNAL):
        return Path(url[len(JOURNAL) :])
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///file:"):
        return Path(url[len("sqlite:///") :])
    return None


class JournalFile(JournalFileBackend):
    """Optuna's journal file, whose failed writes (a read-only file, a full disk) raise StorageInternalError,
    as the RDB storage's do, rather than the OSError of whichever call wrote."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        try:
            super().append_logs(logs)
        except OSError as error:
            raise optuna.exceptions.StorageInternalError("the journal file refused a write") from error


SQLITE_LOCK_WAIT_S = 600  # how long a SQLite access waits for another process's lock before it fails


@functools.lru_cache(maxsize=None)
def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage of `url`, one per URL and process: trials in the sweep's own process share it, rather
    than each building an engine and checking the schema again.

    `journal:<file>` is Optuna's journal file storage, with the lock Optuna documents for NFS v3 and later
    (`JournalFileOpenLock`: an exclusive `<file>.lock`, created with O_EXCL); SQLite waits up to
    SQLITE_LOCK_WAIT_S for its lock instead of failing when parallel trials write at once: longer than a
    worker's heartbeat grace, so that a process hung with the lock held is cancelled (`workers.LockWatch`)
    before the others give up."""
    if url.startswith(JOURNAL):
        path = url[len(JOURNAL) :]
        backend = JournalFile(path, lock_obj=JournalFileOpenLock(path))
        return optuna.storages.JournalStorage(backend)
    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_LOCK_WAIT_S}})
    return optuna.storages.RDBStorage(url)


def storage_refused(url: str, error: optuna.exceptions.StorageInternalError) -> ConfigError:
    """The one-line error for a storage that refused an access: why, and what to do."""
    cause, shown = str(error.__cause__ or error).splitlines()[0], redact(url, url)
    if "database is locked" in cause:
        advice = (
            f"it could not get its lock in {SQLITE_LOCK_WAIT_S} s (another process holds it: a hung one, or a program "
            f"that holds it open in a transaction; or the file system has no working locks, as NFS may not): end that "
            f"process and run the command again; it resumes"
        )
    else:
        advice = "make it writable (a read-only file, a full disk) and run the command again; it resumes"
    return ConfigError(redact(f"hydra.sweeper.storage={shown!r} refused a write ({cause}): {advice}", url))


def in_wal_mode(database: Path) -> bool:
    """Whether a SQLite database is in WAL mode (its header's format bytes, 18 and 19, are 2), where every open
    connection holds a read lock on it: who holds one says nothing there."""
    try:
        with database.open("rb") as file:
            return file.read(20)[18:20] == b"\x02\x02"
    except OSError:
        return False


def lock_holders(database: Path) -> set[int]:
    """The processes of this machine that hold one of SQLite's locks on `database` (POSIX locks, as
    /proc/locks lists them); none where that cannot be read (not Linux, no such file). A process on another
    machine, over a network file system, is not seen."""
    try:
        found = database.stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return set()
    file = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    holders = set()
    for line in locks.splitlines():  # "1: POSIX  ADVISORY  WRITE 8371 fe:00:2146322 1073741825 1073741825"
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "POSIX" and fields[5] == file:  # "->": a waiter, not a holder
            holders.add(int(fields[4]))
    return holders


def upgrade_schema(url: str, database: Optional[Path], key: str = "hydra.sweeper.storage=") -> None:
    """Bring a study written by an older Optuna (every sweep of this project before Optuna 5: 2.10's schema) to
    this Optuna's schema, by Optuna's own migrations (`optuna storage upgrade`). A SQLite file of the sweep's
    (`database`) is upgraded in place, a copy of it kept beside it first; another database is refused with the
    exact command, as other programs may share it. Raises ConfigError then, naming the setting by `key`."""
    storage = optuna.storages.RDBStorage(url, skip_compatibility_check=True)
    current, head = storage.get_current_version(), storage.get_head_version()
    if current == head:
        return
    if database is None:
        raise ConfigError(redact(
            f"{key}{url!r} holds studies of an older Optuna (schema {current}, this one needs {head}): "
            f"upgrade it with `optuna storage upgrade --storage '{url}'`, then run this command again", url
        ))  # fmt: skip
    backup = database.with_name(f"{database.name}.schema-{current}.bak")
    shutil.copy2(database, backup)
    storage.upgrade()
    log.info("Upgraded %s from Optuna's schema %s to %s; the old file is kept as %s", database, current, head, backup)


def check_journal(path: Path, key: str) -> None:
    """Raise ConfigError, naming the setting `key` that gave it, when the journal file `path` holds a line that
    is not one of Optuna's records (a file of something else, or a line cut by a full disk). Optuna reads past
    such a line as long as it is the last, and fails on it at the next write, after it has appended its own: the
    study is refused before that."""
    if not path.is_file():
        return
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            try:
                record = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                record = None
            if not isinstance(record, dict) or "op_code" not in record:
                raise ConfigError(
                    f"{key}: line {number} of {path} is not an Optuna journal record (another file, or a write cut "
                    f"short by a full disk): restore it from a copy, or keep the study in another file"
                )


def build_sampler(cfg: DictConfig, **kwargs: Any) -> optuna.samplers.BaseSampler:
    """The sampler of `hydra/sweeper/sampler`, which Hydra 1.4 hands the sweeper as a config.

    Optuna marks QMCSampler experimental (its interface may change): that is for us to follow, through
    `hparams_search=qmc`, not for the user to act on, so its warning is not shown."""
    with trusted(SWEEP_TARGETS), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "QMCSampler is experimental", optuna.exceptions.ExperimentalWarning)
        try:
            return instantiate(cfg, **kwargs)
        except (InstantiationException, ValueError, TypeError) as error:  # Optuna refused a setting: its reason
            cause = error.__cause__ or error
            raise ConfigError(f"hydra.sweeper.sampler: {str(cause).splitlines()[0]}") from None


def build_pruner(cfg: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner the study records (`PRUNER_ATTR`), in whichever process runs the trial."""
    with trusted(SWEEP_TARGETS):
        return instantiate(cfg)
