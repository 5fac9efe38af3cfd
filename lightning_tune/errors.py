"""The one exception type for a user's configuration mistake."""


class ConfigError(ValueError):
    """A bad setting: the message names the key and what would be valid, on one line."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the run stops at once, and a sweep records why."""
