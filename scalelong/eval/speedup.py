"""Convergence speed-up from validation curves (docs/metrics.md "Convergence speed-up", the paper's "1.5×").

The one definition of the paper's convergence speed-up, used by ``scalelong.reproduction`` and by anyone
comparing logged curves: for a target value of a metric (by default the baseline's final value), the step
at which a curve — optionally EMA-smoothed — first reaches it (≤ for losses and FID, ≥ for accuracies) is
interpolated linearly between the two logged values around the crossing (the first logged step if that
value already reaches it), and speed-up = steps_baseline / steps_run. A curve that never reaches the
target has ``steps = None`` and ``speedup = None``.
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
    """Step (interpolated) at which a run reached the target, and baseline steps / that step (None: never)."""

    steps: float | None
    speedup: float | None


def ema(values: np.ndarray, decay: float) -> np.ndarray:
    """Exponential moving average s_k = decay·s_{k−1} + (1 − decay)·v_k, started at s_0 = v_0."""
    out = np.empty(len(values), dtype=np.float64)
    acc = float(values[0])
    for k, v in enumerate(values):
        acc = decay * acc + (1 - decay) * float(v)
        out[k] = acc
    return out


def first_step_reaching(curve: Curve, target: float, lower_is_better: bool = True) -> float | None:
    """The step at which ``curve`` first reaches ``target`` (≤ target, or ≥ if not ``lower_is_better``),
    linearly interpolated between the logged values around the crossing; None if it never does."""
    hit = np.flatnonzero(curve.values <= target if lower_is_better else curve.values >= target)
    if not hit.size:
        return None
    k = int(hit[0])
    if k == 0:
        return float(curve.steps[0])
    (s0, s1), (v0, v1) = curve.steps[k - 1 : k + 1], curve.values[k - 1 : k + 1]
    return float(s0 + (s1 - s0) * (v0 - target) / (v0 - v1))


def speedup(baseline: Curve, run: Curve, target: float, lower_is_better: bool = True) -> float | None:
    """Steps for ``baseline`` to reach ``target`` / steps for ``run`` to reach it (None if either never does;
    ∞ if ``run`` starts at step 0 already there while the baseline does not)."""
    base_steps = first_step_reaching(baseline, target, lower_is_better)
    steps = first_step_reaching(run, target, lower_is_better)
    if base_steps is None or steps is None:
        return None
    if steps == 0:
        return 1.0 if base_steps == 0 else math.inf
    return base_steps / steps


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
    results = {name: StepsToTarget(first_step_reaching(curve, target, lower_is_better),
                                   speedup(curves[baseline], curve, target, lower_is_better))
               for name, curve in curves.items()}
    return target, results


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
