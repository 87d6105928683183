"""Files written whole or not at all: a reader, a crash, a kill or a full disk sees the old version or
the new one, never a part (run records, summaries, metrics.csv)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from scalelong.errors import OutputError


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` through a temporary file in its directory and ``os.replace``: a reader (or a
    crash, a kill, a full disk) sees the old file or the new one, never a part."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(write_error_message(path, err)) from err


def write_error_message(path: Path, err: OSError) -> str:
    what = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or type(err).__name__)
    return (f"cannot write {path}: {what}; the previous version of the file is kept. "
            "Free space or set paths.output_dir to a writable directory with room, then rerun the command")
