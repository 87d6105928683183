"""The run directory's lock: one scalelong-train per run directory."""

from __future__ import annotations

import os

import pytest

from scalelong.errors import ConfigError
from scalelong.runs.lock import RunLock


def test_a_second_process_on_the_same_run_directory_gets_a_clear_error(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(ConfigError, match=f"run directory {tmp_path} is in use by another scalelong-train "
                                              f"\\(pid {os.getpid()}\\)"):
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):  # released when the first run ends
        pass
