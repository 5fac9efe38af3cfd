"""Which `_target_`s `hydra.utils.instantiate` may build: Hydra 1.4's execution whitelist.

Hydra 1.4 warns on every `_target_` resolved without a whitelist given by trusted code (an error from 1.5),
because a config file can name any callable. Ours are the targets our own configs name; a user's own network,
optimizer or callback is admitted by the user, in their config: `execution_whitelist: [my_models.*]`
(an exact target, or a package prefix ending in `.*`). Every use of Hydra's whitelist API is here.
Light: `train.py` imports it before Hydra starts.
"""

from contextlib import AbstractContextManager, contextmanager
from typing import Any, Iterator, Sequence

from hydra.errors import InstantiationException
from hydra.utils import execution_whitelist

from lightning_tune.errors import ConfigError

# Hydra's own callbacks of train.yaml (`hydra.callbacks`): ValidateConfig
APP_TARGETS = ("lightning_tune.*",)
# what our run configs name: data modules, networks, regularization, optimizers and schedules, Trainer, loggers,
# and Lightning's callbacks (`+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping`)
RUN_TARGETS = ("lightning_tune.*", "torch.optim.*", "pytorch_lightning.*")
USER_KEY = "execution_whitelist"  # conf/train.yaml: the user's own targets


def trusted(patterns: Sequence[str]) -> AbstractContextManager[Any]:
    """Within it, `instantiate` also builds these targets (exact, or a package prefix `pkg.*`)."""
    return execution_whitelist(list(patterns))


@contextmanager
def trusted_run(cfg: Any) -> Iterator[None]:
    """Within it, `instantiate` builds our run targets and those the config's `execution_whitelist` admits."""
    own = cfg.get(USER_KEY) or []
    own = [own] if isinstance(own, str) else list(own)
    try:
        policy = trusted([*RUN_TARGETS, *own])
    except InstantiationException as error:  # Hydra's word on "*" or a pattern without a package: one line
        reason = str(error).splitlines()[0]
        raise ConfigError(f"{USER_KEY}={own}: {reason}; give exact targets or prefixes such as my_models.*") from None
    with policy:
        yield
