"""submitit's private names that lightning-tune uses, all in this module; checked against submitit 1.5.4.

tests/test_private_apis.py fails, naming the name and submitit's version, when one is gone, takes other
arguments, or writes another script than the one submitit submits.

- `AutoExecutor._executor._make_submission_file_text(command, uid)`: the sbatch script of a trial's job, for
  `sbatch --test-only` before the sweep starts (`slurm.check_submission`). submitit's public API writes that
  script only while it submits the job (`Executor.submit`, `map_array`); then an unknown partition or
  impossible resources would fail the sweep's first batch, not the command.
"""

import submitit


def sbatch_script(executor: submitit.AutoExecutor, command: str) -> str:
    """The sbatch script that `executor` submits, running `command`."""
    return executor._executor._make_submission_file_text(command, "check")
