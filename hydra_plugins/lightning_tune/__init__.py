"""lightning-tune's Hydra plugins: its config groups on every app's search path, its sweeper and its
SLURM and joblib launchers.

Hydra imports this module whenever it starts, so it imports nothing heavy; the implementations
(optuna, torch, submitit) are imported only when a sweep or a job begins.
"""

import gc
import logging
import sys
from pathlib import Path
from typing import Any, List, Sequence

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.utils import JobReturn
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.plugins.sweeper import Sweeper
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig, OmegaConf

from lightning_tune.console import accept_interrupts, quiet_sweep, register_help_resolver
from lightning_tune.errors import ConfigError
from lightning_tune.schemas import register_schemas


class LightningTuneSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        register_schemas()
        register_help_resolver()  # train.yaml's `hydra.help.template` lists the groups through it
        search_path.append(provider="lightning-tune", path="pkg://lightning_tune.conf")


class LightningTuneSweeper(Sweeper):
    """`hydra/sweeper=lightning_tune`: Hydra wants sweepers under hydra_plugins; the work is in
    `lightning_tune.sweeping.sweeper.TuningSweeper`."""

    def __init__(self, **config: Any) -> None:
        from lightning_tune.sweeping.sweeper import TuningSweeper

        accept_interrupts()  # held by train.py's start-up, as Hydra starts and torch and Optuna are imported

        quiet_sweep()  # the sweeper logs the study itself
        self.sweeper = TuningSweeper(**config)

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        try:
            self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        except ConfigError as error:  # settings that do not go together: one line, before anything is written
            sys.exit(f"error: {error}")

    def sweep(self, arguments: List[str]) -> None:
        try:
            self.sweeper.sweep(arguments)
        except ConfigError as error:  # a bad search space, storage or budget: one line, no traceback
            sys.exit(f"error: {error}")


class LightningTuneJoblibLauncher(JoblibLauncher):
    """`launcher=joblib`: hydra-joblib-launcher's, sending Hydra's global state to the worker processes as
    bytes pickled once per sweep, not deep-copied and pickled again for every trial (`private_hydra.py`), and
    without its three lines a trial ("Joblib.Parallel(...) is launching 1 jobs", the overrides): the sweeper
    logs each trial."""

    state: Any = None  # the driver's, which holds still while the sweep runs: taken at the first launch

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        logging.getLogger("hydra_plugins.hydra_joblib_launcher").setLevel(logging.WARNING)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.singleton import Singleton

        from lightning_tune.private_hydra import PickledState, joblib_state_once

        if self.state is None:
            self.state = PickledState(Singleton.get_state())
        with joblib_state_once(self.state):
            return super().launch(job_overrides, initial_job_idx)


class LightningTuneSlurmLauncher(SlurmLauncher):
    """`launcher=slurm`: hydra-submitit-launcher's SLURM launcher, with its resources checked before the
    sweep starts, each job's failure its own trial's, and requeue that resumes from a checkpoint
    (`lightning_tune.slurm` and `lightning_tune.requeue`)."""

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from lightning_tune.slurm import check_submission

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.running_jobs: set = set()  # submitit.Job of the trials in flight
        try:
            workers = OmegaConf.select(config, "hydra.sweeper.workers", default=0)
            check_submission(self.params, "a worker's job" if workers else "a trial's job")
        except ConfigError as error:  # before the sweeper has written anything
            sys.exit(f"error: {error}")

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lightning_tune.slurm import launch_array

        assert self.config is not None
        try:
            return launch_array(self, job_overrides, initial_job_idx, Path(str(self.config.hydra.sweep.dir)))
        except ConfigError as error:  # sbatch refused the array
            sys.exit(f"error: {error}")

    def cancel_running(self) -> None:
        """Cancel the jobs of the trials in flight: the sweeper calls it when it stops early (Ctrl-C)."""
        from lightning_tune.slurm import cancel_jobs

        cancel_jobs(self.running_jobs)

    def __call__(self, *args: Any) -> JobReturn:  # in the SLURM job, and again in each requeued run
        from lightning_tune.requeue import requeue_on_signal

        try:
            with requeue_on_signal():
                return super().__call__(*args)
        finally:
            # The job's process ends after this call: spare its exit the 1 s walk over torch's objects.
            gc.freeze()
