"""The reference side of FID and KID: a feature extractor, the statistics of a dataset split under it,
and the checks of a sampling setting (docs/metrics.md "FID").

:class:`FIDReference` is what ``scalelong-eval`` (:mod:`scalelong.eval.cli`) and the training-time
callback :class:`scalelong.callbacks.fid.FIDTracker` compare samples to. Metric names carry the sample
count, sampler and steps (``fid_fashion_mnist-1k/dpm_solver-25``, ``fid-10k/dpm_solver-50``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from scalelong.data.base import ImageDataModule, fixed_subset_indices
from scalelong.errors import ConfigError
from scalelong.eval.domain import domain_features
from scalelong.eval.fid import (
    FeatureStats,
    extract_stats,
    fid_from_stats,
    kid_metric,
    metric_name,
    reference_stats,
    stats_from_features,
    to_uint8,
)
from scalelong.eval.inception import load_inception
from scalelong.samplers import get_sampler

EXTRACTORS = ("domain", "inception")
SPLITS = ("train", "test")


def count_label(n: int) -> str:
    """The sample count as a metric name shows it: ``1k`` for 1000, ``10k`` for 10000, ``256`` for 256."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def sampling_label(num_samples: int, sampler: str, steps: int, guidance_scale: float = 1.0) -> str:
    """``1k/dpm_solver-25``: sample count, sampler and steps; ``-cfg<s>`` for a guidance scale s ≠ 1."""
    label = f"{count_label(num_samples)}/{sampler}-{steps}"
    return label if guidance_scale == 1.0 else f"{label}-cfg{guidance_scale:g}"


def check_sampling(num_samples: int, sampler: str, steps: int | None) -> int:
    """Validate a sampling setting before any expensive work; returns the steps (the sampler's default for None)."""
    default_steps = get_sampler(sampler).default_steps
    if num_samples < 2:
        raise ConfigError(f"FID needs at least 2 samples, got {num_samples}; raise the sample count")
    steps = steps or default_steps
    if steps < 1:
        raise ConfigError(f"steps={steps} must be at least 1 (or null for the sampler's default)")
    return steps


def check_reference(extractor: str, split: str = "train") -> None:
    """Validate the extractor and reference split names before any expensive work."""
    if extractor not in EXTRACTORS:
        raise ConfigError(f"extractor={extractor} is unknown; use one of {', '.join(EXTRACTORS)}")
    if split not in SPLITS:
        raise ConfigError(f"reference split '{split}' is unknown; use one of {', '.join(SPLITS)}")


def split_dataset(datamodule: ImageDataModule, split: str) -> Dataset:
    """``train``: the training split; ``test``: the whole held-out split the validation subset is drawn from."""
    datamodule.setup("fit")
    return datamodule.val_set.dataset if split == "test" else datamodule.train_set


def uint8_batches(
    dataset: Dataset, indices: Sequence[int], batch_size: int, num_workers: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """(uint8 images, labels) of ``dataset[indices]`` in batches, never flipped."""
    loader = DataLoader(dataset, batch_size=batch_size, sampler=[(i, False) for i in indices], num_workers=num_workers)
    with torch.random.fork_rng(devices=[]):  # the loader draws its base seed from the global RNG
        batches = iter(loader)
    for images, labels in batches:
        yield to_uint8(images), labels


def load_split(datamodule: ImageDataModule, split: str, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """A whole split in memory: images in [-1, 1] as they are after a round trip through uint8, and labels."""
    dataset = split_dataset(datamodule, split)
    images, labels = zip(*uint8_batches(dataset, range(len(dataset)), batch_size, datamodule.num_workers))
    return torch.cat(images).float() / 127.5 - 1, torch.cat(labels)


def feature_extractor(
    kind: str,
    datamodule: ImageDataModule,
    cache_dir: str | Path,
    inception_weights: str | None = None,
    domain: Mapping[str, Any] | None = None,
) -> nn.Module:
    """``inception``: Inception-v3 pool3 features; ``domain``: the dataset's domain classifier, trained on the
    training split and scored on the held-out split the first time (``domain``: its training options), then
    cached in ``cache_dir``."""
    check_reference(kind)
    if kind == "inception":
        return load_inception(inception_weights)
    name = datamodule.name
    if not datamodule.num_classes:
        raise ConfigError(f"the domain classifier learns class labels, which '{name}' has none of; "
                          "use extractor=inception")
    train, test = load_split(datamodule, "train"), load_split(datamodule, "test")
    return domain_features(name, cache_dir, train, test, **dict(domain or {}))


@dataclass
class FIDReference:
    """A feature extractor and the statistics of one dataset split under it: what FID compares samples to."""

    extractor: nn.Module
    stats: FeatureStats
    dataset: str
    split: str
    data: Dataset
    device: torch.device
    num_workers: int = 0

    @classmethod
    def build(
        cls,
        datamodule: ImageDataModule,
        extractor: str = "domain",
        split: str = "train",
        cache_dir: str | Path = "outputs/fid_stats",
        count: int | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
        inception_weights: str | None = None,
        domain: Mapping[str, Any] | None = None,
    ) -> FIDReference:
        """Extractor and statistics of ``split`` (all of it, or a fixed random subset of ``count`` images),
        read from ``cache_dir`` when they were computed before for the same data and extractor
        (:func:`scalelong.eval.fid.reference_stats`). The same data is the same content of the split (its
        ``fingerprint``: the images of an in-memory split, the files of an image folder), so two folders of
        one size never share statistics."""
        check_reference(extractor, split)
        data = split_dataset(datamodule, split)
        net = feature_extractor(extractor, datamodule, cache_dir, inception_weights, domain).to(device)
        n = len(data) if count is None else min(count, len(data))
        data_id = f"{type(datamodule).__name__} {data.fingerprint()}: {n} of {len(data)} images"

        def compute() -> FeatureStats:
            batches = uint8_batches(data, fixed_subset_indices(len(data), n, 0), batch_size, datamodule.num_workers)
            return extract_stats(net, (x.to(device) for x, _ in batches))

        name = datamodule.name
        stats = reference_stats(name, split, datamodule.image_size, net.extractor_id, compute, cache_dir, data_id)
        return cls(net, stats, name, split, data, torch.device(device), datamodule.num_workers)

    def metric_name(self, metric: str, num_samples: int, sampler: str, steps: int, guidance_scale: float = 1.0) -> str:
        """``fid_fashion_mnist-1k/dpm_solver-25``: the metric of these features and the sampling setting."""
        return f"{metric_name(metric, self.extractor)}-{sampling_label(num_samples, sampler, steps, guidance_scale)}"

    @torch.inference_mode()
    def features(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """Features N×D of images in [-1, 1], quantised to uint8 as a saved PNG would be."""
        return torch.cat([self.extractor(to_uint8(b).to(self.device)).cpu() for b in images.split(batch_size)])

    def real_features(self, count: int, seed: int, batch_size: int = 256) -> Tensor:
        """Features of ``count`` images of the reference split chosen with ``seed`` (for KID)."""
        indices = fixed_subset_indices(len(self.data), count, seed)
        batches = uint8_batches(self.data, indices, batch_size, self.num_workers)
        with torch.inference_mode():
            return torch.cat([self.extractor(x.to(self.device)).cpu() for x, _ in batches])

    def fid(self, features: Tensor) -> float:
        """FID of generated features against the reference statistics."""
        return fid_from_stats(stats_from_features(features, self.extractor.extractor_id), self.stats)


def kid(real: Tensor, fake: Tensor, subsets: int, subset_size: int | None, seed: int) -> tuple[float, float]:
    """KID mean and std of two feature sets, over ``subsets`` random subsets of ``subset_size`` features
    drawn with ``seed`` (None: half the smaller set). The std says something only when the subsets
    differ, so a subset as large as the smaller set is a ConfigError."""
    smaller = min(len(real), len(fake))
    subset_size = subset_size or smaller // 2
    if not 1 < subset_size < smaller:
        raise ConfigError(f"kid_subset_size={subset_size} must be between 2 and {smaller - 1} (below the "
                          f"{smaller} samples, or every KID subset is the same set and its ± is 0); "
                          "use kid_subset_size=null for half the samples")
    with warnings.catch_warnings():  # the warning that KID keeps all features: it is given features here
        warnings.filterwarnings("ignore", message="Metric `Kernel Inception Distance`")
        metric = kid_metric(nn.Identity(), subsets, subset_size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # torchmetrics draws the subsets from the global RNG
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def references(ref: FIDReference, datamodule: ImageDataModule, n: int, seed: int, batch_size: int) -> dict[str, float]:
    """FID of two reference sets of ``n`` images against the same statistics, to read a model's FID by:
    real images of the held-out split (what a perfect model scores at this count) and N(0, 1) noise."""
    test = split_dataset(datamodule, "test")
    indices = fixed_subset_indices(len(test), min(n, len(test)), seed)
    with torch.inference_mode():
        real = torch.cat([ref.extractor(x.to(ref.device)).cpu() for x, _ in uint8_batches(test, indices, batch_size)])
    shape = (n, datamodule.channels, datamodule.image_size, datamodule.image_size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)
    return {"real_test": ref.fid(real), "noise": ref.fid(ref.features(noise, batch_size))}
