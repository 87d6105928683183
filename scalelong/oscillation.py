"""Oscillation statistics of logged series (docs/metrics.md; paper Fig. 1, Thm 3.1, 3.3).

A series is the sequence of values of one measured quantity at its logging steps, e.g. the
feature energy F_i of skip i or the gradient norm G_b of block b. Its oscillation over a window
of W consecutive logged values v_1 … v_W (W ≥ 2) is reported as

* relative standard deviation ``rstd = std(v) / mean(v)`` (population std, ddof = 0), and
* mean absolute relative change ``mrc = mean_k |v_{k+1} − v_k| / mean(v)`` over the W − 1
  consecutive differences.

Both are dimensionless, so skips and blocks of different magnitude compare directly. rstd also
grows with a steady drift (a series that doubles linearly over the window has rstd ≈ 0.19);
mrc measures step-to-step jumps and is the better reading of "oscillation" when the features
drift. A constant series has rstd = mrc = 0; the alternating series a, b, a, b, … of even
length has rstd = |a − b| / (a + b) and mrc = 2|a − b| / (a + b).

During training the window is the trailing W logged values (:class:`TrailingWindows`); a run's
oscillation figure uses every logged value in a stated step range (:func:`range_oscillation`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from statistics import median

import numpy as np


def relative_std(values: Sequence[float]) -> float:
    """std/mean of ``values`` (population std); NaN for fewer than 2 values or mean 0."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2 or v.mean() == 0:
        return math.nan
    return float(v.std() / v.mean())


def mean_abs_relative_change(values: Sequence[float]) -> float:
    """mean |v_{k+1} − v_k| / mean(v); NaN for fewer than 2 values or mean 0."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2 or v.mean() == 0:
        return math.nan
    return float(np.abs(np.diff(v)).mean() / v.mean())


def oscillation(values: Sequence[float]) -> dict[str, float]:
    """``{"rstd": …, "mrc": …}`` of one window of values."""
    return {"rstd": relative_std(values), "mrc": mean_abs_relative_change(values)}


class TrailingWindows:
    """The last ``window`` logged values of each named series, and their oscillation.

    ``update`` appends one logged value per series and returns, for every series whose window
    is full, ``{f"{prefix}/{name}/rstd": …, f"{prefix}/{name}/mrc": …}`` plus the averages over
    those series as ``{prefix}/mean/rstd`` and ``{prefix}/mean/mrc``. Windows that are not yet
    full report nothing, so every reported value covers exactly W logged values.
    """

    def __init__(self, window: int) -> None:
        if window < 2:
            raise ValueError(f"an oscillation window needs at least 2 values, got window={window}")
        self.window = window
        self.series: dict[str, deque[float]] = {}

    def update(self, values: Mapping[str, float], prefix: str) -> dict[str, float]:
        out: dict[str, float] = {}
        stats: list[dict[str, float]] = []
        for name, value in values.items():
            series = self.series.setdefault(name, deque(maxlen=self.window))
            series.append(float(value))
            if len(series) == self.window:
                stats.append(oscillation(series))
                out.update({f"{prefix}/{name}/{k}": v for k, v in stats[-1].items()})
        if stats:
            for k in ("rstd", "mrc"):
                out[f"{prefix}/mean/{k}"] = float(np.mean([s[k] for s in stats]))
        return out

    def state_dict(self) -> dict[str, list[float]]:
        return {name: list(series) for name, series in self.series.items()}

    def load_state_dict(self, state: Mapping[str, Iterable[float]]) -> None:
        self.series = {name: deque(values, maxlen=self.window) for name, values in state.items()}


class SpikeCounter:
    """Counts loss spikes: a value above ``factor`` × the median of the previous ``window`` values.

    No spike is counted until ``min_history`` values have been seen (the median of a handful of
    early, fast-falling losses is not a baseline).
    """

    def __init__(self, factor: float = 2.0, window: int = 100, min_history: int = 10) -> None:
        if factor <= 1:
            raise ValueError(f"a spike factor must exceed 1, got factor={factor}")
        self.factor, self.min_history = factor, min_history
        self.history: deque[float] = deque(maxlen=window)
        self.count = 0

    def update(self, value: float) -> bool:
        """Record one loss; True if it is a spike."""
        spike = len(self.history) >= self.min_history and value > self.factor * median(self.history)
        self.count += spike
        self.history.append(float(value))
        return spike

    def state_dict(self) -> dict[str, object]:
        return {"history": list(self.history), "count": self.count}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.history = deque(state["history"], maxlen=self.history.maxlen)
        self.count = int(state["count"])


def range_oscillation(
    steps: Sequence[int], values: Sequence[float], start: int | None = None, stop: int | None = None
) -> dict[str, float]:
    """rstd and mrc of the logged values with ``start <= step <= stop`` (a run's oscillation figure).

    Values are taken in step order; NaN entries are dropped. ``n`` is the number of values used.
    """
    pairs = sorted(
        (s, v) for s, v in zip(steps, values)
        if math.isfinite(v) and (start is None or s >= start) and (stop is None or s <= stop)
    )
    used = [v for _, v in pairs]
    return {**oscillation(used), "n": float(len(used))}
