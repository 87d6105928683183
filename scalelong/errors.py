"""Errors a user can cause. Each carries one message that names the bad value and the fix.

The command-line entry points catch these and print the message alone, without a traceback.
"""


class ScaleLongError(Exception):
    """Base class for errors caused by user input (config, data, checkpoint)."""


class ConfigError(ScaleLongError, ValueError):
    """An invalid configuration value."""


class DataError(ScaleLongError, RuntimeError):
    """A dataset that is missing or unreadable."""


class CheckpointError(ScaleLongError, RuntimeError):
    """A checkpoint that is missing, corrupt or from an incompatible model."""


class OutputError(ScaleLongError, OSError):
    """A result that cannot be written (full disk, unwritable directory); the previous file is kept."""
