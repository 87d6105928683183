"""The runs of sweeps: which completed, which did not, and their final metrics averaged over seeds.

A run counts when its ``status.json`` says completed and it holds ``summary.json`` (final metrics); an attempt
archived under ``previous/`` by ``ckpt_path=null`` does not (:func:`scalelong.runs.status.find_run_dirs`, the
reader the reproduction reports use too). Runs that agree on what names them except ``seed`` form one group:
their ``.hydra/overrides.yaml`` (with the keys a sweep gave several values, :func:`scalelong.config.names_the_run`),
or, for a run without ``.hydra/``, the result-changing values of the config ``status.json`` stores. Each metric
is reported as mean ± standard deviation over the group's seeds (:class:`scalelong.stats.Stat`, the statistics
the reproduction reports use too). Jobs that failed, were interrupted or never ran are listed separately.
``scalelong-aggregate`` prints this table; :mod:`scalelong.reproduction` appends it to its report.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from scalelong.atomic import unreadable_reason
from scalelong.config import names_the_run, override_key, sweep_overrides
from scalelong.errors import ScaleLongError
from scalelong.result_keys import changes_result
from scalelong.runs.resume import flatten
from scalelong.runs.status import find_run_dirs, read_status, run_config
from scalelong.stats import Stat, markdown_table, stat


def find_runs(paths: list[Path]) -> list[Path]:
    """Completed run directories at or below ``paths`` (see :func:`completed_runs`)."""
    return completed_runs(paths)[0]


def completed_runs(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """The run directories at or below ``paths`` whose ``status.json`` says completed and that hold
    ``summary.json``; and ``"<dir> (why)"`` for each directory with results that is not one of them (an attempt
    archived under ``previous/``, a run without ``status.json``). Runs that did not complete are
    :func:`incomplete_jobs`'."""
    runs, skipped = [], []
    for root in paths:
        dirs, archived = find_run_dirs(root)
        skipped += [f"{d} (an earlier attempt archived by ckpt_path=null)" for d in archived
                    if (d / "summary.json").is_file()]
        for run in dirs:
            status = read_status(run)
            if status is None and (run / "summary.json").is_file():
                skipped.append(f"{run} (no status.json)")
            elif status is not None and status.get("status") == "completed":
                if (run / "summary.json").is_file():
                    runs.append(run)
                else:
                    skipped.append(f"{run} (completed without summary.json)")
    return sorted(set(runs)), skipped


def incomplete_jobs(paths: list[Path]) -> list[str]:
    """One line per job at or below ``paths`` that did not complete (failed, interrupted, still
    running or never finished), and per sweep whose ``multirun.yaml`` lists more jobs than ran."""
    lines = []
    for root in paths:
        for run in find_run_dirs(root)[0]:
            status = read_status(run)
            if status is None and not (run / "summary.json").is_file():
                lines.append(f"{run}: no result (the job did not finish)")
            elif status is not None and status.get("status") != "completed":
                lines.append(f"{run}: {status.get('status')}: {status.get('error', '')}".rstrip(": "))
        for sweep in sorted(Path(root).rglob("multirun.yaml")):
            expected = sweep_size(sweep)
            ran = len({d for d in find_run_dirs(sweep.parent)[0] if d.parent == sweep.parent})
            if expected > ran:
                lines.append(f"{sweep.parent}: {expected - ran} of {expected} jobs missing (never started)")
    return lines


def sweep_size(multirun_yaml: Path) -> int:
    """The number of jobs of a sweep, from the overrides stored in its ``multirun.yaml``."""
    size = 1
    for override in sweep_overrides(multirun_yaml):
        if override.is_sweep_override():
            size *= len(list(override.sweep_string_iterator()))
    return size


def group_labels(runs: list[Path]) -> dict[Path, str]:
    """Per run, what it computes apart from its seed: the overrides that name it (with every key the runs give
    several values), or for a run without ``.hydra/`` the result-changing values of its stored config in which
    such runs differ."""
    overrides: dict[Path, list[str] | None] = {}
    for run in runs:
        overrides_file = run / ".hydra" / "overrides.yaml"
        overrides[run] = (yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.is_file() else None
    values = defaultdict(set)
    for run_overrides in overrides.values():
        for o in run_overrides or []:
            values[override_key(o)].add(o.partition("=")[2])
    swept = {key for key, seen in values.items() if len(seen) > 1}
    configs = {run: flatten(OmegaConf.to_container(run_config(run) or OmegaConf.create())) for run in runs
               if overrides[run] is None}
    keys = {k for c in configs.values() for k in c if changes_result(k) and k != "seed"}
    varying = sorted(k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1)
    labels = {}
    for run in runs:
        if overrides[run] is not None:
            kept = sorted(o for o in overrides[run] if names_the_run(o, swept) and override_key(o) != "seed")
        else:
            kept = [f"{k}={configs[run][k]}" for k in varying if k in configs[run]]
        labels[run] = " ".join(kept) or "(defaults)"
    return labels


def aggregate(runs: list[Path], metrics: list[str] | None = None) -> list[dict]:
    """Rows ``{"group", "n", metric: Stat}``, one per group (runs that differ only in their seed), in sorted
    group order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for run, label in group_labels(runs).items():
        groups[label].append(read_summary(run))
    rows = []
    for key in sorted(groups):
        summaries = groups[key]
        names = metrics or sorted({k for s in summaries for k in s if k != "step"})
        row: dict = {"group": key, "n": len(summaries)}
        for name in names:
            values = [float(s[name]) for s in summaries if name in s]
            if values:
                row[name] = stat(values)
        rows.append(row)
    return rows


def read_summary(run: Path) -> dict[str, float]:
    """The run's final metrics; ``ScaleLongError`` naming the file, or the key, when the file is unreadable
    (truncated) or a metric is not a number (NaN is one: not measured; an infinite value is a divergence, which
    the tables count)."""
    path = run / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ScaleLongError(f"{path} cannot be read ({unreadable_reason(err)}); rerun the run to rewrite it, or "
                             "move the run out of the directories aggregated") from err
    for key, value in summary.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ScaleLongError(f"{path}: {key}={value!r} is not a number; rerun the run to rewrite it, or move "
                                 "the run out of the directories aggregated")
    return summary


def to_markdown(rows: list[dict]) -> str:
    """The rows of :func:`aggregate` as a Markdown table, one column per metric."""
    names = sorted({k for r in rows for k in r if k not in ("group", "n")})
    cells = lambda r: [r[n] if isinstance(r.get(n), Stat) and not r[n].missing else "" for n in names]  # noqa: E731
    return markdown_table(["runs", "seeds", *names], ([r["group"], r["n"], *cells(r)] for r in rows))
