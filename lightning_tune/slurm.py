"""SLURM submission: each trial a task of a job array, checked with `sbatch --test-only` before the
sweep writes anything, and each job's end (a Python failure inside it, or SLURM ending it) made
that trial's result, with its job id and log.

Imported while Hydra discovers plugins (for the launcher's config), so submitit is imported lazily.
The side inside each job, requeue on preemption, is `lightning_tune.requeue`.
"""

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from omegaconf import OmegaConf

from lightning_tune.errors import ConfigError, TrialProcessDied
from lightning_tune.sweeping.jobs import DURATION, job_duration

if TYPE_CHECKING:
    import submitit

log = logging.getLogger(__name__)


@dataclass
class TuningSlurmLauncherConf(SlurmQueueConf):
    """hydra-submitit-launcher's SLURM settings; `launcher=slurm` sets them from `launcher.*`."""

    _target_: str = "hydra_plugins.lightning_tune.LightningTuneSlurmLauncher"


def register_launcher_config() -> None:
    store = ConfigStore.instance()
    store.store(
        group="hydra/launcher", name="lightning_tune_slurm", node=TuningSlurmLauncherConf, provider="lightning-tune",
        replace=True,
    )


@dataclass
class SlurmJobReturn(JobReturn):
    """A trial's `JobReturn`, and where to find its SLURM job."""

    job_id: str = ""
    log: str = ""  # the job's stdout; stderr is beside it, ending in .err


class SlurmJobFailed(Exception):
    """The job ended without a result: out of time, or its Python did not start."""


class SlurmJobDied(SlurmJobFailed, TrialProcessDied):
    """SLURM ended the job under its trial: cancelled, out of memory, its node failed or lost, preempted."""


# SLURM's states of a job that ended under its trial (`sacct --helpformat`, "JOB STATE CODES" of sacct(1)):
# a TIMEOUT is the trial's own length, and would come again
DIED = ("CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "DEADLINE")


def make_executor(params: dict[str, Any]) -> "submitit.AutoExecutor":
    """The executor hydra-submitit-launcher builds from `hydra.launcher`: same names, same sbatch script."""
    import submitit

    executor = submitit.AutoExecutor(
        cluster="slurm", folder=params["submitit_folder"], slurm_max_num_timeout=params["max_num_timeout"]
    )
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{
            name if name in generic else f"slurm_{name}": value
            for name, value in params.items()
            if name not in ("submitit_folder", "max_num_timeout")
        }
    )
    return executor


def one_line(text: str) -> str:
    """sbatch's error lines as one: `invalid partition specified: gpu; Invalid partition name specified`."""
    lines = [line.strip().removeprefix("sbatch: error: ").removeprefix("sbatch: ") for line in text.splitlines()]
    return "; ".join(line for line in lines if line) or "no message"


RESOURCES = ("partition", "account", "qos", "timeout_min", "gpus_per_task", "cpus_per_task", "mem_gb", "tasks_per_node")


def check_exported(params: dict[str, Any]) -> None:
    """Trials find their study's storage in the environment (`STORAGE_ENV`), which sbatch passes on unless
    `--export` (or SBATCH_EXPORT) leaves it out: refuse that, rather than fail every trial."""
    from lightning_tune.sweeping.study import STORAGE_ENV

    export = (params.get("additional_parameters") or {}).get("export") or os.environ.get("SBATCH_EXPORT") or "ALL"
    names = [name.split("=", 1)[0].strip() for name in str(export).split(",")]
    if "ALL" not in names and STORAGE_ENV not in names:
        raise ConfigError(
            f"launcher.additional_parameters.export={export} (or SBATCH_EXPORT) keeps {STORAGE_ENV}, which tells each "
            f"trial where its study is, from the jobs: use export=ALL, or name it: export=<yours>,{STORAGE_ENV}"
        )


def check_submission(params: dict[str, Any], job: str = "a trial's job") -> None:
    """`sbatch --test-only` with the trials' script (`job`: what each job is, to the user: a trial's, or a
    worker's): an unknown partition, account or impossible resources fail here, in SLURM's words, before the
    sweep creates its directory or study."""
    if shutil.which("sbatch") is None:
        raise ConfigError("launcher=slurm needs sbatch on PATH: run the sweep where SLURM jobs are submitted")
    from lightning_tune.private_submitit import sbatch_script

    check_exported(params)
    with tempfile.TemporaryDirectory(prefix="lightning-tune-sbatch-") as folder:
        try:
            executor = make_executor({**params, "submitit_folder": folder})
        except (ValueError, TypeError, NameError) as error:  # submitit's checks of names and types
            raise ConfigError(f"launcher: {error}".splitlines()[0]) from None
        script = Path(folder) / "check.sh"
        script.write_text(sbatch_script(executor, "true"))
        result = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        asked = ", ".join(f"launcher.{name}={params[name]}" for name in RESOURCES if params.get(name) is not None)
        raise ConfigError(f"SLURM refuses {job} with {asked}: {one_line(result.stderr)}")


def failure_reason(job: "submitit.Job", error: Exception) -> str:
    """Why a job left no result, with SLURM's state (`CANCELLED by 0`, `TIMEOUT`, `OUT_OF_MEMORY`)."""
    from submitit.core.utils import FailedJobError

    if isinstance(error, FailedJobError):  # Python failed outside our task: its last traceback line says why
        lines = [line for line in str(error).splitlines() if line.strip() and not line.startswith(("-", " "))]
        return f"SLURM job {job.job_id} failed: {lines[-1] if lines else type(error).__name__}"
    return f"SLURM job {job.job_id} ended without a result (state {job.state})"


def job_return(job: "submitit.Job", overrides: Sequence[str]) -> SlurmJobReturn:
    """The trial's return from its job; a job that SLURM ended fails this trial, not the sweep."""
    from submitit.core.utils import FailedJobError

    try:
        ret: JobReturn = job.results()[0]
    except Exception as error:  # noqa: BLE001 - submitit's errors for a job without a result
        ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
        reason = failure_reason(job, error)
        died = not isinstance(error, FailedJobError) and str(job.state).startswith(DIED)
        ret.return_value = (SlurmJobDied if died else SlurmJobFailed)(reason)
    copied = {field.name: getattr(ret, field.name) for field in fields(JobReturn)}
    slurm_ret = SlurmJobReturn(**copied, job_id=str(job.job_id), log=str(job.paths.stdout))
    setattr(slurm_ret, DURATION, job_duration(ret))  # timed inside the job
    return slurm_ret


def launch_array(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, sweep_dir: Path
) -> list[SlurmJobReturn]:
    """hydra-submitit-launcher's `launch`, except that each job's end is its own trial's result. The jobs are
    in `launcher.running_jobs` until they end, for `cancel_jobs` (the sweeper's slots launch from threads,
    so a Ctrl-C reaches the main thread, not the one that waits here)."""
    executor = make_executor(launcher.params)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    arguments = []
    for number, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        arguments.append((list(overrides), "hydra.sweep.dir", number, f"job_id_for_{number}", Singleton.get_state()))
    jobs = submit_array(executor, launcher, *zip(*arguments))
    log.info("SLURM job array %s: logs in %s", jobs[0].job_id.split("_")[0], Path(jobs[0].paths.stdout).parent.parent)
    launcher.running_jobs.update(jobs)
    try:
        return [job_return(job, overrides) for job, overrides in zip(jobs, job_overrides)]
    finally:
        launcher.running_jobs.difference_update(jobs)


def submit_array(executor: "submitit.AutoExecutor", function: Any, *arguments: Iterable[Any]) -> list["submitit.Job"]:
    """`executor.map_array(function, *arguments)`: one job array; ConfigError with sbatch's words, on one line,
    when it refuses the array."""
    from submitit.core.utils import FailedJobError

    try:
        return executor.map_array(function, *arguments)
    except (subprocess.CalledProcessError, FailedJobError) as error:
        output = getattr(error, "stderr", None) or getattr(error, "output", None) or str(error)
        output = output.decode() if isinstance(output, bytes) else output
        raise ConfigError(f"launcher=slurm: sbatch failed: {one_line(output)}") from None


def cancel_jobs(jobs: "set[submitit.Job]") -> None:
    """Cancel the sweep's jobs in flight (on Ctrl-C, or an error that ends the sweep): the same command resumes."""
    if jobs:
        for job in jobs:
            job.cancel(check=False)
        log.warning("Interrupted: cancelled SLURM jobs %s", " ".join(sorted(job.job_id for job in jobs)))


def queued_jobs() -> Optional[dict[str, Optional[float]]]:
    """This user's jobs that SLURM holds (pending, a requeued one too, running or ending), each task of an
    array as `<array>_<task>`: for each, the seconds since its current run started, or None while it waits;
    None when squeue cannot say (the controller down), where nothing may be taken for dead."""
    try:
        result = subprocess.run(
            ["squeue", "--noheader", "--array", f"--user={os.getuid()}", "--format=%i %T %S"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    jobs: dict[str, Optional[float]] = {}
    for line in result.stdout.splitlines():
        job, state, started = (line.split() + ["", ""])[:3]
        try:  # squeue's %S: the start, in the controller's local time (a waiting job's is an estimate, or N/A)
            running_s = (datetime.now() - datetime.fromisoformat(started)).total_seconds()
        except ValueError:
            running_s = None
        jobs[job] = running_s if state == "RUNNING" else None
    return jobs


def ended_state(job_id: str) -> str:
    """How SLURM ended a job that has left its queue (`CANCELLED by 1000`, `OUT_OF_MEMORY`, `NODE_FAIL`), from
    its accounting; "state unknown" without accounting."""
    try:
        result = subprocess.run(
            ["sacct", "--noheader", "--allocations", "--parsable2", "--format=State", f"--jobs={job_id}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "state unknown"
    states = result.stdout.split("\n") if result.returncode == 0 else []
    return f"state {states[0].strip()}" if states and states[0].strip() else "state unknown"


def job_of_process(pid: int) -> Optional[str]:
    """The SLURM job a process of this machine runs in, as submitit names it (`<array>_<task>` for a task of
    an array); None for a process outside SLURM, or one whose environment cannot be read (another user's)."""
    try:
        environment = dict(
            item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item
        )
    except OSError:
        return None
    array, task = environment.get(b"SLURM_ARRAY_JOB_ID"), environment.get(b"SLURM_ARRAY_TASK_ID")
    job = f"{array.decode()}_{task.decode()}" if array and task else environment.get(b"SLURM_JOB_ID", b"").decode()
    return job or None


def cancel_job(job_id: str) -> None:
    """scancel one job, whatever its state; one that has ended already is no error."""
    subprocess.run(["scancel", job_id], capture_output=True, timeout=60, check=False)
