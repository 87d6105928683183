"""``status.json``: whether a run's last attempt is running, completed, interrupted or failed (and why)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scalelong.atomic import write_atomic

STATUS_FILE = "status.json"


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``status.json``, or None when it is missing or unreadable."""
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_status(run_dir: Path, status: str, **fields: Any) -> None:
    """``status.json``: ``running``, ``completed``, ``interrupted`` or ``failed`` (with ``error``), and fields."""
    write_atomic(Path(run_dir) / STATUS_FILE, json.dumps({"status": status, **fields}, indent=2))


def holds_an_attempt(run_dir: Path) -> bool:
    """Whether a run directory holds an earlier attempt (its status, checkpoints or results), which a refused
    command must leave as it is."""
    return any((Path(run_dir) / name).exists() for name in (STATUS_FILE, "checkpoints", "summary.json"))
