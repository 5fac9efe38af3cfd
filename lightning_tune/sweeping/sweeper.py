"""The Optuna sweeper, extended: resumable studies, pruning, robust trials, budgets and results.

Its config extends hydra-optuna-sweeper's (`config.py`), and its params are parsed as that sweeper parses
them (`space.py`); the loop is ours, because the Optuna sweeper's cannot resume, prune, survive a NaN
trial, number jobs by trial, fit its search space to the chosen config groups, run a grid point only once
or keep every parallel slot busy (it waits for a whole batch).
"""

import contextlib
import ctypes
import functools
import logging
import math
import os
import time
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, List, Optional, Sequence, Union

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from lightning_tune.console import first_line, hydra_error_line
from lightning_tune.errors import ConfigError, TrainingDiverged, TrialProcessDied
from lightning_tune.metrics import objective_direction, objective_names
from lightning_tune.private_hydra import failed_job_error
from lightning_tune.slurm import SlurmJobFailed, SlurmJobReturn
from lightning_tune.startup import imports_done
from lightning_tune.sweeping.composition import TrialConfigLoader
from lightning_tune.sweeping.gpus import GpuSeats
from lightning_tune.sweeping.guards import check_runs_known, driver_lock
from lightning_tune.sweeping.jobs import DURATION, TrialJobs, job_duration
from lightning_tune.sweeping.private_optuna import set_running_trial_attrs
from lightning_tune.sweeping.results import WORKER_JOB, write_progress, write_report
from lightning_tune.sweeping.slots import Slots
from lightning_tune.sweeping.space import (
    SearchSpace,
    check_enqueued,
    check_known,
    fit_to_groups,
    flatten_params,
    grid_choices,
    parse_search_space,
    suggest,
    typed_param_names,
)
from lightning_tune.sweeping.study import (
    GRID_SAMPLER,
    JOURNAL,
    NO_PRUNER,
    PRUNER_ATTR,
    STORAGE_ENV,
    SWEEP_DIR_ATTR,
    build_sampler,
    check_journal,
    derive_seed,
    open_storage,
    redact,
    storage_file,
    storage_refused,
    storage_url,
    upgrade_schema,
    url_password,
)

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
INTERRUPTED = "interrupted"  # user attr of a trial that a killed sweep left running, or whose process died
RETRY_OF = "retry_of"  # user attr of the trial that runs a died trial's configuration again: that trial's number
STUDY_FILES = ("optuna.db", "optuna.journal")  # the study's file in the sweep directory, by default or as journal:
RETRIED = "; its configuration is retried"  # how an interrupted trial's fail_reason ends


@dataclass
class SweepPlan:
    """What every process that runs the sweep's trials asks and counts them by: the driver, or its workers."""

    space: SearchSpace
    objectives: list[str]
    directions: list[str]
    sweep_seed: int
    grid: Optional[list[dict[str, Any]]]  # the grid's points in the order they run, or None: a sampler's trials
    n_trials: int  # finished trials that end the sweep
    deadline: Optional[float]  # the time (time.time()) after which no trial starts: hydra.sweeper.timeout_s


def unvisited(grid: list[dict[str, Any]], study: optuna.Study) -> list[dict[str, Any]]:
    """The grid's points, in order, that no trial of the study holds: neither finished (an interrupted
    trial's point is free again), nor running, nor waiting to run (enqueued)."""
    taken = set()
    for trial in study.get_trials(deepcopy=False):
        if not trial.user_attrs.get(INTERRUPTED):
            params = trial.params if trial.state != TrialState.WAITING else trial.system_attrs.get("fixed_params", {})
            taken.add(point_key(params))
    return [point for point in grid if point_key(point) not in taken]


def interrupt(
    study: optuna.Study, url: str, trial: Union[FrozenTrial, optuna.Trial], reason: str, retry: bool, once: bool = True
) -> int:
    """Fail a RUNNING trial whose process is gone (a killed sweep's, a dead worker's) as `INTERRUPTED`, with
    `reason`, and with `retry` run its configuration again; `once`, where the death may be the configuration's
    doing (out of memory): a retry's death then fails for good. Returns 1, or 0 when another process (another
    worker, the driver) finished the trial first."""
    final = once and RETRY_OF in trial.user_attrs
    retried = RETRIED if retry and not final else ""
    attrs = {"fail_reason": reason} if final else {INTERRUPTED: True, "fail_reason": f"interrupted: {reason}{retried}"}
    try:
        set_running_trial_attrs(open_storage(url), study.study_name, trial.number, attrs)
        study.tell(trial.number, state=TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):  # told, or reaped, elsewhere meanwhile
        return 0
    if retried:
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: trial.number} if once else None)
    return 1


def count_finished(study: optuna.Study) -> int:
    """Trials that count against n_trials: finished, and not interrupted (those run again)."""
    return sum(not t.user_attrs.get(INTERRUPTED) for t in study.get_trials(deepcopy=False, states=FINISHED))


def unstarted(trials: Sequence[FrozenTrial], n_trials: int) -> int:
    """Trials still to start: `n_trials` less those finished (as `count_finished` counts them) and those running,
    from one snapshot of the study: counted from two reads, a trial that ends between them would count twice."""
    finished = sum(t.state in FINISHED and not t.user_attrs.get(INTERRUPTED) for t in trials)
    return n_trials - finished - sum(t.state == TrialState.RUNNING for t in trials)


def count_failed(study: optuna.Study) -> int:
    return sum(not t.user_attrs.get(INTERRUPTED) for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))


def point_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def launcher_parallelism(launcher: DictConfig) -> int:
    """Trials the launcher runs at once: joblib's n_jobs (-1 every core, -2 all but one), a SLURM
    array's parallelism, or 1."""
    if "array_parallelism" in launcher:
        return max(1, int(launcher.array_parallelism))
    n_jobs = launcher.get("n_jobs") or 1
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def composition_failure(overrides: Sequence[str], error: BaseException) -> JobReturn:
    """The return of a trial whose config Hydra could not compose: a failure, with Hydra's reason; no job ran."""
    return not_run(overrides, ConfigError(hydra_error_line(error)))


def not_run(overrides: Sequence[str], error: Exception) -> JobReturn:
    """The failed return of a trial whose job was never launched."""
    ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
    ret.return_value = error
    setattr(ret, DURATION, 0.0)
    return ret


def return_freed_memory() -> None:
    """Hand the heap's free pages back to the OS between trials. Without it, glibc keeps the peak of
    every trial size seen so far, and an in-process sweep's RSS climbs with its trials' variety."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): their allocators behave otherwise
        pass


def trial_outcome(ret: JobReturn, n_objectives: int) -> tuple[TrialState, Optional[list[float]], str]:
    """(state, values, reason) of a finished job: pruned, failed with its reason, or complete."""
    if ret.status != JobStatus.COMPLETED:
        error = failed_job_error(ret)
        if isinstance(error, optuna.TrialPruned):
            return TrialState.PRUNED, None, str(error)
        if isinstance(error, TrainingDiverged):
            return TrialState.FAIL, None, f"diverged: {error}"
        if isinstance(error, ConfigError):
            return TrialState.FAIL, None, f"invalid config: {error}"
        if isinstance(error, (SlurmJobFailed, TrialProcessDied)):
            return TrialState.FAIL, None, str(error)  # it names the job and SLURM's state, or the worker
        return TrialState.FAIL, None, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    raw = ret.return_value
    values = [float(v) for v in (raw if isinstance(raw, (list, tuple)) else [raw])]
    if len(values) != n_objectives:
        return TrialState.FAIL, None, f"returned {len(values)} values for {n_objectives} objectives"
    if not all(math.isfinite(v) for v in values):
        return TrialState.FAIL, None, f"returned a non-finite value: {values}"
    return TrialState.COMPLETE, values, ""


class TuningSweeper(Sweeper):
    def __init__(
        self,
        *,
        sampler: Any,
        pruner: Any,
        direction: Any,
        storage: Optional[str],
        study_name: str,
        n_trials: int,
        n_jobs: int,
        wait_for_batch: bool,
        workers_per_gpu: int,
        workers: int,
        detach: bool,
        heartbeat_grace_s: int,
        max_failure_rate: float,
        params: Optional[DictConfig],
        custom_search_space: Optional[str],
        timeout_s: Optional[float],
        enqueue_trials: List[Any],
        warm_start: Optional[str],
    ) -> None:
        """The settings of `TuningSweeperConf`. `sampler` and `pruner` come as configs (Hydra 1.4 builds a
        sweeper's config non-recursively) and are read from the sweep's config: `_sampler`, the trials."""
        self.custom_search_space = custom_search_space  # refused in `sweep`, on one line
        self.direction, self.storage, self.study_name = direction, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate, self.params = n_trials, n_jobs, max_failure_rate, params
        self.timeout_s, self.wait_for_batch, self.workers_per_gpu = timeout_s, wait_for_batch, workers_per_gpu
        self.workers, self.detach, self.heartbeat_grace_s = workers, detach, heartbeat_grace_s
        self.enqueue_trials = [dict(params) for params in enqueue_trials or []]
        self.warm_start = warm_start

    def setup(self, *, hydra_context: HydraContext, task_function: Any, config: DictConfig) -> None:
        # the launcher composes each trial's config through this loader: once per group choices, not per trial
        # and its jobs, wherever they run, time themselves and end with this process (`jobs.py`)
        loader = TrialConfigLoader(hydra_context.config_loader)
        self.trial_jobs = TrialJobs(hydra_context.callbacks, driver_pid=os.getpid())
        hydra_context = HydraContext(
            config_loader=loader, callbacks=self.trial_jobs, execution_whitelist=hydra_context.execution_whitelist
        )
        self.config, self.hydra_context = config, hydra_context
        self._check_workers()  # before the SLURM launcher's own checks, which would blame the job's resources
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.pruner_cfg = OmegaConf.to_container(config.hydra.sweeper.pruner, resolve=True)
        self.sweep_dir = Path(config.hydra.sweep.dir).absolute()
        # trials at once: the launcher's parallelism (a joblib pool, a SLURM array's), or 1 for in-process trials
        parallelism = launcher_parallelism(config.hydra.launcher)
        self.slots = max(self.n_jobs, parallelism) if parallelism > 1 else 1
        # a SLURM job sees only its own GPUs: the sweeper assigns GPUs to trials on this machine only
        self.assigns_gpus = "array_parallelism" not in config.hydra.launcher

    # --- building the study ------------------------------------------------------------------
    def _directions(self, objectives: list[str]) -> list[str]:
        if self.direction is None:
            return [objective_direction(name) for name in objectives]
        given = self.direction if OmegaConf.is_list(self.direction) else [self.direction]
        directions = [getattr(direction, "name", str(direction)) for direction in given]  # a Direction, or its name
        if len(directions) != len(objectives):
            raise ConfigError(
                f"hydra.sweeper.direction has {len(directions)} entries for {len(objectives)} objectives {objectives}"
            )
        return directions

    def _refuse_written_password(self) -> None:
        """A password typed into `hydra.sweeper.storage` (on the command line or in a config file) would be
        written, as typed, into every trial's `.hydra/hydra.yaml`, and the command line shows in the machine's
        process list: refuse it. Given by interpolation (`${oc.env:DB_URL}`), it is resolved in this process only."""
        given = OmegaConf.to_container(self.config.hydra.sweeper, resolve=False).get("storage")
        password = url_password(given) if isinstance(given, str) else None
        if password and "${" not in password:
            raise ConfigError(
                f"hydra.sweeper.storage={redact(given, given)} holds a password, which Hydra would write into every "
                f"trial's .hydra/hydra.yaml: put the URL in an environment variable and give "
                f"hydra.sweeper.storage='${{oc.env:DB_URL}}', or keep the password in the database's own file "
                f"(~/.pgpass)"
            )

    def _open_study(self, directions: list[str], sampler: Any) -> optuna.Study:
        """The study, created or resumed; refused when the sweep directory holds runs that it does not know, or
        when, on a storage that sweeps share (a database server, a journal elsewhere), it is another sweep
        directory's: every sweep's study is `lightning-tune` unless `hydra.sweeper.study_name` says otherwise, and
        a second sweep would take over the first's trials, marking those that run as interrupted."""
        url, shown = self.storage_url, redact(self.storage_url, self.storage_url)
        database = storage_file(url)
        inside = database is not None and self.sweep_dir in database.parents
        if database is not None and not inside and not database.parent.is_dir():  # a typo, or an unmounted share
            raise ConfigError(f"hydra.sweeper.storage={shown!r}: there is no directory {database.parent}")
        if database is not None and not database.exists():  # opening it would create it: refuse first, leaving
            others = [name for name in STUDY_FILES if (self.sweep_dir / name).exists() and name != database.name]
            held = f" (this directory holds {', '.join(others)}: another hydra.sweeper.storage?)" if others else ""
            check_runs_known(self.sweep_dir, [], shown + held)  # no empty database behind
        try:
            if inside:
                database.parent.mkdir(parents=True, exist_ok=True)
            if url.startswith(JOURNAL):  # a journal has no schema to upgrade: each line is one operation
                check_journal(database, f"hydra.sweeper.storage={shown!r}")
            elif database is None or database.exists():  # a new SQLite file is created at this Optuna's schema
                upgrade_schema(url, database)
            storage = open_storage(url)
            try:
                known = optuna.load_study(study_name=self.study_name, storage=storage, sampler=sampler)
                trials, owner = known.get_trials(deepcopy=False), known.user_attrs.get(SWEEP_DIR_ATTR)
            except KeyError:  # a new study
                trials, owner = [], None
        except ConfigError:
            raise
        except Exception as error:  # a URL that cannot be opened fails here, before any trial runs
            reason = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            if isinstance(error, ImportError) and error.__cause__:  # Optuna's "install appropriate one": which
                reason = f"its driver is not installed ({error.__cause__})"
                if url.startswith("postgresql"):
                    reason += "; pip install 'lightning-tune[postgres]' brings psycopg 3, for postgresql+psycopg://..."
            raise ConfigError(redact(f"hydra.sweeper.storage={shown!r} cannot be opened: {reason}", url)) from None
        here = str(self.sweep_dir)
        if not inside and owner not in (None, here) and Path(owner).is_dir():  # (an owner gone was moved: here now)
            raise ConfigError(
                f"the study {self.study_name!r} in {shown} is the sweep's in {owner}: give this sweep a study of its "
                f"own, hydra.sweeper.study_name={self.sweep_dir.name} say, or run that sweep's command to resume it"
            )
        check_runs_known(self.sweep_dir, [t.number for t in trials if t.state != TrialState.WAITING], shown)
        study = optuna.create_study(
            study_name=self.study_name, storage=storage, sampler=sampler, directions=directions, load_if_exists=True
        )
        if [d.name.lower() for d in study.directions] != directions:
            raise ConfigError(
                f"the study {study.study_name!r} in {shown} optimizes {[d.name.lower() for d in study.directions]}, "
                f"not {directions}; use another hydra.sweep.dir or hydra.sweeper.study_name"
            )
        if owner != here:
            study.set_user_attr(SWEEP_DIR_ATTR, here)
        return study

    def _recover_interrupted(self, study: optuna.Study, retry: bool) -> int:
        """Mark trials left RUNNING by a crash as failed; their configurations are tried again (`retry`;
        a grid revisits the points it has not finished by itself). Called under the driver's lock: no other
        driver runs them. A worker's trial is left to its worker while SLURM holds that (`workers.py`)."""
        from lightning_tune.sweeping.workers import reap

        count = reap(study, self.storage_url, self.heartbeat_grace_s, retry)  # those of workers that have ended
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if WORKER_JOB not in trial.user_attrs:
                count += interrupt(study, self.storage_url, trial, "the sweep stopped during it", retry, once=False)
        if count:
            log.info("Resuming: %d trial(s) interrupted as their process ended are retried", count)
        return count

    def _warm_start_params(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """`enqueue_trials`, then an earlier sweep's best values of the params swept now.

        Its `optimization_results.yaml` names group options too; `best.yaml` alone gives values only. Raises
        ConfigError for an enqueued param that is not swept: a typo would be ignored.
        """
        params = list(self.enqueue_trials)
        for index, trial in enumerate(params):
            if unknown := sorted(set(trial) - set(names)):
                raise ConfigError(
                    f"hydra.sweeper.enqueue_trials[{index}]: {', '.join(unknown)} not swept; the swept params are "
                    f"{', '.join(names)}"
                )
        if self.warm_start:
            path = Path(self.warm_start)
            path = path / "best.yaml" if path.is_dir() else path
            if not path.is_file():
                shown = redact(self.warm_start, self.warm_start)  # a database URL given by mistake
                raise ConfigError(f"hydra.sweeper.warm_start={shown!r}: no best.yaml there")
            results = path.parent / "optimization_results.yaml"
            if results.is_file() and "best_params" in (saved := OmegaConf.load(results)):
                best = dict(saved.best_params)
            else:
                config = OmegaConf.load(path)
                best = {name: OmegaConf.select(config, name) for name in names}
            params.append({n: v for n, v in best.items() if n in names and v is not None and not OmegaConf.is_config(v)})
        return params

    # --- the search space ---------------------------------------------------------------------
    def _refuse_two_searches(self) -> None:
        """An experiment that brings its own search (`hydra.sweeper.params`) and a preset would merge two
        search spaces and two samplers into one that neither describes: refuse the pair on one line."""
        choices = self.config.hydra.runtime.choices
        experiment, preset = choices.get("experiment"), choices.get("hparams_search")
        if not (experiment and preset):
            return
        own = self.hydra_context.config_loader.load_configuration(
            self.config.hydra.job.config_name, [f"experiment={experiment}"], run_mode=RunMode.MULTIRUN
        )
        if OmegaConf.select(own, "hydra.sweeper.params"):
            raise ConfigError(
                f"experiment={experiment} brings its own search, which does not combine with hparams_search={preset}: "
                f"drop hparams_search, and change the experiment's search with hydra.sweeper.params.<key>=..."
            )

    def _search_space(self, arguments: List[str]) -> SearchSpace:
        """The params of `hydra.sweeper.params` and the command line's sweeps, fitted to the config groups."""
        self._refuse_two_searches()
        distributions, fixed = parse_search_space(flatten_params(self.params or {}) + list(arguments))
        for name in fixed:
            distributions.pop(name, None)
        base_choices = {group: option for group, option in self.config.hydra.runtime.choices.items() if "/" not in group}
        command_line = [o for o in OverridesParser.create().parse_overrides(list(arguments)) if not o.is_sweep_override()]
        composed: dict[tuple[str, Any], Union[DictConfig, str]] = {self_key: self.config for self_key in base_choices.items()}

        def option_config(group: str, option: Any) -> Union[DictConfig, str]:
            """The sweep's config with `group=option` instead of its own choice, or Hydra's reason why not."""
            if (group, option) not in composed:
                overrides = [o.input_line for o in command_line if o.get_key_element() != group]
                try:
                    composed[group, option] = self.hydra_context.config_loader.load_sweep_config(
                        self.config, [*overrides, f"{group}={option}"]
                    )
                except Exception as error:  # noqa: BLE001 - whatever Hydra raises, the option does not compose
                    composed[group, option] = hydra_error_line(error)
            return composed[group, option]

        typed = typed_param_names(self.config.hydra.overrides.hydra, arguments)
        swept = SearchSpace(distributions, fixed)
        check_known(swept, self.config, base_choices, typed)
        space, notes = fit_to_groups(swept, base_choices, option_config, typed)
        if notes:
            log.warning("Not swept: %s", "; ".join(notes))
        return space

    def _grid_order(self, space: SearchSpace, first: list[dict[str, Any]], seed: int) -> Optional[list[dict[str, Any]]]:
        """With the grid sampler, its points in the order they run: the first trials (enqueued or warm
        start), each matched to a point of the grid, then the rest shuffled by `seed`. None otherwise."""
        if self.config.hydra.sweeper.sampler._target_ != GRID_SAMPLER:
            return None
        points = space.grid(seed)
        order: list[dict[str, Any]] = []
        for params in first:
            match = next((p for p in points if p not in order and all(p.get(k) == v for k, v in params.items())), None)
            if match is None:
                raise ConfigError(
                    f"hydra.sweeper.enqueue_trials (or warm_start): {params} is not a point of the grid over "
                    f"{ {name: grid_choices(name, d) for name, d in space.distributions.items()} }"
                )
            order.append(match)
        return order + [p for p in points if p not in order]

    def sampler(self, sweep_seed: int, n_trials_so_far: int, grid: bool, worker: Optional[int] = None) -> Any:
        """The configured sampler, seeded by `hydra.sweeper.sampler.seed` or else the sweep's `seed`, so the
        same command suggests the same trials; resumed, by a seed derived from it and the trials so far, lest
        it suggest the first run's trials again; in a `worker`, by one derived from its index too, lest workers
        suggest each other's trials. A grid's trials are all enqueued: no sampler draws them."""
        if grid:
            return optuna.samplers.RandomSampler(sweep_seed)
        sampler_cfg = self.config.hydra.sweeper.sampler
        seed = sweep_seed if sampler_cfg.get("seed") is None else int(sampler_cfg.seed)
        if worker is not None:
            seed = derive_seed(seed, -1 - worker)
        # CMA-ES warns of every param it samples at random, in every trial (`sweep` says it once); GP of every param
        # of a trial it has no model for yet (all of them, with n_startup_trials=0) and of conditional ones
        modelled = ("optuna.samplers.CmaEsSampler", "optuna.samplers.GPSampler")
        quiet = {"warn_independent_sampling": False} if sampler_cfg._target_ in modelled else {}
        return build_sampler(sampler_cfg, seed=derive_seed(seed, n_trials_so_far) if n_trials_so_far else seed, **quiet)

    @staticmethod
    def _suggest(trial: optuna.Trial, space: SearchSpace) -> list[str]:
        """The trial's overrides: the params that its group options have, suggested or fixed."""
        for name in space.ordered():
            if space.applies(name, trial.params):
                suggest(trial, name, space.distributions[name])
        fixed = {name: value for name, value in space.fixed.items() if space.applies(name, trial.params)}
        return [f"{name}={value}" for name, value in {**trial.params, **fixed}.items()]

    @staticmethod
    def _ask(study: optuna.Study, grid: Optional[list[dict[str, Any]]], lane: int = 0) -> Optional[optuna.Trial]:
        """The next trial: a died trial's configuration waiting to run again, the grid's next point that no trial
        holds (worker `lane` takes the lane-th, lest workers that ask at once take the same), or the sampler's;
        None when every point of the grid is finished or running."""
        if grid is not None and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if not (points := unvisited(grid, study)):
                return None
            study.enqueue_trial(points[min(lane, len(points) - 1)])
        return study.ask()

    # --- the loop ----------------------------------------------------------------------------
    def sweep(self, arguments: List[str]) -> None:
        self._refuse_written_password()
        self.storage_url = storage_url(self.storage, self.sweep_dir)
        if self.custom_search_space:
            raise ConfigError(
                "hydra.sweeper.custom_search_space is the Optuna sweeper's, not this one's: put the params in "
                "hydra.sweeper.params (a key that only some options have is swept only where it exists)"
            )
        space = self._search_space(arguments)
        if self.n_trials <= 0:
            raise ConfigError(f"hydra.sweeper.n_trials={self.n_trials} must be at least 1")
        objectives = objective_names(self.config)
        directions = self._directions(objectives)
        sweep_seed = int(space.fixed.pop("seed", self.config.get("seed", 0)))
        first_trials = self._warm_start_params(list(space.distributions))  # a bad warm_start: before any file
        check_enqueued(self.enqueue_trials, space)
        grid = self._grid_order(space, first_trials, sweep_seed)
        plan = SweepPlan(
            space=space, objectives=objectives, directions=directions, sweep_seed=sweep_seed, grid=grid,
            n_trials=self.n_trials if grid is None else min(self.n_trials, len(grid)), deadline=None,
        )  # fmt: skip
        os.environ[STORAGE_ENV] = self.storage_url  # the trials' processes inherit it: never in their overrides
        with driver_lock(self.sweep_dir):  # before the study is touched: one driver per sweep directory
            try:
                self._run(plan, first_trials)
            except optuna.exceptions.StorageInternalError as error:  # Optuna blames "invalid data, e.g. max length"
                raise storage_refused(self.storage_url, error) from None

    def _check_workers(self) -> None:
        """Workers are SLURM jobs (`workers.py`): refuse them, and detach, where they cannot be."""
        if self.workers and "array_parallelism" not in self.config.hydra.launcher:
            raise ConfigError(
                f"hydra.sweeper.workers={self.workers} needs launcher=slurm: workers are SLURM jobs that outlive this "
                f"command; on this machine, run trials in parallel with launcher=joblib launcher.n_jobs={self.workers}"
            )
        if self.workers and self.wait_for_batch:
            raise ConfigError(
                "hydra.sweeper.wait_for_batch=true does not apply to workers, which each ask for their next trial as "
                "they end one: drop one of the two"
            )
        if self.detach and not self.workers:
            raise ConfigError(
                "hydra.sweeper.detach=true needs workers to leave running: add hydra.sweeper.workers=<jobs> "
                "(with launcher=slurm)"
            )

    def _run(self, plan: "SweepPlan", first_trials: list[dict[str, Any]]) -> None:
        """Open or resume the study, then run its trials until it holds `n_trials` finished ones: on each slot
        that frees (`slots.py`), the next trial at once, asked with the trials in flight RUNNING; or, with
        `workers`, hand them to SLURM jobs that ask for themselves (`workers.py`)."""
        grid = plan.grid is not None
        study = self._open_study(plan.directions, self.sampler(plan.sweep_seed, 0, grid))
        if n_so_far := len(study.get_trials(deepcopy=False)):
            study.sampler = self.sampler(plan.sweep_seed, n_so_far, grid)
        study.set_user_attr("objectives", plan.objectives)
        study.set_user_attr(PRUNER_ATTR, self.pruner_cfg)
        study.set_user_attr("sweep_seed", plan.sweep_seed)
        alive = self._live_workers(study)
        self._recover_interrupted(study, retry=not grid)
        if not n_so_far and not grid:
            for params in first_trials:
                study.enqueue_trial(params)
        self._log_study(study, plan)
        if self.workers:
            from lightning_tune.sweeping.workers import attach

            imports_done()  # the driver's start-up is over (see lightning_tune.startup): it watches the workers now
            plan.deadline = self._deadline()
            return attach(self, study, plan, alive)

        if self.slots > 1 and self.assigns_gpus:
            import torch  # only to count GPUs for parallel trials: 1 s of a driver's start

            if (gpus := torch.cuda.device_count()) > 1:
                self.trial_jobs.gpu_seats = GpuSeats(self.sweep_dir, gpus, self.workers_per_gpu, self.slots)
        imports_done()  # the driver's start-up is over (see lightning_tune.startup): it runs trials now
        plan.deadline = self._deadline()
        try:
            failure = self.run_trials(study, plan, Slots(self.slots), self._launch)
        except BaseException:  # Ctrl-C, a launcher's error: the jobs in flight go too; the same command resumes
            if cancel := getattr(self.launcher, "cancel_running", None):
                cancel()
            raise
        if failure:
            raise ConfigError(failure)
        self.finish(study)

    def _deadline(self) -> Optional[float]:
        """When `timeout_s`, counted from the first trial's launch, runs out (time.time()), or None."""
        return None if self.timeout_s is None else time.time() + self.timeout_s

    def _live_workers(self, study: optuna.Study) -> list[str]:
        """The SLURM jobs of this sweep's workers that SLURM still holds; refused without `workers`, since
        this command's own trials would then run beside theirs."""
        from lightning_tune.sweeping.workers import live_workers

        alive = live_workers(study)
        if alive and not self.workers:
            raise ConfigError(
                f"this sweep's workers (SLURM jobs {' '.join(alive)}) are running: add hydra.sweeper.workers=<jobs> "
                f"to re-attach to them, or stop them first (scancel {' '.join(alive)})"
            )
        return alive

    def _log_study(self, study: optuna.Study, plan: "SweepPlan") -> None:
        log.info(
            "Study %r in %s: %s %s, %s, pruner %s, %d of %d trial(s) finished",
            study.study_name, redact(self.storage_url, self.storage_url), plan.directions, plan.objectives,
            f"a grid of {len(plan.grid)} points" if plan.grid else f"sampler {type(study.sampler).__name__}",
            self.pruner_cfg.get("_target_", "").rsplit(".", 1)[-1], count_finished(study), plan.n_trials,
        )  # fmt: skip
        at_random = plan.space.categorical_or_conditional()
        if isinstance(study.sampler, optuna.samplers.CmaEsSampler) and at_random:
            log.info("CMA-ES samples %s independently, at random: it models the interval and range params that "
                     "every trial has", ", ".join(at_random))  # fmt: skip

    def run_trials(
        self,
        study: optuna.Study,
        plan: "SweepPlan",
        slots: Slots[JobReturn],
        launch: Callable[[optuna.Trial, list[str]], JobReturn],
        before_ask: Optional[Callable[[], None]] = None,
        claim: Optional[Callable[[optuna.Trial], bool]] = None,
        lane: int = 0,
        exclusive: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    ) -> str:
        """Run trials on `slots` until the study holds `plan.n_trials` finished ones, counting those that other
        processes (workers) run; each slot that frees gets the next trial at once. A worker looks for trials
        whose worker died `before_ask`, and may give up an asked trial that another worker's ask made one too
        many (`claim` false); it counts and asks `exclusive`ly of the other workers where the storage needs it.
        Returns why the sweep failed (too many failed trials), or "". """
        derive_seeds = "seed" not in plan.space.distributions
        stop, failure = "", ""
        told: Optional[tuple[optuna.Trial, Optional[float]]] = None  # a trial told, not yet logged and written

        def report() -> None:  # the last trial told, logged and in the results files
            nonlocal told
            if told is not None:
                trial, duration = told
                self.log_progress(study, study.get_trials(deepcopy=False)[trial.number], plan.n_trials, duration)
                write_progress(study, self.sweep_dir)
                told = None

        try:
            while True:
                if slots.count == 1:  # the next trial runs in this thread: this one's line comes first
                    report()
                free = [] if self.wait_for_batch and slots.busy else slots.free()  # a batch: once all have ended
                for slot in free:
                    trial: Optional[optuna.Trial] = None
                    if not stop:
                        trial, stop = self._next_trial(study, plan, before_ask, claim, lane, exclusive)
                    if trial is None:
                        break
                    overrides = self._suggest(trial, plan.space)
                    overrides += self._trial_overrides(trial, plan.sweep_seed, derive_seeds)
                    slots.start(slot, trial, functools.partial(launch, trial, overrides))
                report()  # while the slots' trials run: a slot that frees waits only for the tell and the next ask
                if not slots.busy:
                    return failure
                trial, ret = slots.next_done()
                return_freed_memory()
                self.record(study, trial, ret, len(plan.directions))
                told = (trial, job_duration(ret))
                if not failure and (failure := self.too_many_failed(study, plan.n_trials)):
                    stop = failure  # the trials in flight finish first
        finally:  # Ctrl-C, an error: the trial told is in the results files all the same
            report()

    def _next_trial(
        self,
        study: optuna.Study,
        plan: "SweepPlan",
        before_ask: Optional[Callable[[], None]],
        claim: Optional[Callable[[optuna.Trial], bool]],
        lane: int,
        exclusive: Callable[[], ContextManager[Any]],
    ) -> tuple[Optional[optuna.Trial], str]:
        """The next trial asked and claimed (see `run_trials`); or None, with why the sweep stops asking ("" when
        the trials finished and in flight make `n_trials`, or the grid is done)."""
        while True:
            if before_ask is not None:
                before_ask()
            with exclusive():
                if (remaining := unstarted(study.get_trials(deepcopy=False), plan.n_trials)) <= 0:
                    return None, ""
                if plan.deadline is not None and time.time() > plan.deadline:
                    stop = f"hydra.sweeper.timeout_s={self.timeout_s} reached with {remaining} trial(s) to go"
                    log.info("Stopping: %s", stop)
                    return None, stop
                trial = self._ask(study, plan.grid, lane)
            if trial is None or claim is None or claim(trial):
                return trial, ""
            # given up to another worker's: ask again

    def finish(self, study: optuna.Study) -> None:
        """The sweep's results files, from the study as it stands, and its best trial in the log."""
        write_progress(study, self.sweep_dir)
        write_report(study, self.sweep_dir)
        self._log_best(study)

    def _launch(self, trial: optuna.Trial, overrides: Sequence[str]) -> JobReturn:
        """The trial's job, in the directory named by its number. A trial whose overrides do not compose
        (`model.depth=abc`, `optimizer=foo`) fails with Hydra's reason instead of ending the sweep. A trial
        whose directory exists already is not launched: whatever the study says, a run is never written over
        (`guards.py` refuses a sweep whose study has lost its runs; this is the last word)."""
        path = self.sweep_dir / str(trial.number)
        if path.exists():
            return not_run(overrides, RuntimeError(f"not run: {path} already holds another run"))
        try:
            (ret,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
        except BrokenExecutor as error:  # a joblib worker died (kill -9, out of memory): its pool goes with it
            return not_run(overrides, TrialProcessDied(f"its worker process died ({first_line(error)})"))
        except Exception as error:  # noqa: BLE001 - raised before the job ran: it did not compose
            return composition_failure(overrides, error)
        return ret

    def too_many_failed(self, study: optuna.Study, n_trials: int) -> str:
        """Why the sweep stops, when more than `max_failure_rate` of `n_trials` have failed; else "". Judged
        against the whole budget, so that an early failure alone does not end the sweep."""
        if (failed := count_failed(study)) <= self.max_failure_rate * n_trials:
            return ""
        return (
            f"{failed} trials failed, more than hydra.sweeper.max_failure_rate={self.max_failure_rate} "
            f"of n_trials={n_trials}; see {self.sweep_dir / 'trials.csv'}"
        )

    def _trial_overrides(self, trial: optuna.Trial, sweep_seed: int, derive: bool) -> list[str]:
        extra = [f"trial.number={trial.number}", f"trial.study_name='{self.study_name}'"]  # the storage: STORAGE_ENV
        if self.pruner_cfg.get("_target_") == NO_PRUNER:
            extra.append("trial.pruning=false")
        if derive:
            seed = derive_seed(sweep_seed, trial.number)
            trial.set_user_attr("trial_seed", seed)
            extra.append(f"seed={seed}")
        return extra

    def record(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn, n_obj: int) -> None:
        """Tell the study how the trial ended. A trial whose process died is `INTERRUPTED`, as a killed sweep's
        are, and its configuration runs again at once; if that run's process dies too, it fails for good."""
        state, values, reason = trial_outcome(ret, n_obj)
        trial.set_user_attr("duration_s", job_duration(ret))  # its own, timed where it ran; None: unknown
        if ret.hydra_cfg is not None:  # results.run_dir: recorded only where it is not the trial's number's
            ran_in = Path(ret.hydra_cfg.hydra.runtime.output_dir).resolve()
            if ran_in != (self.sweep_dir / str(trial.number)).resolve():
                trial.set_user_attr("run_dir", str(ran_in))
        if isinstance(ret, SlurmJobReturn):
            trial.set_user_attr("job_id", ret.job_id)
            trial.set_user_attr("log", ret.log)
        if ret.status == JobStatus.FAILED and isinstance(failed_job_error(ret), TrialProcessDied):
            interrupt(study, self.storage_url, trial, reason, retry=True)
            return
        if reason:
            trial.set_user_attr("fail_reason", reason)
        study.tell(trial, values=values, state=state)

    def log_progress(self, study: optuna.Study, frozen: FrozenTrial, n_trials: int, duration: Optional[float]) -> None:
        """One line for a finished trial: its values or why it failed, and the study as it stood when it finished
        (trials finished, the best), which a driver watching workers logs some seconds later."""
        shown = ", ".join(f"{v:.4f}" for v in frozen.values) if frozen.values else frozen.user_attrs.get("fail_reason", "")
        ended = frozen.datetime_complete
        finished = study.get_trials(deepcopy=False, states=FINISHED)
        done = [t for t in finished if ended is None or t.datetime_complete <= ended]
        complete = [t for t in done if t.state == TrialState.COMPLETE]
        best = ""
        if complete and len(study.directions) == 1:  # from the trials at hand: study.best_trial queries the database
            pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
            leader = pick(complete, key=lambda t: t.value)
            best = f"; best {leader.value:.4f} (trial {leader.number})"
        took = "" if duration is None else f" in {duration:.1f} s"  # a job SLURM ended took what it took
        log.info(
            "Trial %d (%d of %d finished) %s: %s%s%s",
            frozen.number, sum(not t.user_attrs.get(INTERRUPTED) for t in done), n_trials, frozen.state.name, shown,
            took, best,
        )  # fmt: skip

    @staticmethod
    def _log_best(study: optuna.Study) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            log.warning("No trial completed")
        elif len(study.directions) == 1:
            log.info("Best value %s with %s (trial %d)", study.best_value, study.best_trial.params, study.best_trial.number)
        else:
            log.info("Pareto front: trials %s", [t.number for t in study.best_trials])
