"""The κ range of constant scaling (paper Sec. 4.1): noise-ratio statistics, root solving, choice, CLI."""

import logging
import math

import numpy as np
import pytest
import torch

from scalelong.diffusion import Diffusion
from scalelong.errors import ConfigError
from scalelong.kappa_range import (
    choose_kappa,
    estimate_kappa,
    format_report,
    kappa_range,
    noise_ratio_stats,
    skip_energy,
    solve_kappa,
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def numpy_root(target: float, num_skips: int) -> float:
    """κ from the real root in (0, 1) of Σ_{i<N} u^i − target (u = κ²), by numpy.roots."""
    coeffs = [1.0] * num_skips
    coeffs[-1] -= target  # numpy.roots wants the highest power first; the constant term is last
    roots = [r.real for r in np.roots(coeffs) if abs(r.imag) < 1e-9 and 0 < r.real < 1]
    assert len(roots) == 1
    return math.sqrt(roots[0])


@pytest.mark.parametrize("target", [1.01, 1.25, 1.5, 1.99])
def test_two_skips_closed_form(target):
    # N = 2: 1 + κ² = target, so κ = sqrt(target − 1) exactly.
    assert solve_kappa(target, 2) == pytest.approx(math.sqrt(target - 1), abs=1e-10)


@pytest.mark.parametrize("target", [1.22, 2.0, 3.5, 5.0])
def test_six_skips_matches_polynomial_root(target):
    assert solve_kappa(target, 6) == pytest.approx(numpy_root(target, 6), abs=1e-10)


def test_paper_statistics_for_uvit_depth_12():
    # Paper Sec. 4.1: mean r_t ≈ 1.22, 97% of r_t < 5; U-ViT depth 12 has N = 6 skips.
    low, high = kappa_range(1.22, 5.0, 6)
    assert low == pytest.approx(numpy_root(1.22, 6), abs=1e-10)
    assert high == pytest.approx(numpy_root(5.0, 6), abs=1e-10)
    # Hand-computed: 0.4247 and 0.9626 (the paper states [0.5, 0.95] for its settings).
    assert (round(low, 4), round(high, 4)) == (0.4247, 0.9626)
    assert choose_kappa(low, high) == pytest.approx(0.6394, abs=1e-4)
    # The 12-skip DDPM UNet: the upper end drops to 0.904.
    assert kappa_range(1.22, 5.0, 12)[1] == pytest.approx(numpy_root(5.0, 12), abs=1e-10)


def test_solution_round_trips_through_the_skip_energy():
    for target in torch.linspace(1.05, 5.9, 12).tolist():
        assert skip_energy(solve_kappa(target, 6), 6) == pytest.approx(target, rel=1e-9)


def test_target_at_or_below_one_gives_zero(caplog):
    assert solve_kappa(1.0, 6) == 0.0
    assert solve_kappa(0.7, 6) == 0.0
    with caplog.at_level(logging.WARNING, logger="scalelong.kappa_range"):
        low, high = kappa_range(0.9, 2.0, 6)
    assert low == 0.0 and 0 < high < 1
    assert "kappa_low -> 0" in caplog.text


def test_target_at_or_above_n_is_clipped_to_one(caplog):
    assert solve_kappa(6.0, 6) == 1.0
    assert solve_kappa(9.0, 6) == 1.0
    with caplog.at_level(logging.WARNING, logger="scalelong.kappa_range"):
        assert kappa_range(1.22, 5.0, 3)[1] == 1.0
    assert "clipped to 1" in caplog.text


def test_single_skip_has_no_free_kappa():
    assert solve_kappa(1.5, 1) == 1.0
    assert solve_kappa(0.5, 1) == 0.0


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="exceeds the high quantile"):
        kappa_range(5.0, 1.22, 6)
    with pytest.raises(ConfigError, match="num_skips"):
        solve_kappa(2.0, 0)
    with pytest.raises(ConfigError, match="finite"):
        solve_kappa(float("nan"), 6)
    with pytest.raises(ConfigError, match="rule"):
        choose_kappa(0.4, 0.9, "median")


def test_choose_kappa_rules():
    assert choose_kappa(0.4, 0.9) == pytest.approx(0.6)
    assert choose_kappa(0.4, 0.9, "arithmetic") == pytest.approx(0.65)
    assert choose_kappa(0.4, 0.9, "low") == 0.4
    assert choose_kappa(0.4, 0.9, "high") == 0.9
    # A zero lower end makes the geometric midpoint degenerate: fall back to the arithmetic one.
    assert choose_kappa(0.0, 0.8) == pytest.approx(0.4)


def test_noise_ratio_of_binary_images_is_one():
    # ‖x_0‖²/m = 1 gives E‖x_t‖² = m at every t, so r_t ≈ 1 up to O(1/sqrt(m)) fluctuations.
    x0 = torch.where(torch.rand(64, 1, 32, 32, generator=seeded(0)) < 0.5, -1.0, 1.0)
    stats = noise_ratio_stats(Diffusion(), x0, n_t_per_image=16, generator=seeded(1))
    assert stats.num_samples == 64 * 16
    assert stats.mean == pytest.approx(1.0, abs=0.01)
    assert stats.mean_xt_energy == pytest.approx(1.0, abs=0.01)
    assert stats.high < 1.1


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_noise_ratio_of_uniform_data_matches_the_schedule(schedule):
    # For x_0 ~ U[−1, 1]^m, ‖x_t‖²/m ≈ 1 − 2ᾱ_t/3, so r_t ≈ 1/(1 − 2ᾱ_t/3) (large m) and
    # E‖x_t‖²/m = 1 − 2·E_t[ᾱ_t]/3 (Lemma 3.2).
    diffusion = Diffusion(1000, schedule)
    alpha_bar = diffusion.alphas_cumprod
    x0 = torch.rand(2000, 256, generator=seeded(0)) * 2 - 1
    stats = noise_ratio_stats(diffusion, x0, n_t_per_image=8, generator=seeded(1), bins=40)
    assert stats.mean == pytest.approx(float((1 / (1 - 2 * alpha_bar / 3)).mean()), rel=0.01)
    assert stats.mean_xt_energy == pytest.approx(1 - 2 * float(alpha_bar.mean()) / 3, abs=0.01)
    assert stats.ratios.min() > 0.8 and stats.high < 3.5
    assert float(stats.hist_counts.sum()) == stats.num_samples == 16000
    assert len(stats.hist_edges) == len(stats.hist_counts) + 1 == 41
    assert stats.quantile == 0.97
    assert stats.high == pytest.approx(float(torch.quantile(stats.ratios, 0.97)))


def test_noise_ratio_accepts_loader_batches_and_is_reproducible():
    x = torch.rand(30, 1, 8, 8, generator=seeded(0)) * 2 - 1
    batches = [(x[:16], torch.zeros(16)), (x[16:], torch.zeros(14))]
    first = noise_ratio_stats(Diffusion(), batches, n_t_per_image=2, generator=seeded(3))
    again = noise_ratio_stats(Diffusion(), batches, n_t_per_image=2, generator=seeded(3))
    assert first.num_samples == 60
    assert torch.equal(first.ratios, again.ratios)
    capped = noise_ratio_stats(Diffusion(), iter(batches), n_t_per_image=2, generator=seeded(3), max_images=20)
    assert capped.num_samples == 40
    with pytest.raises(ConfigError, match="no images"):
        noise_ratio_stats(Diffusion(), [], generator=seeded(3))


def test_auto_kappa_and_report_agree():
    x0 = torch.rand(500, 256, generator=seeded(0)) * 2 - 1
    estimate = estimate_kappa(Diffusion(), x0, 6, generator=seeded(1))
    kappa = estimate[3]
    stats = noise_ratio_stats(Diffusion(), x0, generator=seeded(1))
    assert kappa == pytest.approx(choose_kappa(*kappa_range(stats.mean, stats.high, 6)))
    report = format_report(Diffusion(), 6, "geometric", estimate)
    assert f"{stats.mean:.4f}" in report and f"{kappa:.4f}" in report and "q97" in report


def test_kappa_for_a_run_config_uses_its_data_schedule_and_model_depth(tmp_path):
    from scalelong.config import compose
    from scalelong.kappa_range import kappa_for_config

    cfg = compose(["data=digits", "model=uvit_deep", "kappa_tool.num_images=300",
                   f"paths.data_dir={tmp_path}"], config_name="kappa")
    kappa, report = kappa_for_config(cfg, report=True)
    assert "kappa range for N = 10 skips" in report and f"{kappa:.4f}" in report
    low, high = (float(v) for v in report.split("skips: [")[1].split("]")[0].split(","))
    assert 0 < low < kappa < high <= 1


@pytest.mark.parametrize("override,message", [
    ("kappa_tool.num_images=0", "kappa_tool.num_images=0 must be a whole number of at least 2 (training images "
                                "x_0 measured); set it, e.g. kappa_tool.num_images=2000"),
    ("kappa_tool.n_t=0", "kappa_tool.n_t=0 must be a whole number of at least 1 (timesteps per image); set it, "
                         "e.g. kappa_tool.n_t=8"),
])
def test_a_bad_sample_size_of_the_kappa_tool_is_one_config_error(override, message):
    from scalelong.config import compose
    from scalelong.kappa_range import kappa_for_config

    with pytest.raises(ConfigError) as err:
        kappa_for_config(compose(["data=digits", override], config_name="kappa"))
    assert str(err.value) == message
