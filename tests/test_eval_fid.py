"""Fréchet distance, feature statistics, their .npz cache and the torchmetrics FID/KID bridges."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from scalelong.errors import ConfigError
from scalelong.eval.fid import (
    FeatureStats,
    extract_stats,
    fid_from_stats,
    frechet_distance,
    kid_metric,
    metric_name,
    reference_stats,
    stats_from_features,
    to_uint8,
)


class Identity(nn.Module):
    """A stand-in extractor whose 'images' are already feature vectors N×D."""

    name = "toy"

    def __init__(self, dim: int, extractor_id: str = "toy/1") -> None:
        super().__init__()
        self.num_features = dim
        self.extractor_id = extractor_id

    def forward(self, x: Tensor) -> Tensor:
        return x.float()


def gaussian_features(n: int, dim: int, seed: int, shift: float = 0.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g) / dim**0.5
    return torch.randn(n, dim, generator=g) @ mix + shift


def torchmetrics_fid(a: Tensor, b: Tensor) -> float:
    metric = FrechetInceptionDistance(feature=Identity(a.shape[1]))
    metric.update(a, real=True)
    metric.update(b, real=False)
    return float(metric.compute())


@pytest.mark.parametrize("n,dim", [(600, 32), (40, 64)])
def test_frechet_distance_equals_torchmetrics(n: int, dim: int) -> None:
    a = gaussian_features(n, dim, seed=0)
    b = gaussian_features(n, dim, seed=1, shift=0.3)
    ours = fid_from_stats(stats_from_features(a, "toy/1"), stats_from_features(b, "toy/1"))
    assert ours == pytest.approx(torchmetrics_fid(a, b), rel=1e-4)


def test_frechet_distance_of_known_gaussians() -> None:
    # d² = ‖μ₁−μ₂‖² + Σ_k (√s1_k − √s2_k)² for diagonal covariances.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = 5.0 + (1 - 2) ** 2 + 0.0 + (3 - 1) ** 2
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


def test_fid_of_a_set_with_itself_is_zero() -> None:
    a = stats_from_features(gaussian_features(300, 48, seed=0), "toy/1")
    b = stats_from_features(gaussian_features(300, 48, seed=1, shift=0.3), "toy/1")
    assert abs(fid_from_stats(a, a)) < 1e-3 * np.trace(a.sigma)
    assert abs(fid_from_stats(a, a)) < 1e-6 * fid_from_stats(a, b)


def test_streamed_statistics_equal_direct() -> None:
    x = gaussian_features(250, 16, seed=2, shift=5.0)
    streamed = extract_stats(Identity(16), x.split(64))
    direct = stats_from_features(x, "toy/1")
    assert streamed.count == 250 and streamed.extractor_id == "toy/1"
    np.testing.assert_allclose(streamed.mu, direct.mu, rtol=1e-10)
    np.testing.assert_allclose(streamed.sigma, direct.sigma, rtol=1e-6, atol=1e-9)


def test_stats_npz_round_trip_is_exact(tmp_path) -> None:
    stats = stats_from_features(gaussian_features(100, 8, seed=3), "inception-2015-12-05/torchscript-7ff4a85c")
    key = dict(dataset="fashion_mnist", split="test", resolution=28)
    stats.save(tmp_path / "s.npz", key)
    loaded, loaded_key = FeatureStats.load(tmp_path / "s.npz")
    assert np.array_equal(loaded.mu, stats.mu) and np.array_equal(loaded.sigma, stats.sigma)
    assert loaded.mu.dtype == np.float64 and loaded.count == 100
    assert loaded.extractor_id == stats.extractor_id and loaded_key == key
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


def test_reference_stats_recompute_only_when_missing_or_stale(tmp_path) -> None:
    calls = []

    def compute(extractor_id: str):
        def fn() -> FeatureStats:
            calls.append(extractor_id)
            return stats_from_features(gaussian_features(50, 4, seed=len(calls)), extractor_id)

        return fn

    args = ("fashion_mnist", "train", 28)
    first = reference_stats(*args, "toy/1", compute("toy/1"), tmp_path)
    again = reference_stats(*args, "toy/1", compute("toy/1"), tmp_path)
    assert calls == ["toy/1"] and np.array_equal(first.sigma, again.sigma)
    assert (tmp_path / "fashion_mnist_train_28_toy.npz").is_file()

    changed = reference_stats(*args, "toy/2", compute("toy/2"), tmp_path)
    assert calls == ["toy/1", "toy/2"] and changed.extractor_id == "toy/2"
    reference_stats(*args, "toy/2", compute("toy/2"), tmp_path, data_id="10k")
    assert len(calls) == 3
    with pytest.raises(ValueError, match="toy/3"):
        reference_stats(*args, "toy/3", compute("toy/4"), tmp_path)


def test_mismatched_extractors_raise() -> None:
    a = stats_from_features(gaussian_features(20, 4, seed=0), "toy/1")
    b = stats_from_features(gaussian_features(20, 4, seed=1), "toy/2")
    with pytest.raises(ConfigError, match="toy/2"):
        fid_from_stats(a, b)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance`")
def test_kid_is_finite_and_near_zero_for_identical_sets() -> None:
    a = gaussian_features(200, 16, seed=6)
    b = gaussian_features(200, 16, seed=7, shift=0.5)

    def kid(x: Tensor, y: Tensor) -> tuple[float, float]:
        torch.manual_seed(0)
        metric = kid_metric(Identity(16), subsets=20, subset_size=100)
        metric.update(x, real=True)
        metric.update(y, real=False)
        mean, std = metric.compute()
        return float(mean), float(std)

    same_mean, same_std = kid(a, a)
    diff_mean, diff_std = kid(a, b)
    assert np.isfinite([same_mean, same_std, diff_mean, diff_std]).all()
    # The unbiased MMD² of a set against itself is O(1/subset_size) below zero, not exactly zero.
    assert abs(same_mean) < 0.1 * diff_mean
    assert diff_mean > 10 * diff_std


def test_to_uint8_and_metric_names() -> None:
    assert to_uint8(torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0])).tolist() == [0, 0, 128, 255, 255]
    assert metric_name("fid", Identity(2)) == "fid_toy"
    inception = Identity(2)
    inception.name = "inception"
    assert metric_name("fid", inception) == "fid" and metric_name("kid", inception) == "kid"


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_npz"])
def test_a_corrupt_stats_file_is_recomputed_with_one_line_naming_it(tmp_path, caplog, damage: str) -> None:
    calls = []

    def compute() -> FeatureStats:
        calls.append(1)
        return stats_from_features(gaussian_features(50, 4, seed=0), "toy/1")

    args = ("fashion_mnist", "train", 28, "toy/1", compute, tmp_path)
    first = reference_stats(*args)
    path = tmp_path / "fashion_mnist_train_28_toy.npz"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "not_npz": b"\x00" * 64}[damage])
    with caplog.at_level(logging.WARNING, logger="scalelong.eval.fid"):
        again = reference_stats(*args)
    assert len(calls) == 2 and np.array_equal(again.sigma, first.sigma)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "recomputing" in warnings[0]
    assert np.array_equal(FeatureStats.load(path)[0].mu, first.mu)  # the rewritten file reads
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left
