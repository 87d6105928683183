"""Steps-to-target and speed-up from validation curves, and reading Lightning's metrics.csv."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scalelong.errors import DataError
from scalelong.eval.speedup import Curve, ema, first_step_reaching, read_lightning_curve, steps_to_target

STEPS = np.arange(0, 1001, 10)


def loss_curve(rate: float) -> Curve:
    return Curve(STEPS, 1.0 / (1.0 + STEPS / rate))


def test_twice_as_fast_run_has_speedup_two() -> None:
    curves = {"none": loss_curve(100), "cs": loss_curve(50), "slow": loss_curve(400)}
    target, result = steps_to_target(curves, baseline="none")
    assert target == pytest.approx(1 / 11)
    assert result["none"].steps == pytest.approx(1000) and result["none"].speedup == 1.0
    assert result["cs"].steps == pytest.approx(500) and result["cs"].speedup == pytest.approx(2.0)
    assert result["slow"].steps is None and result["slow"].speedup is None


def test_given_target_and_higher_is_better() -> None:
    acc = {"base": Curve(STEPS, STEPS / 1000), "fast": Curve(STEPS, np.minimum(1.0, STEPS / 250))}
    target, result = steps_to_target(acc, baseline="base", target=0.6, lower_is_better=False)
    assert target == 0.6
    assert result["base"].steps == pytest.approx(600) and result["fast"].steps == pytest.approx(150)
    assert result["fast"].speedup == pytest.approx(4.0)


def test_baseline_that_never_reaches_a_given_target() -> None:
    _, result = steps_to_target({"base": loss_curve(100), "fast": loss_curve(10)}, "base", target=0.05)
    assert result["base"].steps is None and result["base"].speedup is None
    assert result["fast"].steps == pytest.approx(190) and result["fast"].speedup is None


def test_run_reaching_at_first_step_has_infinite_speedup() -> None:
    curves = {"base": loss_curve(100), "done": Curve(STEPS, np.zeros(len(STEPS)))}
    assert steps_to_target(curves, "base")[1]["done"].speedup == math.inf


def test_ema_smoothing_removes_a_noise_dip() -> None:
    values = 1.0 / (1.0 + STEPS / 100)
    noisy = values.copy()
    noisy[20] = 0.0  # one outlier at step 200 would count as reaching any target
    curves = {"base": loss_curve(100), "noisy": Curve(STEPS, noisy)}
    assert 190 < steps_to_target(curves, "base")[1]["noisy"].steps < 200  # interpolated towards the dip
    target, smoothed = steps_to_target(curves, "base", ema_decay=0.5)
    assert target == pytest.approx(ema(values, 0.5)[-1])
    assert smoothed["noisy"].steps > 900


def test_ema_values() -> None:
    np.testing.assert_allclose(ema(np.array([2.0, 0.0, 0.0, 4.0]), 0.5), [2.0, 1.0, 0.5, 2.25])


def test_a_crossing_is_interpolated_between_measurements() -> None:
    curve = Curve(np.array([50, 100, 150, 200]), np.array([10.0, 6.0, 2.0, 3.0]))
    assert first_step_reaching(curve, 4.0) == 125.0  # half-way from 6 to 2
    assert first_step_reaching(curve, 12.0) == 50.0  # already reached at the first measurement
    assert first_step_reaching(curve, 2.5) == pytest.approx(143.75) and first_step_reaching(curve, 1.0) is None
    assert first_step_reaching(Curve(np.array([5, 7]), np.array([1.0, 3.0])), 2.0, lower_is_better=False) == 6.0


def test_read_lightning_metrics_csv(tmp_path) -> None:
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss\n"
        "0,49,0.9,\n"
        "0,99,0.8,\n"
        "0,99,,0.75\n"
        "1,199,,0.5\n"
        "1,199,,0.45\n"
    )
    curve = read_lightning_curve(tmp_path, "val/loss")
    assert curve.steps.tolist() == [99, 199] and curve.values.tolist() == [0.75, 0.45]
    assert read_lightning_curve(tmp_path / "metrics.csv", "train/loss").steps.tolist() == [49, 99]
    with pytest.raises(DataError, match="val/fid"):
        read_lightning_curve(tmp_path, "val/fid")
    with pytest.raises(DataError, match="metrics.csv"):
        read_lightning_curve(tmp_path / "missing", "val/loss")
