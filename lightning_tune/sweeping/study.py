"""What the sweeper and its trials share about the study: its storage, the pruner's record, seeds.

Free of torch and Lightning, so that the sweep's own process starts, and rejects a bad input, quickly.
"""

import functools

import optuna

PRUNER_ATTR = "pruner"  # study user attr: the pruner's config, so every trial process builds the same one


def derive_seed(sweep_seed: int, trial_number: int) -> int:
    """A different, reproducible seed per trial: the same sweep seed gives the same trial seeds."""
    return (sweep_seed * 1_000_003 + trial_number * 7_919) % 2**31


@functools.lru_cache(maxsize=None)
def open_storage(url: str) -> optuna.storages.BaseStorage:
    """RDB storage that waits for a lock instead of failing when parallel trials write at once.

    One per URL and process: trials in the sweep's own process share it, rather than each building
    an engine and checking the schema again."""
    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)
