"""FID during training, and the best checkpoint by it (docs/metrics.md "FID"; "Convergence speed-up" from FID
at a fixed sample count).

When fit starts, rank zero builds the feature extractor and the reference statistics of the training
data (:class:`scalelong.eval.reference.FIDReference`: the domain classifier by default, Inception with
``extractor=inception``; both cached on disk, so later runs and ``scalelong-eval`` reuse them). Every
``every_n_steps`` steps (the step rule of :mod:`scalelong.callbacks.common`) rank zero swaps the EMA
weights in (:func:`scalelong.sampling.ema_weights`), draws ``num_samples`` images with
:func:`scalelong.sampling.draw` (a fixed seed, so successive
values differ only by the weights), swaps the training weights back and logs FID under its full name,
e.g. ``fid_fashion_mnist-256/dpm_solver-10``, to every logger; other ranks skip the measurement. The
curve in ``metrics.csv`` is what :func:`scalelong.eval.speedup.read_lightning_curve` reads for the
steps-to-target speed-up.

When a value is the lowest so far, every rank calls ``trainer.save_checkpoint(best_path)``. With
Lightning's ``EMAWeightAveraging`` that file, like every checkpoint of the run, holds the EMA weights
(the ones just measured) as ``state_dict`` and the training weights as ``current_model_state``, so
``scalelong-eval`` and ``scalelong-sample`` on it use the measured weights. The best value and its step
are part of the callback state, so a resumed run keeps them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import lightning as L

from scalelong.callbacks.common import due, log_metrics
from scalelong.eval.reference import FIDReference, check_reference, check_sampling
from scalelong.sampling import draw, ema_weights

log = logging.getLogger(__name__)


class FIDTracker(L.Callback):
    """Logs FID-``num_samples`` of the EMA weights every ``every_n_steps`` steps and keeps the best checkpoint.

    Args:
        every_n_steps: measure after every n-th training step.
        num_samples, batch_size, sampler, steps, guidance_scale, seed: the samples
            (see :func:`scalelong.sampling.draw`).
        extractor: ``domain`` (the dataset's classifier, CPU scale) or ``inception``.
        ref_split, ref_count: the reference split and, if set, a fixed random subset of it.
        cache_dir: where reference statistics and domain classifiers are cached.
        inception_weights: a weights file for ``extractor=inception`` (default: the first available).
        best_path: where the best checkpoint is saved (None: not saved).
        domain: training options of the domain classifier when none is cached.
    """

    def __init__(
        self,
        every_n_steps: int = 1000,
        num_samples: int = 256,
        batch_size: int = 256,
        sampler: str = "dpm_solver",
        steps: int = 10,
        guidance_scale: float = 1.0,
        extractor: str = "domain",
        ref_split: str = "train",
        ref_count: int | None = None,
        cache_dir: str = "outputs/fid_stats",
        inception_weights: str | None = None,
        best_path: str | None = None,
        seed: int = 0,
        domain: Mapping[str, Any] | None = None,
    ) -> None:
        self.steps = check_sampling(num_samples, sampler, steps)
        check_reference(extractor, ref_split)
        self.every_n_steps, self.num_samples, self.batch_size = every_n_steps, num_samples, batch_size
        self.sampler, self.guidance_scale, self.seed = sampler, guidance_scale, seed
        self.extractor, self.ref_split, self.ref_count = extractor, ref_split, ref_count
        self.cache_dir, self.inception_weights, self.best_path = cache_dir, inception_weights, best_path
        self.domain = dict(domain or {})
        self.reference: FIDReference | None = None
        self.name: str | None = None
        self.best: float | None = None
        self.best_step: int | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(extractor=self.extractor, num_samples=self.num_samples,
                                        sampler=self.sampler, steps=self.steps, guidance_scale=self.guidance_scale)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.reference = FIDReference.build(
            trainer.datamodule, self.extractor, self.ref_split, self.cache_dir, self.ref_count, pl_module.device,
            self.batch_size, self.inception_weights, self.domain,
        )
        self.name = self.reference.metric_name("fid", self.num_samples, self.sampler, self.steps, self.guidance_scale)
        log.info("tracking %s every %d steps (features %s)", self.name, self.every_n_steps,
                 self.reference.extractor.extractor_id)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step - 1
        if not due(step, self.every_n_steps):
            return
        value = self.measure(trainer, pl_module) if trainer.is_global_zero else None
        value = trainer.strategy.broadcast(value, src=0)
        if trainer.is_global_zero:
            log_metrics(trainer, {self.name: value}, step)
            pl_module.log(self.name, value, logger=False)  # in callback_metrics, hence in summary.json
        if math.isfinite(value) and (self.best is None or value < self.best):
            self.best, self.best_step = value, step
            if self.best_path:
                trainer.save_checkpoint(self.best_path)  # on every rank: it synchronises them
                if trainer.is_global_zero:
                    log.info("best %s = %.4f at step %d: saved %s", self.name, value, step, self.best_path)

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        """FID of ``num_samples`` images drawn with the EMA weights (the current weights without EMA)."""
        start = time.perf_counter()
        with ema_weights(trainer, pl_module):
            images, _ = draw(pl_module, self.num_samples, self.batch_size, self.seed, sampler=self.sampler,
                             steps=self.steps, guidance_scale=self.guidance_scale)
        value = self.reference.fid(self.reference.features(images, self.batch_size))
        log.info("%s = %.4f (%.1f s)", self.name, value, time.perf_counter() - start)
        return value

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_step = state_dict["best"], state_dict["best_step"]
