"""One evaluation of a module's samples: FID and KID against its dataset, what ``scalelong-eval`` reports
(:mod:`scalelong.eval.cli` writes and prints it; ``scalelong-bench`` times it).

The module draws ``n_samples`` images with :func:`scalelong.sampling.draw`; their features are compared with the
statistics of the reference split (:class:`scalelong.eval.reference.FIDReference`, computed on first use and cached)
for FID, and with the features of as many real images of that split for KID (mean ± std over subsets).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from scalelong.data.base import ImageDataModule
from scalelong.eval.reference import FIDReference, kid, references
from scalelong.lit import DiffusionModule
from scalelong.sampling import draw


@dataclass
class Evaluation:
    """The samples, their metrics under their names, and how they were computed."""

    images: Tensor
    labels: Tensor
    reference: FIDReference
    fid_name: str
    kid_name: str
    metrics: dict[str, float]
    kid_std: float
    seconds_per_sample: float
    references: dict[str, float] | None

    @property
    def details(self) -> dict[str, Any]:
        """The extractor and the reference the metrics were computed with (``scalelong-eval``'s JSON)."""
        ref = self.reference
        return {"extractor": ref.extractor.extractor_id, "extractor_accuracy": getattr(ref.extractor, "accuracy", None),
                "reference": {"dataset": ref.dataset, "split": ref.split, "images": ref.stats.count}}


def evaluate(module: DiffusionModule, datamodule: ImageDataModule, cfg: DictConfig | Mapping[str, Any], steps: int,
             device: str | torch.device) -> Evaluation:
    """FID and KID of ``cfg.n_samples`` samples of ``module`` (sampler, ``steps``, guidance and seed of ``cfg``, an
    ``eval`` config) against ``datamodule``'s split ``cfg.ref_split``; with ``cfg.references``, also the FID of as
    many real held-out images and of noise."""
    cfg = OmegaConf.create(dict(cfg)) if not isinstance(cfg, DictConfig) else cfg
    domain = OmegaConf.to_container(cfg.domain) if cfg.domain else None
    ref = FIDReference.build(datamodule, cfg.extractor, cfg.ref_split, cfg.cache_dir, cfg.ref_count, device,
                             cfg.batch_size, cfg.inception_weights, domain)
    start = time.perf_counter()
    images, labels = draw(module, cfg.n_samples, cfg.batch_size, cfg.seed, sampler=cfg.sampler, steps=steps,
                          guidance_scale=cfg.guidance_scale)
    seconds = time.perf_counter() - start
    fake = ref.features(images, cfg.batch_size)
    real = ref.real_features(min(cfg.n_samples, len(ref.data)), cfg.seed, cfg.batch_size)
    kid_mean, kid_std = kid(real, fake, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed)
    fid_name, kid_name = (ref.metric_name(m, cfg.n_samples, cfg.sampler, steps, cfg.guidance_scale)
                          for m in ("fid", "kid"))
    extra = references(ref, datamodule, cfg.n_samples, cfg.seed, cfg.batch_size) if cfg.references else None
    return Evaluation(images, labels, ref, fid_name, kid_name, {fid_name: ref.fid(fake), kid_name: kid_mean}, kid_std,
                      seconds / cfg.n_samples, extra)
