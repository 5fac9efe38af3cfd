"""launcher=slurm: the config, the submission check, job failures and requeue, first without a cluster,
then (marked `slurm`) on the real one that ../shared/slurm/start-local-cluster starts, as .ci/run does.

Without a cluster the `slurm` tests are skipped, saying why; with LIGHTNING_TUNE_REQUIRE_SLURM=1
(set by .ci/run) they fail instead, so CI cannot pass without running them.
"""

import csv
import json
import os
import re
import signal
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import pytest
import pytorch_lightning as pl
from conftest import CONF, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobStatus
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf
from optuna.trial import TrialState
from submitit.core.utils import UncompletedJobError
from sweeping import ENV, JOURNAL, ONLY_LR, PRUNING, TINY, command, enqueue, finished, run_sweep

from lightning_tune import requeue
from lightning_tune.errors import ConfigError
from lightning_tune.private_hydra import failed_job_error
from lightning_tune.private_submitit import sbatch_script
from lightning_tune.requeue import cluster_plugins, requeue_on_signal
from lightning_tune.run import train
from lightning_tune.slurm import SlurmJobFailed, check_submission, job_return, make_executor
from lightning_tune.sweeping.sweeper import INTERRUPTED, launcher_parallelism



# --- the config ---------------------------------------------------------------------------------
def hydra_cfg(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF)):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def test_launcher_keys_set_hydra_submitit_launchers_settings():
    cfg = hydra_cfg(
        "launcher=slurm", "launcher.partition=gpu", "launcher.account=ml", "launcher.qos=high",
        "launcher.timeout_min=240", "launcher.gpus_per_task=1", "launcher.cpus_per_task=8", "launcher.mem_gb=32",
        "launcher.array_parallelism=16", "launcher.setup=['module load cuda','source ~/venv/bin/activate']",
        "+launcher.additional_parameters.constraint=a100", "launcher.signal_delay_s=300", "launcher.max_num_timeout=5",
    )  # fmt: skip
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.lightning_tune.LightningTuneSlurmLauncher"
    for key, value in OmegaConf.to_container(cfg.launcher).items():
        assert launcher[key] == value, key
    assert launcher["partition"] == "gpu" and launcher["setup"] == ["module load cuda", "source ~/venv/bin/activate"]
    assert launcher["additional_parameters"] == {"constraint": "a100"}
    # the sbatch script submitit would submit says the same
    launcher.pop("_target_")
    script = sbatch_script(make_executor({**launcher, "submitit_folder": "/tmp/x"}), "true")
    for line in ("--partition=gpu", "--account=ml", "--qos=high", "--time=240", "--gpus-per-task=1",
                 "--cpus-per-task=8", "--mem=32GB", "--constraint=a100", "--signal=USR2@300"):  # fmt: skip
        assert f"#SBATCH {line}" in script
    assert "module load cuda\nsource ~/venv/bin/activate" in script


def test_joblib_and_local_launchers():
    assert hydra_cfg("launcher=joblib", "launcher.n_jobs=3").hydra.launcher.n_jobs == 3
    assert hydra_cfg().hydra.launcher._target_.endswith("BasicLauncher")


@pytest.mark.parametrize(
    "override, message",
    [
        ("launcher.partiton=gpu", "Could not override 'launcher.partiton'"),
        ("launcher.mem_gb=lots", "Error merging override launcher.mem_gb=lots"),
        ("launcher=pbs", "Could not find 'launcher/pbs'"),
    ],
)
def test_a_bad_launcher_setting_fails_at_composition(override, message):
    with pytest.raises(Exception, match=re.escape(message)):
        hydra_cfg("launcher=slurm", override)


def test_trials_run_together_as_the_launcher_runs_them():
    assert launcher_parallelism(OmegaConf.create({"array_parallelism": 8})) == 8
    assert launcher_parallelism(OmegaConf.create({"n_jobs": 3})) == 3
    assert launcher_parallelism(OmegaConf.create({"n_jobs": -1})) == os.cpu_count()
    assert launcher_parallelism(OmegaConf.create({})) == 1


# --- the submission check, with a stand-in sbatch ----------------------------------------------
def slurm_params(**overrides: Any) -> dict[str, Any]:
    cfg = hydra_cfg("launcher=slurm", *(f"launcher.{key}={value}" for key, value in overrides.items()))
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    params.pop("_target_")
    params.update(OmegaConf.to_container(cfg.launcher), submitit_folder="/tmp/unused", name="train")
    return params


def fake_sbatch(directory: Path, stderr: str, returncode: int) -> None:
    sbatch = directory / "sbatch"
    sbatch.write_text(f"#!/bin/sh\necho \"$@\" > {directory}/args\nprintf '{stderr}' >&2\nexit {returncode}\n")
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)


def test_sbatch_refusing_the_job_is_one_line_naming_the_resources(tmp_path, monkeypatch):
    fake_sbatch(tmp_path, "sbatch: error: invalid partition specified: gpu\\nallocation failure: Invalid partition", 1)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(ConfigError) as error:
        check_submission(slurm_params(partition="gpu", cpus_per_task=2))
    message = str(error.value)
    assert "\n" not in message
    assert "launcher.partition=gpu" in message and "launcher.cpus_per_task=2" in message
    assert message.endswith("invalid partition specified: gpu; allocation failure: Invalid partition")
    assert (tmp_path / "args").read_text().startswith("--test-only ")  # checked, never submitted


def test_a_job_sbatch_accepts_passes_the_check(tmp_path, monkeypatch):
    fake_sbatch(tmp_path, "sbatch: Job 3 to start at 2026-11-24T22:44:39", 0)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    check_submission(slurm_params())


def test_no_sbatch_on_path_is_one_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="launcher=slurm needs sbatch on PATH"):
        check_submission(slurm_params())


@pytest.mark.parametrize("export, passed", [("ALL", True), ("ALL,X=1", True), ("PATH,LIGHTNING_TUNE_STORAGE", True),
                                            ("NONE", False), ("PATH,HOME", False)])  # fmt: skip
def test_an_sbatch_export_that_keeps_the_storage_from_the_jobs_is_one_line(tmp_path, monkeypatch, export, passed):
    """The jobs find their study through LIGHTNING_TUNE_STORAGE in their environment."""
    fake_sbatch(tmp_path, "", 0)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    params = slurm_params()
    params["additional_parameters"] = {"export": export}
    if passed:
        check_submission(params)
    else:
        with pytest.raises(ConfigError, match=f"export={export} .*keeps LIGHTNING_TUNE_STORAGE.* from the jobs"):
            check_submission(params)


def test_a_job_slurm_ended_fails_its_trial_with_the_state_and_log():
    class EndedJob:
        job_id, state = "12_1", "CANCELLED by 0"
        paths = SimpleNamespace(stdout=Path("/sweep/.submitit/12_1/12_1_0_log.out"))

        def results(self) -> list:
            raise UncompletedJobError("Job 12_1 (task: 0) has not produced any output (state: CANCELLED by 0)")

    ret = job_return(EndedJob(), ["optimizer.lr=0.1"])
    assert ret.status == JobStatus.FAILED and isinstance(failed_job_error(ret), SlurmJobFailed)
    assert str(failed_job_error(ret)) == "SLURM job 12_1 ended without a result (state CANCELLED by 0)"
    assert (ret.job_id, ret.log, ret.overrides) == ("12_1", "/sweep/.submitit/12_1/12_1_0_log.out", ["optimizer.lr=0.1"])


# --- requeue inside a job, in this process --------------------------------------------------------
class Requeued(Exception):
    """What the stand-in for submitit's handler raises instead of requeueing and exiting."""


class SignalAt(pl.Callback):
    """Sends this process SIGUSR1 after batch `batch` of epoch `epoch`, as `scancel --signal=USR1` would."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, index: int) -> None:
        if (trainer.current_epoch, index) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.fixture
def submitit_job(monkeypatch):
    """This process as if inside a submitit job: submitit's handler on SIGUSR2, recording what it is called with."""
    calls: list[int] = []

    def submitit_handler(signum: int, frame: Any) -> None:
        calls.append(signum)
        raise Requeued

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    yield calls
    signal.signal(signal.SIGUSR2, previous)


def test_a_requeue_signal_checkpoints_at_a_batch_and_the_requeued_run_resumes(make_cfg, submitit_job, tmp_path, caplog):
    resumable = ["+trainer.limit_train_batches=4", "trainer.max_epochs=3", "logger=csv"]
    signalled = make_cfg(*resumable, "+callbacks.signal._target_=test_slurm.SignalAt", "+callbacks.signal.epoch=1",
                         "+callbacks.signal.batch=2", "+execution_whitelist.test=test_slurm.SignalAt")  # fmt: skip
    checkpoint = tmp_path / "checkpoints" / "requeue.ckpt"
    with requeue_on_signal(), pytest.raises(Requeued):
        train(signalled)
    assert submitit_job == [signal.SIGUSR1]  # submitit's handler ran once, after the checkpoint was written
    assert checkpoint.is_file() and not checkpoint.with_suffix(".partial").exists()
    assert signal.getsignal(signal.SIGUSR2) is not requeue._mark  # handlers restored after the job

    with requeue_on_signal(), caplog.at_level("INFO", logger="lightning_tune.requeue"):
        train(make_cfg(*resumable))
    assert f"Resumed from {checkpoint} at epoch 1, step 7" in caplog.text  # 4 + 3 batches: epoch 1, batch 2 done
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 3
    assert not checkpoint.exists()  # the finished trial keeps best.ckpt only
    with open(tmp_path / "csv" / "metrics.csv", newline="") as file:
        steps = [int(row["step"]) for row in csv.DictReader(file) if row["epoch"]]  # not the final/* summary
    # the resumed run logged steps 7 to 12 (3 epochs of 4): it went on, not from step 0, and did not overshoot
    assert (min(steps), max(steps)) == (7, 3 * 4)


def test_outside_a_slurm_trial_a_left_checkpoint_is_not_resumed(make_cfg, tmp_path):
    checkpoint = tmp_path / "checkpoints" / "requeue.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not a checkpoint")
    train(make_cfg())
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 1


def test_lightning_keeps_slurm_ranks_but_does_not_requeue_by_itself(monkeypatch):
    for name in [name for name in os.environ if name.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    assert cluster_plugins(1) == []  # not in a SLURM job
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    for devices in (2, OmegaConf.create([0, 1]), "auto", -1):
        (environment,) = cluster_plugins(devices)
        assert isinstance(environment, SLURMEnvironment) and not environment.auto_requeue


def test_devices_that_do_not_match_the_slurm_tasks_are_one_line_naming_the_fix(monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    with pytest.raises(ConfigError, match=r"^trainer.devices=2 wants 2 processes, but this SLURM job runs 1 task\(s\) "
                                          r"per node: set launcher.tasks_per_node=2 \(one task per device\)$"):  # fmt: skip
        cluster_plugins(2)


# --- on the real cluster ------------------------------------------------------------------------------
def on_slurm(partition: str, *args: str) -> list[str]:
    """One CPU and 1 GB per trial, two trials at once: what the 2-CPU test node fits."""
    return ["launcher=slurm", f"launcher.partition={partition}", "launcher.cpus_per_task=1", "launcher.mem_gb=1",
            "launcher.timeout_min=5", "launcher.array_parallelism=2", *args]  # fmt: skip


def results_files(sweep_dir: Path) -> set[str]:
    return {str(path.relative_to(sweep_dir)) for path in sweep_dir.rglob("*")
            if ".submitit" not in path.parts and path.suffix != ".log"}  # fmt: skip


@pytest.mark.slurm
@pytest.mark.slow
def test_a_tpe_sweep_on_slurm_leaves_what_a_local_one_does_with_the_same_values(partition, tmp_path):
    args = ["hparams_search=tpe", *TINY, "logger=csv", "trainer.precision=bf16-mixed", "hydra.sweeper.n_trials=3"]
    with ThreadPoolExecutor(2) as pool:
        slurm, local = pool.map(lambda run: run_sweep(tmp_path / run[0], *run[1]),
                                [("slurm", on_slurm(partition, *args)), ("local", args)])  # fmt: skip
    slurm.ok(), local.ok()
    assert results_files(slurm.dir) == results_files(local.dir)
    for name in ("trials.csv", "best.yaml", "optimization_results.yaml", "report.md", "optuna.db", "0/metrics.json"):
        assert (slurm.dir / name).is_file(), name
    for on_cluster, here in zip(slurm.trials(), local.trials()):  # same seeds, same trials, same results
        assert on_cluster.state == here.state == TrialState.COMPLETE
        assert on_cluster.params == here.params
        assert on_cluster.value == pytest.approx(here.value, abs=1e-6)
    rows = slurm.rows()
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3
    for row in rows:
        assert re.fullmatch(r"\d+(_\d+)?", row["job_id"]), row
        run = slurm.dir / row["number"]  # its duration: timed in its job, from its config's writing to its metrics'
        own = (run / "metrics.json").stat().st_mtime - (run / ".hydra" / "config.yaml").stat().st_mtime
        assert own - 0.5 < float(row["duration_s"]) < own + 1.0, (row, own)  # Hydra writes its logs between
        job_log = Path(row["log"]).read_text() + Path(row["log"]).with_suffix(".err").read_text()
        assert "Using bfloat16 Automatic Mixed Precision" in job_log  # the precision went with the config
    # each trial its own job, submitted as its slot frees: no trial waits for another's job
    assert len({row["job_id"] for row in rows}) == 3, rows
    assert "SLURM job array" in slurm.output


@pytest.mark.slurm
@pytest.mark.slow
def test_a_trial_failing_inside_its_job_is_failed_not_complete(partition, tmp_path):
    """The job exits 0 and submitit returns; the trial is still a FAIL, with the reason from inside."""
    sweep = run_sweep(
        tmp_path / "sweep",
        *on_slurm(partition, "hparams_search=random", *TINY, "optimizer=sgd", "optimizer.lr=choice(0.01,1e30)",
                  enqueue({"optimizer.lr": "0.01"}, {"optimizer.lr": "1e30"}), "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.max_failure_rate=1.0"),
    ).ok()  # fmt: skip
    good, diverged = sweep.trials()
    assert good.state == TrialState.COMPLETE
    assert diverged.state == TrialState.FAIL and diverged.user_attrs["fail_reason"].startswith("diverged:")
    reason = diverged.user_attrs["fail_reason"].removeprefix("diverged: ")
    assert reason in Path(diverged.user_attrs["log"]).read_text()  # the job's log says why, too


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("storage", [[], [JOURNAL]], ids=["sqlite", "journal"])
def test_pruning_works_across_slurm_jobs(partition, tmp_path, storage):
    sweep = run_sweep(
        tmp_path / "sweep",
        *on_slurm(partition, *PRUNING, "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1", *storage),
    ).ok()
    assert sweep.storage_files() == ({"optuna.journal"} if storage else {"optuna.db"})
    trials = sweep.trials()
    # Two slots, no barrier: trial 2's job starts once a good trial is complete, whichever (see test_workers).
    assert TrialState.COMPLETE in (trials[0].state, trials[1].state)
    assert [trial.state for trial in trials[2:]] == [TrialState.PRUNED] * 2
    assert all(max(trial.intermediate_values) < 2 for trial in trials[2:])  # stopped inside their jobs
    assert len({row["job_id"] for row in sweep.rows()}) == 4


@pytest.mark.slurm
@pytest.mark.slow
def test_cross_validated_trials_run_and_prune_by_fold_in_their_jobs(partition, tmp_path):
    sweep = run_sweep(
        tmp_path / "sweep",
        *on_slurm(partition, "hparams_search=random", *ONLY_LR, *TINY, "cv.folds=3", "hydra.sweeper.n_trials=2",
                  enqueue({"optimizer.lr": "0.003"}, {"optimizer.lr": "1e-06"}), "launcher.array_parallelism=1",
                  "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1"),
    ).ok()  # fmt: skip
    good, bad = sweep.trials()
    assert (good.state, bad.state) == (TrialState.COMPLETE, TrialState.PRUNED)
    assert bad.user_attrs["fail_reason"].startswith("pruned after fold 1 of 3")
    metrics = json.loads((sweep.dir / "0" / "metrics.json").read_text())
    folds = sorted(path.parent.name for path in (sweep.dir / "0").glob("fold_*/metrics.json"))
    assert folds == ["fold_0", "fold_1", "fold_2"]
    assert good.value == pytest.approx(sum(metrics["cv"]["values"]) / 3)
    row = sweep.rows()[0]
    assert re.fullmatch(r"\d+(_\d+)?", row["job_id"]) and float(row["cv_std"]) == pytest.approx(metrics["cv"]["std"])


def wait_for(
    condition: Any, what: str, log: Path, process: Optional[subprocess.Popen] = None, timeout: float = 120
) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert process is None or process.poll() is None, f"the sweep ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.25)
    return value


def job_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True).stdout


LONG_TRIAL = ["hparams_search=random", "trainer=cpu", "logger=csv", "trainer.max_epochs=6",
              "+trainer.limit_train_batches=30", "data.batch_size=16", "hydra.sweeper.n_trials=1"]  # fmt: skip


def one_long_trial(partition: str, sweep_dir: Path, *args: str) -> tuple[subprocess.Popen, Path, str]:
    """Start a one-trial sweep of 6 epochs of 30 batches in the background; once its first epoch is done,
    return the process, its log and the trial's SLURM job id."""
    log = sweep_dir.with_suffix(".log")
    args = on_slurm(partition, *LONG_TRIAL, *args)
    with open(log, "w") as output:
        process = subprocess.Popen(command(sweep_dir, *args), cwd=ROOT, env=ENV, stdout=output, stderr=subprocess.STDOUT)
    try:
        job_id = wait_for(lambda: re.search(r"SLURM job array (\d+)", log.read_text()), "submission", log, process)[1]
        best = sweep_dir / "0" / "checkpoints" / "best.ckpt"  # written after the first epoch
        wait_for(best.is_file, "first epoch", log, process)
    except BaseException:
        process.kill()
        raise
    return process, log, job_id



@pytest.mark.slurm
@pytest.mark.slow
def test_a_trial_whose_job_slurm_cancels_is_interrupted_and_its_configuration_retried(partition, tmp_path):
    sweep_dir = tmp_path / "sweep"
    process, log, job_id = one_long_trial(partition, sweep_dir)
    subprocess.run(["scancel", job_id], check=True)
    sweep = finished(process, log, sweep_dir).ok()
    cancelled, retried = sweep.trials()
    assert cancelled.state == TrialState.FAIL and cancelled.user_attrs[INTERRUPTED]
    assert cancelled.user_attrs["fail_reason"] == (
        f"interrupted: SLURM job {job_id} ended without a result (state CANCELLED by 0); its configuration is retried"
    )
    assert retried.user_attrs["retry_of"] == 0 and retried.params == cancelled.params
    assert retried.state == TrialState.COMPLETE
    rows = sweep.rows()
    assert rows[0]["job_id"] == job_id and rows[1]["job_id"] not in ("", job_id)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("storage", [[], [JOURNAL]], ids=["sqlite", "journal"])
def test_ctrl_c_cancels_the_jobs_and_the_same_command_resumes_the_sweep(partition, tmp_path, storage):
    sweep_dir = tmp_path / "sweep"
    process, log, job_id = one_long_trial(partition, sweep_dir, *storage)
    process.send_signal(signal.SIGINT)
    interrupted = finished(process, log, sweep_dir)
    assert interrupted.result.returncode != 0 and f"cancelled SLURM jobs {job_id}" in interrupted.output
    wait_for(lambda: not job_state(job_id), "cancellation", log, timeout=60)

    resumed = run_sweep(sweep_dir, *on_slurm(partition, *LONG_TRIAL, *storage)).ok()
    assert resumed.storage_files() == ({"optuna.journal"} if storage else {"optuna.db"})
    first, retried = resumed.trials()
    assert first.state == TrialState.FAIL and first.user_attrs["interrupted"]
    assert retried.state == TrialState.COMPLETE and retried.params == first.params  # the same configuration again
    assert [row["state"] for row in resumed.rows()] == ["FAIL", "COMPLETE"]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_preempted_trial_is_requeued_and_resumes_from_its_checkpoint(partition, tmp_path):
    sweep_dir = tmp_path / "sweep"
    process, log, job_id = one_long_trial(partition, sweep_dir)
    try:
        subprocess.run(["scancel", "--signal=USR1", job_id], check=True)
        # SLURM holds a requeued job for CredExpire (120 s) before it may start again: release it in 2 s. Not at
        # once: slurmd kills a job that starts in the second its old credential was revoked ("Job credential
        # revoked"), which failed this test one time in three.
        wait_for(lambda: "BeginTime" in job_state(job_id), "requeue", log, process)
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now+2"], check=True)
    finally:
        sweep = finished(process, log, sweep_dir)
    sweep.ok()
    (trial,) = sweep.trials()  # requeued as the same trial
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["job_id"] == job_id
    run_log = (sweep_dir / "0" / "train.log").read_text()
    saved = re.search(r"Saved \S+requeue.ckpt at epoch (\d+), step (\d+); requeueing", run_log)
    resumed = re.search(r"Resumed from \S+requeue.ckpt at epoch (\d+), step (\d+)", run_log)
    assert saved and resumed, run_log
    assert resumed[2] == saved[2] and int(saved[2]) >= 30  # the same step, after at least one epoch of 30
    assert int(resumed[1]) == int(saved[2]) // 30  # the epoch that step is in (the next, after an epoch's last step)
    assert json.loads((sweep_dir / "0" / "metrics.json").read_text())["epochs"] == 6
    assert not (sweep_dir / "0" / "checkpoints" / "requeue.ckpt").exists()
    assert (sweep_dir / "best.yaml").is_file()


@pytest.mark.slurm
@pytest.mark.parametrize(
    "override, message",
    [
        ("launcher.partition=nope", "launcher.partition=nope, launcher.timeout_min=5, launcher.cpus_per_task=1"),
        ("launcher.cpus_per_task=512", "launcher.cpus_per_task=512"),
    ],
)
def test_what_slurm_refuses_fails_in_one_line_and_writes_nothing(partition, tmp_path, override, message):
    sweep = run_sweep(tmp_path / "sweep", *on_slurm(partition, "hparams_search=random", *TINY), override)
    assert sweep.result.returncode == 1
    (line,) = sweep.result.stderr.strip().splitlines()
    assert line.startswith("error: SLURM refuses a trial's job with") and message in line
    assert not sweep.dir.exists()
