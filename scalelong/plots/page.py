"""The dashboard's run-level numbers and its page: ``summary.csv``, ``oscillation_series.csv``, the PNGs
of :mod:`scalelong.plots.figures` and ``index.html`` (see :mod:`scalelong.dashboard` for the list).
"""

from __future__ import annotations

import csv
import html
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scalelong.atomic import write_atomic
from scalelong.oscillation import range_oscillation
from scalelong.plots.figures import LOGGED_BY, figures
from scalelong.plots.metrics import Run, block_order, load_run, unique_labels

log = logging.getLogger(__name__)


def summary(run: Run, start: int | None = None, stop: int | None = None) -> dict[str, float]:
    """Run-level oscillation over steps [start, stop] (docs/metrics.md) and last values of the run.

    ``feat_level_{rstd,mrc}`` and ``grad_{rstd,mrc}`` average, over decoder levels and over
    blocks, the rstd / mrc of each logged series within the step range.
    """
    def averaged(keys: list[str]) -> dict[str, float]:
        stats = [range_oscillation(list(run.get(k)), list(run.get(k).values()), start, stop) for k in keys]
        return {s: float(np.mean([st[s] for st in stats])) if stats else math.nan for s in ("rstd", "mrc")}

    levels = averaged([f"feat/level_{i}" for i in run.indices(r"feat/level_(\d+)")])
    skips = averaged([f"feat/skip_{i}" for i in run.indices(r"feat/skip_(\d+)")])
    grads = averaged([k for k in run.series if k.startswith("grad/") and k != "grad/total"])
    loss = run.get("train/loss")
    in_range = [v for s, v in loss.items() if (start is None or s >= start) and (stop is None or s <= stop)]
    return {
        "feat_level_rstd": levels["rstd"], "feat_level_mrc": levels["mrc"],
        "feat_skip_rstd": skips["rstd"], "feat_skip_mrc": skips["mrc"],
        "grad_rstd": grads["rstd"], "grad_mrc": grads["mrc"],
        "train_loss_rstd": range_oscillation(list(loss), list(loss.values()), start, stop)["rstd"],
        "train_loss_mean": float(np.mean(in_range)) if in_range else math.nan,
        "loss_spikes": run.last("loss/spikes"),
        "val_loss_last": run.last("val/loss"),
        "robust_ratio_0.01_last": run.last("robust/ratio/delta_0.01"),
        "robust_m0_last": run.last("robust/m0"),
        "last_step": float(max((max(s) for s in run.series.values() if s), default=0)),
    }


def series_oscillation(run: Run, start: int | None = None, stop: int | None = None) -> list[dict[str, object]]:
    """rstd, mrc and n over steps [start, stop] of every ``feat/level_{i}``, ``feat/skip_{i}`` and
    ``grad/{block}`` series of the run, one row per series."""
    keys = [f"feat/level_{i}" for i in run.indices(r"feat/level_(\d+)")]
    keys += [f"feat/skip_{i}" for i in run.indices(r"feat/skip_(\d+)")]
    keys += sorted((k for k in run.series if k.startswith("grad/")), key=lambda k: block_order(k[5:]))
    return [{"run": run.label, "series": k, **range_oscillation(list(run.get(k)), list(run.get(k).values()),
                                                                 start, stop)} for k in keys]


SERIES_FIELDS = ("run", "series", "rstd", "mrc", "n")  # the columns of oscillation_series.csv


def _write_csv(path: Path, rows: Sequence[dict[str, object]], fields: Sequence[str]) -> None:
    """``path`` with the header ``fields`` and ``rows`` (none: the header alone), written atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def write_summary(runs: Sequence[Run], out: Path, start: int | None, stop: int | None) -> list[dict[str, object]]:
    """``summary.csv`` (one row per run) and ``oscillation_series.csv`` (one row per run and series; the header
    alone when no run logged feature or gradient series)."""
    rows = [{"run": run.label, "dir": str(run.path), **summary(run, start, stop)} for run in runs]
    _write_csv(out / "summary.csv", rows, list(rows[0]))
    series = [row for run in runs for row in series_oscillation(run, start, stop)]
    _write_csv(out / "oscillation_series.csv", series, SERIES_FIELDS)
    return rows


def write_html(runs: Sequence[Run], pictures: Sequence[str], rows: Sequence[dict[str, object]], out: Path,
               start: int | None, stop: int | None) -> Path:
    """``index.html``: the summary table and every picture."""
    span = f"steps {start if start is not None else 'first'} to {stop if stop is not None else 'last'}"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0] if k != "dir")
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for k, v in row.items() if k != "dir") + "</tr>"
        for row in rows
    )
    items = "".join(f'<h2>{html.escape(p)}</h2><img src="{html.escape(p)}.png" style="max-width:100%">'
                    for p in pictures)
    absent = [name for name in LOGGED_BY if name not in pictures]
    if absent:
        items += ("<h2>Not logged by these runs</h2><ul>" + "".join(
            f"<li>{html.escape(name)}: logged by {html.escape(LOGGED_BY[name])}</li>" for name in absent)
            + "</ul><p>callbacks=stability enables them all; each logs every <code>every_n_steps</code> steps, so a "
            "run shorter than that logs none.</p>")
    dirs = "".join(f"<li><b>{html.escape(r.label)}</b>: {html.escape(str(r.path))}</li>" for r in runs)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>scalelong stability dashboard</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}</style></head><body>
<h1>Stability dashboard</h1><ul>{dirs}</ul>
<h2>Run-level oscillation ({html.escape(span)}; rstd = std/mean, mrc = mean|Δ|/mean of the logged values)</h2>
<table><tr>{head}</tr>{body}</table>
{items}
<p>Keys and definitions: docs/metrics.md.</p></body></html>
"""
    path = out / "index.html"
    write_atomic(path, page)
    return path


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def build_dashboard(run_dirs: Sequence[str | Path], out: str | Path, start: int | None = None,
                    stop: int | None = None) -> Path:
    """Write the PNGs, ``summary.csv`` and ``index.html`` for ``run_dirs`` into ``out``; the page's path.

    Pictures whose series no run logged (a run without the stability callbacks) are left out, named in one
    log line and on the page with the callback that logs them.
    """
    runs = [load_run(d) for d in run_dirs]
    unique_labels(runs)
    out = Path(out)
    pictures = []
    for name, fig in figures(runs).items():
        png = io.BytesIO()
        fig.savefig(png, dpi=90, format="png")
        write_atomic(out / f"{name}.png", png.getvalue())
        pictures.append(name)
    absent = [name for name in LOGGED_BY if name not in pictures]
    if absent:
        log.info("no data for %s in these runs: %s log it (all of them: callbacks=stability) every "
                 "every_n_steps steps, which these runs did not enable or did not reach; the page shows the rest",
                 ", ".join(absent), ", ".join(dict.fromkeys(LOGGED_BY[name] for name in absent)))
    rows = write_summary(runs, out, start, stop)
    return write_html(runs, pictures, rows, out, start, stop)
