"""FID and KID from a feature extractor, and cached reference statistics (docs/metrics.md "FID").

FID is the Fréchet distance between Gaussians fitted to the features of two image sets,

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½),

computed here from (μ, Σ) pairs so that reference statistics can be computed once and cached as
``.npz``. KID (the unbiased polynomial-kernel MMD) needs all features and is taken from torchmetrics.
Extractors are :class:`~scalelong.eval.inception.InceptionFeatures` (metric names ``fid``, ``kid``) or
:class:`~scalelong.eval.domain.DomainFeatures` (``fid_<dataset>``, ``kid_<dataset>``); both take uint8
images (:func:`to_uint8`) and carry ``extractor_id``, ``name`` and ``num_features``.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.image.kid import KernelInceptionDistance

from scalelong.atomic import UNREADABLE, unreadable_reason, write_atomic
from scalelong.errors import ConfigError

log = logging.getLogger(__name__)


def to_uint8(images: Tensor) -> Tensor:
    """Float images in [-1, 1] (model samples) → uint8 in [0, 255], rounded as when saved to PNG."""
    return ((images.detach() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def metric_name(metric: str, extractor: nn.Module) -> str:
    """``fid``/``kid`` for Inception features, ``fid_<dataset>``/``kid_<dataset>`` for domain features."""
    return metric if extractor.name == "inception" else f"{metric}_{extractor.name}"


@dataclass(frozen=True)
class FeatureStats:
    """Mean μ (D,), unbiased covariance Σ (D×D), both float64, of ``count`` feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    extractor_id: str

    def save(self, path: str | os.PathLike, key: dict[str, str | int]) -> None:
        """Write an ``.npz`` holding the statistics and ``key`` (what they were computed from), atomically
        (:func:`scalelong.atomic.write_atomic`)."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            mu=self.mu,
            sigma=self.sigma,
            count=np.int64(self.count),
            extractor_id=np.str_(self.extractor_id),
            key=np.str_(json.dumps(key, sort_keys=True)),
        )
        write_atomic(Path(path), buffer.getvalue())

    @staticmethod
    def load(path: str | os.PathLike) -> tuple[FeatureStats, dict[str, str | int]]:
        """Read an ``.npz`` written by :meth:`save`; returns the statistics and their key. A damaged file raises
        one of :data:`scalelong.atomic.UNREADABLE`."""
        with np.load(path, allow_pickle=False) as f:
            stats = FeatureStats(f["mu"], f["sigma"], int(f["count"]), str(f["extractor_id"]))
            return stats, json.loads(str(f["key"]))


def stats_from_features(features: Tensor | np.ndarray, extractor_id: str) -> FeatureStats:
    """Statistics of a feature matrix N×D."""
    x = np.asarray(features, dtype=np.float64)
    return FeatureStats(x.mean(0), np.cov(x, rowvar=False), len(x), extractor_id)


@torch.inference_mode()
def extract_stats(extractor: nn.Module, batches: Iterable[Tensor]) -> FeatureStats:
    """Statistics of the extractor's features over uint8 image batches, accumulated in float64.

    Streams Σx and Σxxᵀ (as torchmetrics' FID does), so no feature matrix is kept.
    """
    total, outer, count = None, None, 0
    for images in batches:
        f = extractor(images).double()
        total = f.sum(0) if total is None else total + f.sum(0)
        outer = f.T @ f if outer is None else outer + f.T @ f
        count += len(f)
    if count < 2:
        raise ValueError(f"feature statistics need at least 2 images, got {count}")
    mu = total / count
    sigma = (outer - count * torch.outer(mu, mu)) / (count - 1)
    return FeatureStats(mu.cpu().numpy(), sigma.cpu().numpy(), count, extractor.extractor_id)


def _eigh_psd(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (clamped at 0) and eigenvectors of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return np.clip(w, 0, None), v


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance d² = ‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁^½ Σ₂ Σ₁^½)^½ of two Gaussians.

    Σ₁^½ Σ₂ Σ₁^½ is symmetric with the eigenvalues of Σ₁Σ₂, so Tr (Σ₁Σ₂)^½ is the sum of the square
    roots of its eigenvalues; symmetric eigendecompositions keep this real and stable for singular Σ.
    """
    w1, v1 = _eigh_psd(np.asarray(sigma1, np.float64))
    root1 = (v1 * np.sqrt(w1)) @ v1.T
    w, _ = _eigh_psd(root1 @ np.asarray(sigma2, np.float64) @ root1)
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(w).sum())


def fid_from_stats(generated: FeatureStats, reference: FeatureStats) -> float:
    """FID between two sets of statistics from the same extractor."""
    if generated.extractor_id != reference.extractor_id:
        raise ConfigError(
            f"FID compares features of one network, got '{generated.extractor_id}' and "
            f"'{reference.extractor_id}'; recompute the reference statistics with the current extractor"
        )
    return frechet_distance(generated.mu, generated.sigma, reference.mu, reference.sigma)


def reference_stats(
    dataset: str,
    split: str,
    resolution: int,
    extractor_id: str,
    compute_fn: Callable[[], FeatureStats],
    cache_dir: str | os.PathLike,
    data_id: str = "",
) -> FeatureStats:
    """Reference statistics of (dataset, split, resolution) under one extractor, cached as ``.npz``.

    The file ``<cache_dir>/<dataset>_<split>_<resolution>_<extractor family>.npz`` is reused when its key
    (dataset, split, resolution, full ``extractor_id``, ``data_id``) matches; otherwise — missing, or
    stale because e.g. the weights changed, or unreadable (one warning names it) — ``compute_fn()`` is called and
    its result written atomically.
    ``data_id`` names anything else the statistics depend on (sample count, data version).
    """
    key: dict[str, str | int] = dict(
        dataset=dataset, split=split, resolution=resolution, extractor_id=extractor_id, data_id=data_id
    )
    family = extractor_id.split("/")[0]
    path = Path(cache_dir) / f"{dataset}_{split}_{resolution}_{family}.npz"
    if path.exists():
        try:
            stats, stored_key = FeatureStats.load(path)
        except UNREADABLE as err:
            log.warning("reference statistics %s cannot be read (%s); recomputing", path, unreadable_reason(err))
        else:
            if stored_key == key:
                log.info("reference statistics %s (%d images, %s)", path, stats.count, extractor_id)
                return stats
            log.info("reference statistics %s are stale (%s, now %s); recomputing", path, stored_key, key)
    stats = compute_fn()
    if stats.extractor_id != extractor_id:
        raise ValueError(f"compute_fn returned statistics of '{stats.extractor_id}', expected '{extractor_id}'")
    stats.save(path, key)
    log.info("wrote reference statistics %s (%d images, %s)", path, stats.count, extractor_id)
    return stats


def kid_metric(extractor: nn.Module, subsets: int = 100, subset_size: int = 1000) -> KernelInceptionDistance:
    """torchmetrics KID (mean and std over ``subsets`` random subsets) over ``extractor`` (uint8 images)."""
    return KernelInceptionDistance(feature=extractor, subsets=subsets, subset_size=subset_size)
