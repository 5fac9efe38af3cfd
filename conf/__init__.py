"""lightning-tune's config groups, `pkg://lightning_tune.conf` on a Hydra search path.

Importing it registers the typed schemas the YAML files extend, so that a Hydra app which names
this package in `hydra.searchpath` composes them even without the search-path plugin.
"""

from lightning_tune.schemas import register_schemas

register_schemas()
