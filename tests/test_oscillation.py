"""Oscillation statistics on hand-made series (docs/metrics.md)."""

from __future__ import annotations

import math

import pytest

from scalelong.oscillation import (
    SpikeCounter,
    TrailingWindows,
    mean_abs_relative_change,
    oscillation,
    range_oscillation,
    relative_std,
)


def test_constant_series_does_not_oscillate():
    assert oscillation([3.0] * 7) == {"rstd": 0.0, "mrc": 0.0}


@pytest.mark.parametrize("a, b", [(1.0, 3.0), (0.5, 0.25), (10.0, 11.0)])
def test_alternating_series_has_the_closed_form_values(a, b):
    series = [a, b] * 4
    assert relative_std(series) == pytest.approx(abs(a - b) / (a + b))
    assert mean_abs_relative_change(series) == pytest.approx(2 * abs(a - b) / (a + b))


def test_linear_ramp_has_rstd_from_drift_and_mrc_from_its_slope():
    ramp = [1.0, 2.0, 3.0, 4.0, 5.0]  # mean 3, population std sqrt(2), every step 1
    assert relative_std(ramp) == pytest.approx(math.sqrt(2) / 3)
    assert mean_abs_relative_change(ramp) == pytest.approx(1 / 3)


def test_too_short_or_zero_mean_series_give_nan():
    assert math.isnan(relative_std([1.0])) and math.isnan(mean_abs_relative_change([]))
    assert math.isnan(relative_std([1.0, -1.0]))


def test_trailing_windows_report_only_full_windows_and_their_mean():
    windows = TrailingWindows(window=3)
    assert windows.update({"a": 1.0, "b": 2.0}, prefix="osc/x") == {}
    assert windows.update({"a": 3.0, "b": 2.0}, prefix="osc/x") == {}
    out = windows.update({"a": 1.0, "b": 2.0}, prefix="osc/x")
    a = oscillation([1.0, 3.0, 1.0])
    assert out["osc/x/a/rstd"] == pytest.approx(a["rstd"]) and out["osc/x/a/mrc"] == pytest.approx(1.2)
    assert out["osc/x/b/rstd"] == 0.0 and out["osc/x/b/mrc"] == 0.0
    assert out["osc/x/mean/mrc"] == pytest.approx(0.6)
    assert set(out) == {f"osc/x/{n}/{s}" for n in ("a", "b", "mean") for s in ("rstd", "mrc")}
    # The window slides: the oldest value leaves.
    out = windows.update({"a": 1.0, "b": 2.0}, prefix="osc/x")
    assert out["osc/x/a/mrc"] == pytest.approx(oscillation([3.0, 1.0, 1.0])["mrc"])


def test_trailing_windows_state_round_trip_continues_the_same_series():
    first = TrailingWindows(window=3)
    for v in (1.0, 2.0):
        first.update({"a": v}, prefix="p")
    second = TrailingWindows(window=3)
    second.load_state_dict(first.state_dict())
    assert second.update({"a": 4.0}, prefix="p") == first.update({"a": 4.0}, prefix="p")


def test_spike_counter_needs_history_and_counts_values_above_factor_times_median():
    spikes = SpikeCounter(factor=2.0, window=5, min_history=3)
    assert not spikes.update(100.0)  # no history yet
    assert [spikes.update(v) for v in (1.0, 1.0, 1.0)] == [False, False, False]
    assert spikes.update(5.0)  # median of (100, 1, 1, 1) is 1
    assert not spikes.update(1.5)
    assert spikes.count == 1
    restored = SpikeCounter(factor=2.0, window=5, min_history=3)
    restored.load_state_dict(spikes.state_dict())
    assert restored.count == 1 and list(restored.history) == list(spikes.history)


def test_range_oscillation_uses_the_stated_steps_in_order_and_drops_nan():
    steps = [40, 0, 10, 20, 30]
    values = [9.0, 1.0, 3.0, float("nan"), 1.0]
    out = range_oscillation(steps, values, start=0, stop=30)
    assert out["n"] == 3
    assert out["mrc"] == pytest.approx(oscillation([1.0, 3.0, 1.0])["mrc"])
    assert range_oscillation(steps, values, start=35)["n"] == 1
