"""Makes lightning-tune's config groups composable from any Hydra app that has it installed."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from lightning_tune.schemas import register_schemas


class LightningTuneSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        register_schemas()
        search_path.append(provider="lightning-tune", path="pkg://lightning_tune.conf")
