"""The figures of the reproduction reports, drawn from numbers over seeds (:class:`scalelong.stats.Stat`) and
logged curves; what to plot is decided by :mod:`scalelong.reproduction.claims`.

A cell is one architecture and batch, labelled like ``N=12, b=16``. Every figure shows mean ± 1 std over
seeds, the spread the decision rule reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from scalelong.eval.speedup import Curve
from scalelong.stats import Stat

COLORS = {"none": "C0", "uniform": "C1", "cs": "C2", "cs_reversed": "C3", "ls": "C4"}

Cell = tuple[int, int]  # (number of LSCs N, batch size)


def cell_label(cell: Cell, sep: str = ", ") -> str:
    return f"N={cell[0]}{sep}b={cell[1]}"


def _errorbars(stats: Sequence[Stat]) -> list[float]:
    return [s.std if s.n > 1 else 0.0 for s in stats]


def _finish(fig: Figure, axes: Sequence, ylabel: str, legend_size: int = 8) -> Figure:
    """The y label and the legend on the first panel of a row of panels."""
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=legend_size)
    return fig


def _log_scale(ax, x: bool = False) -> None:
    """Log y (and x) on an axis that holds positive data; one without any (every run lacked the metric) stays
    linear, since matplotlib cannot log-scale it."""
    if np.isfinite(ax.dataLim.minposy):
        ax.set_yscale("log")
    if x and np.isfinite(ax.dataLim.minposx):
        ax.set_xscale("log")


def _finite(stats: Sequence[Stat]) -> bool:
    return any(np.isfinite(s.mean) for s in stats)


def bar_panels(cells: Sequence[Cell], panels: Sequence[tuple[str, Mapping[str, Sequence[Stat]]]],
               log_y: bool = False, reference: float | None = None) -> Figure | None:
    """One panel per metric; per cell a group of bars (one per method, ``{method: one Stat per cell}``) with
    ±1 std error bars, and an optional dashed reference line (e.g. the paper's 1.5× speed-up); None when no bar
    has a finite value."""
    if not cells or not any(_finite(stats) for _, by_method in panels for stats in by_method.values()):
        return None
    fig = Figure(figsize=(5.2 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, by_method) in zip(axes, panels):
        width = 0.8 / max(len(by_method), 1)
        for k, (method, stats) in enumerate(by_method.items()):
            x = np.arange(len(cells)) + (k - (len(by_method) - 1) / 2) * width
            ax.bar(x, [s.mean for s in stats], width, yerr=_errorbars(stats), label=method,
                   color=COLORS.get(method), capsize=2)
        if reference is not None:
            ax.axhline(reference, color="k", linestyle="--", linewidth=1)
            ax.set_ylim(top=max(ax.get_ylim()[1], 1.1 * reference))
        ax.set_xticks(np.arange(len(cells)), [cell_label(c, "\n") for c in cells])
        ax.set_title(title, fontsize=10)
        if log_y:
            _log_scale(ax)
    axes[0].legend(fontsize=8)
    return fig


def curve_panels(panels: Mapping[Cell, Mapping[str, Sequence[Curve]]], ylabel: str) -> Figure | None:
    """A metric against steps, one panel per cell, mean over seeds with a ±1 std band per method (curves are
    cut to the shortest seed's length); None when no run logged the metric."""
    if not any(curves for by_method in panels.values() for curves in by_method.values()):
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (cell, by_method) in zip(axes, panels.items()):
        for method, curves in by_method.items():
            if not curves:
                continue
            length = min(len(c.steps) for c in curves)
            values = np.stack([c.values[:length] for c in curves])
            steps = curves[0].steps[:length]
            mean = values.mean(0)
            std = values.std(0, ddof=1) if len(curves) > 1 else np.zeros(length)
            ax.plot(steps, mean, label=f"{method} (n={len(curves)})", color=COLORS.get(method))
            ax.fill_between(steps, mean - std, mean + std, color=COLORS.get(method), alpha=0.15)
        _log_scale(ax)
        ax.set_title(f"N={cell[0]} LSCs, batch {cell[1]}", fontsize=10)
        ax.set_xlabel("training step")
    return _finish(fig, axes, ylabel, 7)


def learned_kappa_panels(panels: Mapping[Cell, np.ndarray], fits: Mapping[Cell, float], cs_kappa: float
                         ) -> Figure | None:
    """LS's learned κ_i against i (``panels[cell]``: seeds × N), mean ± std over seeds, with the fitted
    a·κ^(i−1) and the cs curve a·cs_kappa^(i−1) through the same κ_1 (paper Fig. 7)."""
    if not panels:
        return None
    fig = Figure(figsize=(4.0 * len(panels), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (cell, gates) in zip(axes, panels.items()):
        i = np.arange(1, gates.shape[1] + 1)
        ax.errorbar(i, gates.mean(0), yerr=gates.std(0, ddof=1) if len(gates) > 1 else None, marker="o",
                    label=f"ls learned (n={len(gates)})", color=COLORS["ls"], capsize=2)
        scale = gates[:, 0].mean()
        ax.plot(i, scale * fits[cell] ** (i - 1), "--", color=COLORS["ls"],
                label=f"fit a·κ^(i−1), κ={fits[cell]:.3f}")
        ax.plot(i, scale * cs_kappa ** (i - 1), ":", color=COLORS["cs"], label=f"a·{cs_kappa}^(i−1) (cs)")
        _log_scale(ax)
        ax.set_xlabel("skip i (1 = outermost)")
        ax.set_title(cell_label(cell), fontsize=10)
    return _finish(fig, axes, "κ_i", 7)


def stat_lines(lines: Mapping[str, tuple[Sequence[float], Sequence[Stat]]], xlabel: str, ylabel: str,
               log_x: bool = False, title: str = "", colors: Mapping[str, str] | None = None) -> Figure | None:
    """One line per label through (x, Stat) points with ±1 std error bars, log y (e.g. final FID against κ or
    against the learning rate); None when no point has a finite value."""
    lines = {label: (xs, stats) for label, (xs, stats) in lines.items() if _finite(stats)}
    if not lines:
        return None
    fig = Figure(figsize=(4.8, 3.4), layout="constrained")
    ax = fig.subplots()
    for label, (xs, stats) in lines.items():
        ax.errorbar(xs, [s.mean for s in stats], yerr=_errorbars(stats), marker="o", capsize=2, label=label,
                    color=(colors or {}).get(label))
    _log_scale(ax, x=log_x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def frontier_panels(panels: Mapping[Cell, Mapping[str, tuple[Sequence[float], Sequence[Stat]]]]) -> Figure | None:
    """Final FID against the learning rate, one panel per cell, one line per method (mean ± std over seeds;
    a learning rate where every seed diverged has no point); None when no point has a finite value."""
    panels = {cell: kept for cell, lines in panels.items()
              if (kept := {m: (lrs, stats) for m, (lrs, stats) in lines.items() if _finite(stats)})}
    if not panels:
        return None
    fig = Figure(figsize=(4.6 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (cell, lines) in zip(axes, panels.items()):
        for method, (lrs, stats) in lines.items():
            ax.errorbar(lrs, [s.mean for s in stats], yerr=_errorbars(stats), marker="o", capsize=2, label=method,
                        color=COLORS.get(method))
        _log_scale(ax, x=True)
        grid = sorted({lr for lrs, _ in lines.values() for lr in lrs})
        ax.set_xticks(grid, [f"{lr:g}" for lr in grid], minor=False)
        ax.set_xticks([], minor=True)  # the grid's lrs alone: log-scale minor labels overlap on a 2× grid
        ax.set_xlabel("learning rate")
        ax.set_title(cell_label(cell), fontsize=10)
    return _finish(fig, axes, "final FID")
