"""Files written whole or not at all: a reader, a crash, a kill or a full disk sees the old version or
the new one, never a part (run records, summaries, metrics.csv)."""

from __future__ import annotations

import errno
import os
import pickle
import zipfile
from pathlib import Path

from scalelong.errors import OutputError

# What reading a damaged cache file raises (a truncated or empty .npz or .pt, another file under its name, a
# missing entry): a reader that can recompute catches these, names the file in one line and recomputes.
UNREADABLE = (OSError, EOFError, KeyError, ValueError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile)


def unreadable_reason(err: BaseException) -> str:
    """``BadZipFile: File is not a zip file``: the error's type and the first line of its message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def write_atomic(path: Path, data: bytes | str, fix: str = "") -> None:
    """Write ``path`` (and its missing parent directories) through a temporary file in its directory and
    ``os.replace``: a reader (or a crash, a kill, a full disk) sees the old file or the new one, never a part.
    A failed write removes the temporary file and raises ``OutputError`` (:func:`write_error_message`, with
    ``fix`` as its fix when given)."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(write_error_message(path, err, fix)) from err


def write_error_message(path: Path, err: OSError, fix: str = "") -> str:
    """``cannot write <path>: the disk is full; ...`` and the fix (by default: free space or move
    ``paths.output_dir``)."""
    what = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or type(err).__name__)
    fix = fix or "Free space or set paths.output_dir to a writable directory with room, then rerun the command"
    return f"cannot write {path}: {what}; the previous version of the file is kept. {fix}"
