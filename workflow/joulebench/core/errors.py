"""Errors joulebench raises on purpose; each message says what was wrong and what is allowed."""


class JoulebenchError(Exception):
    """Base class for errors that should reach the user as a one-line explanation."""


class ConfigError(JoulebenchError):
    """A configuration key holds a value that is not allowed."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"config key '{key}': {message}")


class UnsupportedError(ConfigError):
    """A variant cannot run on this engine, device, GPU or CPU (the message says why).

    Raised before any job when the config says enough, and again when a job starts; under
    ``skip_unsupported`` a job turns it into an ``infeasible`` record instead of failing.
    """


class ModelSourceError(JoulebenchError):
    """A model could not be prepared from its source (hub offline, missing directory, ...)."""


class MeterError(JoulebenchError):
    """An energy meter could not be used (missing hardware, permissions, ...)."""
