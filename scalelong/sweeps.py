"""The runs of sweeps: which completed, which did not, and their final metrics averaged over seeds.

Every run directory holds ``summary.json`` (final metrics) and ``.hydra/overrides.yaml``. Runs
whose overrides agree except for ``seed`` form one group; each metric is reported as
mean ± standard deviation over the group's seeds (:class:`scalelong.stats.Stat`, the statistics the
reproduction reports use too). Jobs that failed, were interrupted or never ran are listed separately.
``scalelong-aggregate`` prints this table; :mod:`scalelong.reproduction` appends it to its report.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import yaml

from scalelong.atomic import unreadable_reason
from scalelong.config import names_the_run
from scalelong.errors import ScaleLongError
from scalelong.stats import Stat, markdown_table, stat


def find_runs(paths: list[Path]) -> list[Path]:
    """Completed run directories (holding summary.json, and no status.json other than completed)
    at or below ``paths``."""
    runs = {p.parent for root in paths for p in Path(root).rglob("summary.json")}
    return sorted(r for r in runs if (run_status(r) or {}).get("status", "completed") == "completed")


def run_status(run: Path) -> dict | None:
    try:
        return json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return None


def incomplete_jobs(paths: list[Path]) -> list[str]:
    """One line per job at or below ``paths`` that did not complete (failed, interrupted, still
    running or never finished), and per sweep whose ``multirun.yaml`` lists more jobs than ran."""
    lines = []
    for root in paths:
        for hydra_dir in sorted(Path(root).rglob(".hydra")):
            run = hydra_dir.parent
            status = run_status(run)
            if status is None and not (run / "summary.json").is_file():
                lines.append(f"{run}: no result (the job did not finish)")
            elif status is not None and status.get("status") != "completed":
                lines.append(f"{run}: {status.get('status')}: {status.get('error', '')}".rstrip(": "))
        for sweep in sorted(Path(root).rglob("multirun.yaml")):
            expected = sweep_size(sweep)
            ran = sum(1 for d in sweep.parent.iterdir() if (d / ".hydra").is_dir())
            if expected > ran:
                lines.append(f"{sweep.parent}: {expected - ran} of {expected} jobs missing (never started)")
    return lines


def sweep_size(multirun_yaml: Path) -> int:
    """The number of jobs of a sweep, from the overrides stored in its ``multirun.yaml``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = (yaml.safe_load(multirun_yaml.read_text()) or {}).get("hydra", {}).get("overrides", {}).get("task", [])
    size = 1
    for override in OverridesParser.create().parse_overrides(overrides or []):
        if override.is_sweep_override():
            size *= len(list(override.sweep_string_iterator()))
    return size


def group_key(run: Path) -> str:
    """The run's overrides that define what it computes, without its seed."""
    overrides_file = run / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    kept = sorted(o for o in overrides or [] if names_the_run(o) and not o.lstrip("+~").startswith("seed="))
    return " ".join(kept) or "(defaults)"


def aggregate(runs: list[Path], metrics: list[str] | None = None) -> list[dict]:
    """Rows ``{"group", "n", metric: Stat}``, one per group (runs that differ only in their seed), in sorted
    group order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        groups[group_key(run)].append(read_summary(run))
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
    (truncated) or a metric is not a number (NaN is one: not measured)."""
    path = run / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ScaleLongError(f"{path} cannot be read ({unreadable_reason(err)}); rerun the run to rewrite it, or "
                             "move the run out of the directories aggregated") from err
    for key, value in summary.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScaleLongError(f"{path}: {key}={value!r} is not a number; rerun the run to rewrite it, or move "
                                 "the run out of the directories aggregated")
    return summary


def to_markdown(rows: list[dict]) -> str:
    """The rows of :func:`aggregate` as a Markdown table, one column per metric."""
    names = sorted({k for r in rows for k in r if k not in ("group", "n")})
    cells = lambda r: [r[n] if isinstance(r.get(n), Stat) and not r[n].missing else "" for n in names]  # noqa: E731
    return markdown_table(["runs", "seeds", *names], ([r["group"], r["n"], *cells(r)] for r in rows))
