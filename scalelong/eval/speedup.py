"""Convergence speed-up from validation curves (docs/metrics.md "Convergence speed-up", the paper's "1.5×").

The target is the baseline's final value of a validation metric (or a given value). For each run, the
first logged step at which its curve — optionally EMA-smoothed — reaches the target (≤ for losses and
FID, ≥ for accuracies) is found, and speed-up = steps_baseline / steps_run. A run that never reaches
the target has ``steps = None`` and ``speedup = None``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scalelong.errors import DataError


@dataclass(frozen=True)
class Curve:
    """A logged series: increasing steps and their values."""

    steps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class StepsToTarget:
    """First step at which a run reached the target, and baseline steps / that step (None: never)."""

    steps: int | None
    speedup: float | None


def ema(values: np.ndarray, decay: float) -> np.ndarray:
    """Exponential moving average s_k = decay·s_{k−1} + (1 − decay)·v_k, started at s_0 = v_0."""
    out = np.empty(len(values), dtype=np.float64)
    acc = float(values[0])
    for k, v in enumerate(values):
        acc = decay * acc + (1 - decay) * float(v)
        out[k] = acc
    return out


def first_step_reaching(curve: Curve, target: float, lower_is_better: bool = True) -> int | None:
    """The first step whose value is ≤ target (≥ if not ``lower_is_better``), or None."""
    hit = curve.values <= target if lower_is_better else curve.values >= target
    return int(curve.steps[np.argmax(hit)]) if hit.any() else None


def steps_to_target(
    curves: Mapping[str, Curve],
    baseline: str,
    target: float | None = None,
    lower_is_better: bool = True,
    ema_decay: float | None = None,
) -> tuple[float, dict[str, StepsToTarget]]:
    """Steps to reach ``target`` (default: the baseline's final value) and speed-up over the baseline.

    With ``ema_decay`` every curve is smoothed first, and the default target is the baseline's final
    smoothed value. Returns the target used and one :class:`StepsToTarget` per run.
    """
    if baseline not in curves:
        raise KeyError(f"baseline run '{baseline}' is not among the curves {sorted(curves)}")
    if ema_decay is not None:
        curves = {name: Curve(c.steps, ema(c.values, ema_decay)) for name, c in curves.items()}
    if target is None:
        target = float(curves[baseline].values[-1])
    base_steps = first_step_reaching(curves[baseline], target, lower_is_better)
    results = {}
    for name, curve in curves.items():
        steps = first_step_reaching(curve, target, lower_is_better)
        results[name] = StepsToTarget(steps, _ratio(base_steps, steps))
    return target, results


def _ratio(base_steps: int | None, steps: int | None) -> float | None:
    if base_steps is None or steps is None:
        return None
    if steps == 0:  # reached at the very first logged step
        return 1.0 if base_steps == 0 else math.inf
    return base_steps / steps


def read_lightning_curve(path: str | os.PathLike, metric: str) -> Curve:
    """The (step, ``metric``) series of a Lightning CSVLogger ``metrics.csv`` (or its directory).

    Rows where the metric is empty (other metrics logged at that step) are skipped; if a step
    appears twice, the last value wins.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    if not path.is_file():
        raise DataError(f"no Lightning metrics file at {path}; pass a CSVLogger's metrics.csv or its directory")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "step" not in reader.fieldnames or metric not in reader.fieldnames:
            raise DataError(f"{path} has columns {reader.fieldnames}; it needs 'step' and '{metric}'")
        series = {int(float(row["step"])): float(row[metric]) for row in reader if row[metric] not in ("", None)}
    steps = np.array(sorted(series), dtype=np.int64)
    return Curve(steps, np.array([series[s] for s in steps], dtype=np.float64))
