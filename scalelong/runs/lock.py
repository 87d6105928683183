"""The lock that gives a run directory to one ``scalelong-train`` at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from scalelong.errors import ConfigError

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive ``fcntl.flock`` on ``<run dir>/.lock`` for the life of a run; a second process
    on the same run directory gets a ConfigError instead of sharing its files. The kernel releases
    the lock when the process dies, so a killed run never leaves a stale lock."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"run directory {self.path.parent} is in use by another scalelong-train (pid {owner}); "
                "wait for it to finish, or give this run another name with run_name=NAME") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
