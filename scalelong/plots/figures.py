"""The dashboard's figures (matplotlib, Agg canvas), one function each, and the r_t histogram the
noise-ratio callback saves too. Runs share every axis, so their curves compare directly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from scalelong.atomic import UNREADABLE, unreadable_reason
from scalelong.plots.metrics import Run, Series, block_order

log = logging.getLogger(__name__)


def plot_histogram(ax, counts: np.ndarray, edges: np.ndarray, mean: float, q97: float,
                   label: str | None = None, color: str | None = None) -> None:
    """Histogram of r_t as a fraction per bin, with the mean (dashed) and q97 (dotted) marked (Fig. 3b)."""
    density = counts / max(1.0, float(counts.sum()))
    line = ax.stairs(density, edges, label=label, color=color)
    ax.axvline(mean, linestyle="--", linewidth=1, color=line.get_edgecolor())
    ax.axvline(q97, linestyle=":", linewidth=1, color=line.get_edgecolor())
    ax.set_xlabel("r_t = |eps_t|^2 / |x_t|^2  (dashed: mean, dotted: q97)")
    ax.set_ylabel("fraction of samples")


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
    blocks = sorted({k[5:] for run in runs for k in run.series if k.startswith("grad/")}, key=block_order)
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
    fig.suptitle(f"Feature oscillation per decoder level ({stat})")
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
        try:
            with np.load(path, allow_pickle=False) as f:
                h = {k: f[k] for k in ("counts", "edges", "mean", "q97")}
        except UNREADABLE as err:
            log.warning("%s cannot be read (%s); left out of the noise-ratio picture. Rerun the run's "
                        "noise_ratio callback (or delete the file)", path, unreadable_reason(err))
            continue
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


# Each picture and what logs its data: a run without it gets the page without the picture, and is told.
LOGGED_BY = {
    "feature_energy": "callbacks.features",
    "skip_energy": "callbacks.features",
    "oscillation_heatmap": "callbacks.features",
    "grad_norms": "callbacks.gradients",
    "kappa": "callbacks.kappa",
    "noise_ratio": "callbacks.noise_ratio",
    "robustness": "callbacks.robustness",
    "loss": "training itself (train/loss, val/loss) and callbacks.timestep_loss",
}


def figures(runs: Sequence[Run]) -> dict[str, Figure]:
    """Every figure of the module docstring (:data:`LOGGED_BY`) that the runs have data for."""
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
