"""What an in-process sweep leaves behind from trial to trial: nothing that grows."""

import json
import os

import pytest
from conftest import ROOT
from sweeping import ENV, TINY, run_sweep

TRIALS = 12


@pytest.mark.slow
def test_trials_leave_no_trainer_model_or_writer_behind_and_memory_stays_flat(tmp_path):
    probe_file = tmp_path / "probe.jsonl"
    env = {**ENV, "PYTHONPATH": f"{ROOT / 'tests'}:{os.environ.get('PYTHONPATH', '')}", "PROBE_FILE": str(probe_file)}
    # trials of different sizes, which leave the allocator's heap at its largest unless it is trimmed
    sweep = run_sweep(
        tmp_path / "sweep", "hparams_search=random", "model=resnet", "model.depth=1", "model.width=choice(8,32)",
        "data=synthetic", "data.num_samples=1024", "data.batch_size=choice(16,256)", "optimizer=adam",
        "optimizer.lr=interval(0.001,0.01)", "scheduler=none", "regularization.l2=0", "regularization.dropout=0",
        *TINY, "logger=tensorboard", f"hydra.sweeper.n_trials={TRIALS}", "+callbacks.probe._target_=probes.LeakProbe",
        "+execution_whitelist.probes=probes.*", env=env,
    ).ok()  # fmt: skip
    trials = [json.loads(line) for line in probe_file.read_text().splitlines()]
    assert len(trials) == TRIALS == len(sweep.trials())
    for number, trial in enumerate(trials):  # only the running trial's own objects are alive
        assert (trial["trainers"], trial["modules"], trial["writers"]) == (1, 1, 1), (number, trial)
    growth = trials[-1]["rss_mb"] / trials[1]["rss_mb"] - 1
    assert growth <= 0.10, [round(trial["rss_mb"], 1) for trial in trials]
