"""The checkpoint a run continues from: the newest valid one of the same result-changing settings
(``scalelong.result_keys``), a given path of the same model, or none, the previous attempt archived."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from scalelong.config import with_stored_defaults
from scalelong.errors import ConfigError
from scalelong.lit import CONFIG_KEY, read_checkpoint
from scalelong.result_keys import changes_result, is_under
from scalelong.runs.checkpoints import newest_valid_checkpoint
from scalelong.runs.status import ARCHIVE_DIR, STATUS_FILE, read_status

log = logging.getLogger(__name__)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.depth": 4, ...}`` from a nested dict."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any], within: tuple[str, ...] = ()
                       ) -> list[str]:
    """``key: stored -> current`` for every result-changing field (``scalelong.result_keys``, the
    table that names runs too) on which the two configs differ; with ``within``, only the fields
    under those keys."""
    a, b = flatten(with_stored_defaults(stored)), flatten(current)

    def selected(key: str) -> bool:
        return changes_result(key) and (not within or is_under(key, within))

    names = sorted(k for k in set(a) | set(b) if selected(k) and a.get(k) != b.get(k))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in names]


def refusal(run_dir: Path, verb: str, diffs: list[str]) -> ConfigError:
    """The one-line refusal to continue a run whose stored settings differ from this command's in ``diffs``."""
    keep = ""
    horizon = next((d for d in diffs if d.startswith("optim.decay_steps: ")), None)
    if horizon is not None:  # "optim.decay_steps: 10 -> 20": a longer run under cosine
        stored = horizon.split(": ", 1)[1].split(" -> ")[0]
        keep = (f" (to train it longer on the cosine it ran, whose lr stays at its floor after step {stored}: "
                f"optim.decay_steps={stored} run_name={run_dir.name})")
    return ConfigError(
        f"run {run_dir.name} {verb} with other settings ({'; '.join(diffs)}), so it cannot continue with this "
        f"command; use the stored values{keep}, name a new run with run_name=NAME, or start this one over with "
        "ckpt_path=null")


def archive_run(run_dir: Path) -> Path | None:
    """Move the results of a previous attempt (checkpoints, metrics, samples, summary) to
    ``<run dir>/previous/<time>/``, so that a fresh start neither mixes with nor destroys them."""
    names = ("checkpoints", "csv", "samples", "summary.json", STATUS_FILE)
    present = [run_dir / n for n in names if (run_dir / n).exists()]
    if not present:
        return None
    dest = run_dir / ARCHIVE_DIR / time.strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for path in present:
        shutil.move(str(path), dest / path.name)
    log.warning("ckpt_path=null: moved the previous attempt's results to %s and started over", dest)
    return dest


def resume_checkpoint(ckpt_path: str | None, run_dir: Path, config: dict[str, Any]
                      ) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint to resume from and its contents, or ``(None, None)`` for a fresh start.

    ``auto``: the run's readable checkpoint of the highest step (never a stale ``last.ckpt``; a
    corrupt newest one is skipped with a warning), which must have been trained with the same
    result-changing settings (``scalelong.result_keys.RESULT_KEYS``). A path: that checkpoint, whose
    model and scaler must be this run's. ``null``: start over, moving a previous attempt's results
    to ``previous/``.
    """
    if ckpt_path in (None, "", "null"):
        if rank_zero_only.rank == 0:
            archive_run(run_dir)
        return None, None
    if ckpt_path == "auto":
        found = newest_valid_checkpoint(run_dir)
        if found is None:
            return None, None
        path, stored = found
        diffs = config_differences(stored[CONFIG_KEY], config)
        if diffs:
            raise refusal(run_dir, "was trained", diffs)
        return str(path), stored
    path = Path(ckpt_path)
    stored = read_checkpoint(path)  # one clear error for a missing, corrupt or foreign file
    diffs = config_differences(stored[CONFIG_KEY], config, within=("model", "scaler"))
    if diffs:
        raise ConfigError(f"ckpt_path={path} holds another model ({'; '.join(diffs)}); pass a checkpoint of this "
                          "model, or choose the model and scaler it was trained with")
    return str(path), stored


def completed_step(run_dir: Path, config: dict[str, Any]) -> int | None:
    """The step at which a run without checkpoints completed, from its ``status.json`` (which stores the
    config it was trained with), or None if it did not complete. A run whose checkpoints were removed (a sweep
    committed to git without them, carried over to another machine) thus stays finished; one completed with
    other result-changing settings is refused as a resume would be."""
    status = read_status(run_dir) or {}
    if status.get("status") != "completed" or "config" not in status or "step" not in status:
        return None
    diffs = config_differences(status["config"], config)
    if diffs:
        raise refusal(run_dir, "completed", diffs)
    return int(status["step"])
