"""``scalelong-dashboard``: plots and one HTML page comparing runs' stability measurements.

    scalelong-dashboard RUN_DIR [RUN_DIR ...] [--out DIR] [--start STEP] [--stop STEP]
    scalelong-dashboard --wandb ENTITY/PROJECT [--num-skips N]   # a saved wandb workspace

Reads each run's ``csv/metrics.csv`` (keys of docs/metrics.md, written by the stability
callbacks), ``noise_ratio/histogram.npz`` and ``.hydra/config.yaml`` (the run's label: its scaler
and float options, e.g. ``cs(kappa=0.5)``), and writes into ``--out`` (default
``dashboard/``):

* ``feature_energy.png`` — F of each decoder level h_i vs step, one panel per skip i (Thm 3.1).
* ``skip_energy.png`` — F of each skip tensor s_i before scaling vs step.
* ``oscillation_heatmap.png`` — ``osc/feat/level_{i}/mrc``, skip i × step, one panel per run,
  one colour scale (paper Fig. 1 as a map).
* ``grad_norms.png`` — gradient norm per block vs step (Thm 3.3).
* ``kappa.png`` — last κ_i vs i per run, with the CS curves κ^(i−1) at the ends of the Sec. 4.1
  range (shaded, as in Fig. 7) and the LS fit a·κ^(i−1).
* ``noise_ratio.png`` — histogram of r_t (Fig. 3b).
* ``robustness.png`` — ‖net(x_t + δ) − net(x_t)‖/‖δ‖ and M0 vs step (Thm 3.4).
* ``loss.png`` — val/loss and the loss by timestep quartile vs step.
* ``summary.csv`` and ``index.html`` — the run-level oscillation figures over the steps
  ``--start`` … ``--stop`` (:func:`scalelong.oscillation.range_oscillation`) and the pictures;
  ``oscillation_series.csv`` — the same figures per feature and gradient series.

Runs share every axis, so their curves compare directly. Matplotlib runs with the Agg canvas.
"""

from __future__ import annotations

import argparse
import csv
import html
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from scalelong.callbacks.noise_ratio import plot_histogram
from scalelong.errors import ScaleLongError
from scalelong.oscillation import range_oscillation
from scalelong.scalers import SCALERS

log = logging.getLogger(__name__)

Series = dict[int, float]


@dataclass
class Run:
    """One run directory: its label and every logged series (key -> {step: value})."""

    path: Path
    label: str
    series: dict[str, Series] = field(default_factory=dict)

    def get(self, key: str) -> Series:
        return self.series.get(key, {})

    def last(self, key: str) -> float:
        s = self.get(key)
        return s[max(s)] if s else math.nan

    def indices(self, pattern: str) -> list[int]:
        """Sorted i of the keys matching ``pattern`` with one ``(\\d+)`` group, e.g. ``feat/level_(\\d+)``."""
        found = {int(m.group(1)) for k in self.series if (m := re.fullmatch(pattern, k))}
        return sorted(found)


def read_metrics(path: Path) -> dict[str, Series]:
    """key -> {step: value} from a Lightning metrics.csv; the last row wins per (key, step)."""
    series: dict[str, Series] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if not step:
                continue
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series.setdefault(key, {})[int(float(step))] = float(value)
    return series


def run_label(run_dir: Path) -> str:
    """The scaler name and its float options from ``.hydra/config.yaml``, else the directory name."""
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        return run_dir.name
    cfg = OmegaConf.load(config)
    scaler = OmegaConf.to_container(cfg.scaler, resolve=True)
    cls = scaler.pop("_target_").rsplit(".", 1)[-1]
    name = next((n for n, c in SCALERS.items() if c.__name__ == cls), cls)
    options = ", ".join(f"{k}={v:.4g}" for k, v in scaler.items() if isinstance(v, float))
    return f"{name}({options})" if options else name


def load_run(run_dir: str | Path) -> Run:
    """A run from its directory; ScaleLongError naming the directory if it has no metrics.csv."""
    run_dir = Path(run_dir)
    metrics = run_dir / "csv" / "metrics.csv"
    if not metrics.is_file():
        raise ScaleLongError(f"{metrics} does not exist; pass the directory of a scalelong-train run "
                             "(the one holding csv/ and .hydra/)")
    return Run(run_dir, run_label(run_dir), read_metrics(metrics))


def unique_labels(runs: Sequence[Run]) -> None:
    """Append the directory name to labels that several runs share."""
    for run in runs:
        if sum(r.label == run.label for r in runs) > 1:
            run.label = f"{run.label} [{run.path.name}]"


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _grid(n: int, ncols: int = 5, size: tuple[float, float] = (3.2, 2.4)) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _plot(ax, series: Series, label: str, color: str, **kwargs) -> None:
    if series:
        steps = sorted(series)
        ax.plot(steps, [series[s] for s in steps], label=label, color=color, **kwargs)


def _colors(runs: Sequence[Run]) -> dict[str, str]:
    return {run.label: f"C{k % 10}" for k, run in enumerate(runs)}


def per_index_figure(runs: Sequence[Run], pattern: str, title: str, ylabel: str, log_y: bool = True) -> Figure | None:
    """One panel per index i of ``pattern`` (e.g. ``feat/level_{}``), one line per run."""
    indices = sorted({i for run in runs for i in run.indices(pattern.format(r"(\d+)"))})
    if not indices:
        return None
    colors = _colors(runs)
    fig, axes = _grid(len(indices))
    for ax, i in zip(axes, indices):
        for run in runs:
            _plot(ax, run.get(pattern.format(i)), run.label, colors[run.label])
        ax.set_title(f"i = {i}", fontsize=9)
        if log_y:
            ax.set_yscale("log")
    axes[0].set_ylabel(ylabel)
    fig.suptitle(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(4, len(runs)))
    return fig


def grad_figure(runs: Sequence[Run]) -> Figure | None:
    """Gradient norm of every block vs step, one panel per block."""
    blocks = sorted({k[5:] for run in runs for k in run.series if k.startswith("grad/")}, key=_block_order)
    if not blocks:
        return None
    colors = _colors(runs)
    fig, axes = _grid(len(blocks), ncols=6, size=(2.8, 2.2))
    for ax, block in zip(axes, blocks):
        for run in runs:
            _plot(ax, run.get(f"grad/{block}"), run.label, colors[run.label], linewidth=0.8)
        ax.set_title(block, fontsize=9)
        ax.set_yscale("log")
    axes[0].set_ylabel("gradient L2 norm")
    fig.suptitle("Gradient norm per block G_b vs step (Thm 3.3)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(4, len(runs)))
    return fig


def _block_order(name: str) -> tuple[int, int]:
    kind = {"in": 0, "mid": 1, "out": 2, "total": 3}.get(name.split("_")[0], 4)
    digits = re.findall(r"\d+", name)
    return kind, int(digits[0]) if digits else 0


def heatmap_figure(runs: Sequence[Run], stat: str = "mrc") -> Figure | None:
    """``osc/feat/level_{i}/{stat}`` as a skip × step image per run, one shared colour scale."""
    pattern = rf"osc/feat/level_(\d+)/{stat}"
    shown = [run for run in runs if run.indices(pattern)]
    if not shown:
        return None
    fig = Figure(figsize=(10, 2.2 * len(shown) + 0.8), layout="constrained")
    axes = fig.subplots(len(shown), 1, sharex=True, squeeze=False).ravel()
    images = []
    for ax, run in zip(axes, shown):
        indices = run.indices(pattern)
        steps = sorted({s for i in indices for s in run.get(f"osc/feat/level_{i}/{stat}")})
        grid = np.full((len(indices), len(steps)), np.nan)
        for r, i in enumerate(indices):
            series = run.get(f"osc/feat/level_{i}/{stat}")
            for c, s in enumerate(steps):
                grid[r, c] = series.get(s, np.nan)
        images.append((ax, grid, steps, indices, run.label))
    finite = np.concatenate([g[np.isfinite(g)] for _, g, *_ in images])
    vmax = float(np.quantile(finite, 0.99)) if finite.size else 1.0
    for ax, grid, steps, indices, label in images:
        mesh = ax.pcolormesh(_edges(steps), np.arange(len(indices) + 1) + 0.5, grid, vmin=0, vmax=vmax,
                             cmap="magma", shading="flat")
        ax.set_yticks(range(1, len(indices) + 1), [str(i) for i in indices], fontsize=7)
        ax.set_ylabel(f"{label}\nskip i")
    axes[-1].set_xlabel("step")
    fig.colorbar(mesh, ax=list(axes), label=f"{stat} of F(h_i) over the trailing window")
    fig.suptitle(f"Feature oscillation per decoder level ({stat}, SPEC §4)")
    return fig


def _edges(steps: Sequence[int]) -> np.ndarray:
    s = np.asarray(steps, dtype=float)
    if len(s) == 1:
        return np.array([s[0] - 0.5, s[0] + 0.5])
    mid = (s[1:] + s[:-1]) / 2
    return np.concatenate([[s[0] - (mid[0] - s[0])], mid, [s[-1] + (s[-1] - mid[-1])]])


def kappa_figure(runs: Sequence[Run]) -> Figure | None:
    """Last κ_i vs i per run against the CS curves κ^(i−1) of the Sec. 4.1 range (Fig. 7)."""
    shown = [run for run in runs if run.indices(r"kappa/skip_(\d+)")]
    if not shown:
        return None
    colors = _colors(runs)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    n = max(max(run.indices(r"kappa/skip_(\d+)")) for run in shown)
    i = np.arange(1, n + 1)
    low, high = shown[0].last("noise_ratio/kappa_low"), shown[0].last("noise_ratio/kappa_high")
    if math.isfinite(low) and math.isfinite(high):
        ax.fill_between(i, low ** (i - 1), high ** (i - 1), color="orange", alpha=0.25,
                        label=f"CS range κ ∈ [{low:.2f}, {high:.2f}] (Sec. 4.1)")
    for run in shown:
        idx = run.indices(r"kappa/skip_(\d+)")
        ax.plot(idx, [run.last(f"kappa/skip_{k}") for k in idx], "o-", color=colors[run.label], label=run.label)
        kappa, scale = run.last("ls/fit_kappa"), run.last("ls/fit_scale")
        if math.isfinite(kappa):
            ax.plot(i, scale * kappa ** (i - 1), "--", color=colors[run.label],
                    label=f"{run.label} fit {scale:.2f}·{kappa:.3f}^(i−1)")
    ax.set_xlabel("skip i (1 = outermost)")
    ax.set_ylabel("κ_i (last readout)")
    ax.set_title("κ_i vs i (Fig. 7)")
    ax.legend(fontsize=7)
    return fig


def noise_ratio_figure(runs: Sequence[Run]) -> Figure | None:
    """Histogram of r_t of each run's data (Fig. 3b)."""
    shown = [(run, run.path / "noise_ratio" / "histogram.npz") for run in runs]
    shown = [(run, path) for run, path in shown if path.is_file()]
    if not shown:
        return None
    colors = _colors(runs)
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for run, path in shown:
        h = np.load(path)
        plot_histogram(ax, h["counts"], h["edges"], float(h["mean"]), float(h["q97"]),
                       label=f"{run.label}: mean {float(h['mean']):.3f}, q97 {float(h['q97']):.3f}",
                       color=colors[run.label])
    ax.set_title("Noise ratio r_t over data and timesteps (Fig. 3b)")
    ax.legend(fontsize=7)
    return fig


def lines_figure(runs: Sequence[Run], panels: Sequence[tuple[str, Sequence[str]]], title: str,
                 log_y: bool = False) -> Figure | None:
    """One panel per (title, keys); each key of each run is a line (keys share the run's colour)."""
    panels = [(t, keys) for t, keys in panels if any(run.get(k) for run in runs for k in keys)]
    if not panels:
        return None
    colors = _colors(runs)
    fig, axes = _grid(len(panels), ncols=min(4, len(panels)), size=(3.8, 2.8))
    styles = ["-", "--", ":", "-."]
    for ax, (panel_title, keys) in zip(axes, panels):
        for run in runs:
            for k, key in enumerate(keys):
                _plot(ax, run.get(key), run.label if k == 0 else None, colors[run.label],
                      linestyle=styles[k % len(styles)], linewidth=1)
        ax.set_title(panel_title, fontsize=9)
        if log_y:
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(4, len(runs)))
    return fig


def figures(runs: Sequence[Run]) -> dict[str, Figure]:
    """Every figure of the module docstring that the runs have data for."""
    sigmas = sorted({k for run in runs for k in run.series if k.startswith("robust/ratio/")},
                    key=lambda k: float(k.rsplit("_", 1)[-1]))
    candidates = {
        "feature_energy": per_index_figure(runs, "feat/level_{}", "Feature energy F(h_i) of decoder level i vs step "
                                           "(Thm 3.1)", "F = mean |h|²/numel"),
        "skip_energy": per_index_figure(runs, "feat/skip_{}", "Feature energy F(s_i) of skip i before scaling",
                                        "F = mean |s|²/numel"),
        "oscillation_heatmap": heatmap_figure(runs),
        "grad_norms": grad_figure(runs),
        "kappa": kappa_figure(runs),
        "noise_ratio": noise_ratio_figure(runs),
        "robustness": lines_figure(runs, [
            ("|net(x+δ)−net(x)|/|δ| (" + ", ".join(k.rsplit("_", 1)[-1] for k in sigmas) + ")", sigmas),
            ("Jacobian spectral norm", ["robust/jacobian"]),
            ("M0 = max_i |b_i∘a_i|₂", ["robust/m0"]),
        ], "Robustness on the probe batch (Thm 3.4, App. Fig. 11)", log_y=True),
        "loss": lines_figure(runs, [
            ("val/loss (EMA weights)", ["val/loss"]),
            ("train/loss", ["train/loss"]),
            ("loss_t/q1 (least noise)", ["loss_t/q1"]),
            ("loss_t/q4 (most noise)", ["loss_t/q4"]),
        ], "Losses", log_y=True),
    }
    return {name: fig for name, fig in candidates.items() if fig is not None}


# --------------------------------------------------------------------------------------------
# Run-level numbers and the page
# --------------------------------------------------------------------------------------------


def summary(run: Run, start: int | None = None, stop: int | None = None) -> dict[str, float]:
    """Run-level oscillation over steps [start, stop] (SPEC §4) and last values of the run.

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
    keys += sorted((k for k in run.series if k.startswith("grad/")), key=lambda k: _block_order(k[5:]))
    return [{"run": run.label, "series": k, **range_oscillation(list(run.get(k)), list(run.get(k).values()),
                                                                 start, stop)} for k in keys]


def _write_csv(path: Path, rows: Sequence[dict[str, object]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_summary(runs: Sequence[Run], out: Path, start: int | None, stop: int | None) -> list[dict[str, object]]:
    """``summary.csv`` (one row per run) and ``oscillation_series.csv`` (one row per run and series)."""
    rows = [{"run": run.label, "dir": str(run.path), **summary(run, start, stop)} for run in runs]
    _write_csv(out / "summary.csv", rows)
    _write_csv(out / "oscillation_series.csv", [row for run in runs for row in series_oscillation(run, start, stop)])
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
    path.write_text(page)
    return path


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def build_dashboard(run_dirs: Sequence[str | Path], out: str | Path, start: int | None = None,
                    stop: int | None = None) -> Path:
    """Write the PNGs, ``summary.csv`` and ``index.html`` for ``run_dirs`` into ``out``; the page's path."""
    runs = [load_run(d) for d in run_dirs]
    unique_labels(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pictures = []
    for name, fig in figures(runs).items():
        fig.savefig(out / f"{name}.png", dpi=90)
        pictures.append(name)
    rows = write_summary(runs, out, start, stop)
    return write_html(runs, pictures, rows, out, start, stop)


# --------------------------------------------------------------------------------------------
# wandb workspace
# --------------------------------------------------------------------------------------------


def build_workspace(entity: str, project: str, num_skips: int, name: str = "scalelong stability"):
    """A ``wandb_workspaces`` Workspace with the dashboard's panels (not saved).

    Sections: losses, feature energy per level, feature oscillation, gradient norms and their
    oscillation, κ, noise ratio, robustness. Block names follow U-ViT and the conv UNet
    (``in_block_1`` … ``in_block_N``, ``mid_block``, ``out_block_1`` … ``out_block_N``).
    """
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as err:
        raise ScaleLongError("--wandb needs the wandb-workspaces package: pip install wandb-workspaces "
                             "(or pip install -e '.[workspaces]')") from err

    x = "trainer/global_step"
    skips = range(1, num_skips + 1)
    blocks = [f"in_block_{k}" for k in skips] + ["mid_block"] + [f"out_block_{k}" for k in skips]

    def line(title: str, keys: Sequence[str], log_y: bool = False) -> wr.LinePlot:
        return wr.LinePlot(title=title, x=x, y=list(keys), log_y=log_y or None)

    sections = [
        ws.Section(name="Losses", is_open=True, panels=[
            line("val/loss", ["val/loss"], True), line("train/loss", ["train/loss"], True),
            line("loss by timestep quartile", [f"loss_t/q{q}" for q in range(1, 5)], True),
            line("loss spikes (cumulative)", ["loss/spikes"]),
        ]),
        ws.Section(name="Feature energy per decoder level (Thm 3.1)", is_open=True, panels=[
            line(f"F(h_{i})", [f"feat/level_{i}"], True) for i in skips
        ]),
        ws.Section(name="Feature energy per skip", panels=[
            line(f"F(s_{i}) and F(κ_{i} s_{i})", [f"feat/skip_{i}", f"feat/skip_{i}_scaled"], True) for i in skips
        ]),
        ws.Section(name="Feature oscillation", is_open=True, panels=[
            line("mean mrc over feature series", ["osc/feat/mean/mrc"]),
            line("mean rstd over feature series", ["osc/feat/mean/rstd"]),
            *[line(f"mrc of F(h_{i})", [f"osc/feat/level_{i}/mrc"]) for i in skips],
        ]),
        ws.Section(name="Gradient norms (Thm 3.3)", panels=[
            line("total", ["grad/total"], True), *[line(b, [f"grad/{b}"], True) for b in blocks]
        ]),
        ws.Section(name="Gradient oscillation", panels=[
            line("mean mrc over blocks", ["osc/grad/mean/mrc"]), line("mean rstd over blocks", ["osc/grad/mean/rstd"]),
            *[line(f"mrc {b}", [f"osc/grad/{b}/mrc"]) for b in blocks],
        ]),
        ws.Section(name="κ readout (Fig. 7)", panels=[
            *[line(f"κ_{i}", [f"kappa/skip_{i}"]) for i in skips],
            line("LS fit κ", ["ls/fit_kappa"]), line("LS fit R² (log space)", ["ls/fit_r2"]),
        ]),
        ws.Section(name="Noise ratio (Fig. 3)", panels=[
            wr.MediaBrowser(title="r_t histogram", media_keys=["noise_ratio/hist"]),
            wr.ScalarChart(title="mean r_t", metric="noise_ratio/mean"),
            wr.ScalarChart(title="q97 r_t", metric="noise_ratio/q97"),
            wr.ScalarChart(title="E|x_t|²/m", metric="noise_ratio/xt_energy"),
        ]),
        ws.Section(name="Robustness (Thm 3.4, Fig. 11)", panels=[
            line("|net(x+δ)−net(x)|/|δ|", [f"robust/ratio/delta_{s:g}" for s in (1e-3, 1e-2, 1e-1)], True),
            line("Jacobian spectral norm", ["robust/jacobian"], True),
            line("M0 and per-level |b_i∘a_i|", ["robust/m0", *[f"robust/m0/level_{i}" for i in skips]], True),
        ]),
    ]
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``scalelong-dashboard``)."""
    parser = argparse.ArgumentParser(prog="scalelong-dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run directories of scalelong-train")
    parser.add_argument("--out", default="dashboard", help="output directory of the PNGs and index.html")
    parser.add_argument("--start", type=int, default=None, help="first step of the run-level oscillation figures")
    parser.add_argument("--stop", type=int, default=None, help="last step of the run-level oscillation figures")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="save a wandb workspace with these panels")
    parser.add_argument("--num-skips", type=int, default=None,
                        help="LSC count for the workspace panels (default: from the first run, else 6)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.runs and not args.wandb:
        parser.error("pass run directories, --wandb ENTITY/PROJECT, or both")
    try:
        if args.runs:
            page = build_dashboard(args.runs, args.out, args.start, args.stop)
            print(page)
        if args.wandb:
            entity, _, project = args.wandb.partition("/")
            if not entity or not project:
                raise ScaleLongError(f"--wandb {args.wandb!r} must be ENTITY/PROJECT")
            num_skips = args.num_skips or (
                max(load_run(args.runs[0]).indices(r"feat/level_(\d+)"), default=6) if args.runs else 6
            )
            workspace = build_workspace(entity, project, num_skips).save()
            print(workspace.url)
    except ScaleLongError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
