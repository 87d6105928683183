"""``status.json``: whether a run's last attempt is running, completed, interrupted or failed (and why); and the
one reader of run directories that the aggregate and the reproduction reports share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scalelong.atomic import write_atomic

STATUS_FILE = "status.json"
ARCHIVE_DIR = "previous"  # <run dir>/previous/<time>/: an earlier attempt that ckpt_path=null set aside


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


def find_run_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """The run directories at or below ``root`` (each holding ``status.json``, ``.hydra/`` or ``summary.json``),
    and apart from them the attempts archived under ``previous/``, which are not runs."""
    root = Path(root)
    found = sorted({p.parent for name in (STATUS_FILE, "summary.json", ".hydra") for p in root.rglob(name)})
    archived = [d for d in found if ARCHIVE_DIR in d.relative_to(root).parts]
    return [d for d in found if d not in archived], archived


def run_config(run_dir: Path) -> DictConfig | None:
    """The run's config: ``.hydra/config.yaml`` as composed, else the resolved one ``status.json`` stores (a run
    copied without ``.hydra/``), else None."""
    composed = Path(run_dir) / ".hydra" / "config.yaml"
    if composed.is_file():
        return OmegaConf.load(composed)
    stored = (read_status(run_dir) or {}).get("config")
    return OmegaConf.create(stored) if isinstance(stored, dict) else None
