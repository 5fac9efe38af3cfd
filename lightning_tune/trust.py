"""Which `_target_`s `hydra.utils.instantiate` may build: Hydra 1.4's execution whitelist.

Hydra 1.4 warns on every `_target_` resolved without a whitelist given by trusted code (an error from 1.5),
because a config file can name any callable. Ours are the targets our own configs name; a user's own network,
optimizer or callback is admitted by the user, in their config: `execution_whitelist: {my_models: my_models.*}`
(an exact target, or a package prefix ending in `.*`, each under a name, so that every config file adds its
own). Every use of Hydra's whitelist API is here.
Light: `train.py` imports it before Hydra starts.
"""

import re
from collections.abc import Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Iterator, Optional, Sequence

from hydra.errors import InstantiationException
from hydra.utils import execution_whitelist

from lightning_tune.errors import ConfigError

# Hydra's own callbacks of train.yaml (`hydra.callbacks`): ValidateConfig
APP_TARGETS = ("lightning_tune.*",)
# what our run configs name: data modules, networks, regularization, optimizers and schedules, Trainer, loggers,
# and Lightning's callbacks (`+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping`)
RUN_TARGETS = ("lightning_tune.*", "torch.optim.*", "pytorch_lightning.*")
USER_KEY = "execution_whitelist"  # conf/train.yaml: the user's own targets
UNTRUSTED = re.compile(r"Target '(?P<target>[^']+)' is not in the Hydra execution whitelist")  # Hydra's refusal


def trusted(patterns: Sequence[str]) -> AbstractContextManager[Any]:
    """Within it, `instantiate` also builds these targets (exact, or a package prefix `pkg.*`)."""
    return execution_whitelist(list(patterns))


@contextmanager
def trusted_run(cfg: Any) -> Iterator[None]:
    """Within it, `instantiate` builds our run targets and those the config's `execution_whitelist` admits."""
    own = cfg.get(USER_KEY) or {}
    if not isinstance(own, Mapping):
        raise ConfigError(f"{USER_KEY}={own!r} must map names to targets: {{my_models: my_models.*}}")
    own = {str(name): pattern for name, pattern in own.items()}
    try:
        policy = trusted([*RUN_TARGETS, *own.values()])
    except InstantiationException as error:  # Hydra's word on "*" or a pattern without a package: one line
        reason = " ".join(str(error).split()).split(" To preserve legacy")[0]  # a Python-only way out: not for a config
        raise ConfigError(f"{USER_KEY}={own}: {reason}") from None
    with policy:
        yield


def untrusted_target(error: BaseException) -> Optional[str]:
    """The `_target_` that Hydra refused to build because no whitelist admits it, or None."""
    match = UNTRUSTED.search(str(error))
    return match["target"] if match else None


def untrusted_line(key: str, target: str) -> str:
    """What the user does about a refused target of config node `key`."""
    package = target.rsplit(".", 1)[0]
    name = package.split(".", 1)[0]
    return (f"{key}._target_={target} is not trusted: add it to {USER_KEY} in your config, or on the command "
            f"line: +{USER_KEY}.{name}={package}.*")  # fmt: skip
