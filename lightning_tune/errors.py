"""Why a run or a trial ended: a user's configuration mistake, a diverged loss, a dead process."""


class ConfigError(ValueError):
    """A bad setting: the message names the key and what would be valid, on one line."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the run stops at once, and a sweep records why."""


class TrialProcessDied(RuntimeError):
    """The process that ran a trial died under it (killed, out of memory, its node lost), through no fault of
    the trial's configuration: a sweep runs that configuration again, once."""
