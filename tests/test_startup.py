"""The garbage collector while a process starts (`lightning_tune.startup`): no full collection over the imports,
which are then set aside from its walks; and the collector back on for every trial."""

import json
import os
import subprocess
import sys

from conftest import FAST, ROOT
from sweeping import ENV, ONLY_LR, TINY, run_sweep

PROBE = ["+callbacks.gc_probe._target_=probes.GcProbe", "+execution_whitelist.probes=probes.*"]
TORCH_AND_LIGHTNING = 100_000  # objects that importing them leaves alive, at least


def probe_env(tmp_path) -> dict[str, str]:
    return {**ENV, "PYTHONPATH": f"{ROOT / 'tests'}:{os.environ.get('PYTHONPATH', '')}",
            "PROBE_FILE": str(tmp_path / "probe.jsonl")}  # fmt: skip


def probed(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "probe.jsonl").read_text().splitlines()]


def test_a_run_starts_without_a_full_collection_and_trains_with_the_collector_on(tmp_path):
    command = [sys.executable, "train.py", *FAST, *PROBE, f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, cwd=ROOT, env=probe_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (seen,) = probed(tmp_path)
    assert seen["full"] == 0, seen  # each would walk every object imported so far (9 of them, 0.8 s, before)
    assert seen["enabled"] and seen["frozen"] > TORCH_AND_LIGHTNING, seen


def test_every_trial_of_an_in_process_sweep_trains_with_the_collector_on(tmp_path):
    sweep = run_sweep(tmp_path / "sweep", "hparams_search=random", *ONLY_LR, *TINY, "hydra.sweeper.n_trials=3", *PROBE,
                      env=probe_env(tmp_path))  # fmt: skip
    sweep.ok()
    trials = probed(tmp_path)
    assert len(trials) == 3
    assert all(seen["enabled"] and seen["frozen"] > TORCH_AND_LIGHTNING for seen in trials), trials
    assert trials[0]["full"] == 0, trials[0]


def test_the_driver_of_a_joblib_sweep_collects_garbage_again_once_its_trials_start(tmp_path):
    """Its trials run elsewhere, so no trial's import ends train.py's hold there: the sweep's loop does."""
    at_exit = tmp_path / "gc_at_exit.jsonl"
    env = {**ENV, "PYTHONPATH": f"{ROOT / 'tests' / 'gc_at_exit'}:{os.environ.get('PYTHONPATH', '')}",
           "GC_AT_EXIT_FILE": str(at_exit)}  # fmt: skip
    arguments = ["hparams_search=random", *ONLY_LR, *TINY, "hydra.sweeper.n_trials=2", "launcher=joblib",
                 "launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    driver = subprocess.Popen([sys.executable, "train.py", "-m", *arguments], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr[-3000:]
    exits = [json.loads(line) for line in at_exit.read_text().splitlines()]
    assert {"pid": driver.pid, "enabled": True} in exits, exits
