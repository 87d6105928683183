"""A run's checkpoint files: written through a temporary file and renamed into place (a kill or a full
disk leaves the previous checkpoint), read with ``weights_only=True`` (``scalelong.lit.read_checkpoint``),
and listed newest first, skipping unreadable ones."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from scalelong.atomic import write_error_message
from scalelong.errors import CheckpointError, OutputError
from scalelong.lit import read_checkpoint

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, writing through a temporary file in the checkpoint's own
    directory (atomic rename, no copy across filesystems) and reading with ``weights_only=True``.

    While ``hold`` is set, a written checkpoint stays a temporary file until ``publish``: ``RunFiles``
    holds a checkpoint that counts a metrics row Lightning has not logged yet, so that a kill before
    the row is on disk leaves the previous checkpoint in place rather than one that skips the row.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self._held: dict[Path, Path] = {}  # checkpoint path -> its written temporary file

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
                        ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            if self.hold:
                self._held[path] = tmp
            else:
                os.replace(tmp, path)
        except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
            tmp.unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise OutputError(write_error_message(path, err)) from err
            raise OutputError(f"cannot write {path} ({err}); the previous checkpoint is kept. Free space or "
                              "set paths.output_dir to a writable directory with room, then rerun") from err

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def publish(self) -> None:
        """Rename the held checkpoints into place, in the order they were written."""
        while self._held:
            path = next(iter(self._held))
            os.replace(self._held.pop(path), path)

    def discard(self) -> None:
        """Delete the held checkpoints (the run goes on from, or resumes at, the previous ones)."""
        for tmp in self._held.values():
            tmp.unlink(missing_ok=True)
        self._held.clear()

    def remove_checkpoint(self, path: str | Path) -> None:
        held = self._held.pop(Path(path), None)
        if held is not None:
            held.unlink(missing_ok=True)
        super().remove_checkpoint(path)

    def load_checkpoint(self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        return read_checkpoint(path, map_location or "cpu")


def checkpoint_step(path: Path) -> int:
    """The global step stored in a checkpoint (memory-mapped, so only the small fields are read)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt["global_step"])


def checkpoints_newest_first(run_dir: Path) -> list[tuple[Path, int]]:
    """``(path, step)`` of the run's readable checkpoints, highest step first (``last.ckpt`` before
    an interval checkpoint of the same step); unreadable files are skipped with a warning."""
    found = []
    for path in (Path(run_dir) / "checkpoints").glob("*.ckpt"):
        try:
            found.append((path, checkpoint_step(path)))
        except Exception as err:  # truncated, foreign or empty files
            log.warning("skipping %s: it cannot be read (%s: %s), so an older checkpoint is used; the file is kept "
                        "for inspection", path, type(err).__name__, str(err).splitlines()[0] if str(err) else "")
    found.sort(key=lambda item: (item[1], item[0].name.startswith("last")), reverse=True)
    return found


def newest_valid_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The readable checkpoint of the run with the highest step, and its contents; unreadable newer
    ones are skipped with a warning (and kept for inspection)."""
    for path, _ in checkpoints_newest_first(run_dir):
        try:
            return path, read_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping %s: %s", path, err)
    return None
