"""Errors a user can cause. Each carries one message that names the bad value and the fix.

The command-line entry points catch these and print the message alone, without a traceback
(:func:`exit_on_user_error`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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


def exit_on_user_error(prog: str, body: Callable[..., T], *args: object) -> T:
    """``body(*args)``; a :class:`ScaleLongError` ends the command with the one line ``<prog>: <message>``."""
    try:
        return body(*args)
    except ScaleLongError as err:
        sys.exit(f"{prog}: {err}")
