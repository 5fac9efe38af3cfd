"""lightning-tune's Hydra plugins: its config groups on every app's search path, and its sweeper.

Hydra imports this module whenever it starts, so it imports nothing heavy; the sweeper's
implementation (optuna, torch) is imported only when a sweep begins.
"""

import sys
from typing import Any, List

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

from lightning_tune.errors import ConfigError
from lightning_tune.schemas import register_schemas


class LightningTuneSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        register_schemas()
        search_path.append(provider="lightning-tune", path="pkg://lightning_tune.conf")


class LightningTuneSweeper(Sweeper):
    """`hydra/sweeper=lightning_tune`: Hydra wants sweepers under hydra_plugins; the work is in
    `lightning_tune.sweeping.sweeper.TuningSweeper`."""

    def __init__(self, **config: Any) -> None:
        from lightning_tune.sweeping.sweeper import TuningSweeper

        self.sweeper = TuningSweeper(**config)

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> None:
        try:
            self.sweeper.sweep(arguments)
        except ConfigError as error:  # a bad search space, storage or budget: one line, no traceback
            sys.exit(f"error: {error}")
