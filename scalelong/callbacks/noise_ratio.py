"""The noise ratio r_t = ‖ε_t‖²/‖x_t‖² of the training data, once per run (paper Fig. 3a–b).

docs/metrics.md "Noise ratio" (paper Fig. 3a–b) and the choice of κ for cs (paper Sec. 4.1). r_t depends on the data and
the noise schedule only, not on the weights, so it is measured once when training starts (not
again on resume) on ``num_images`` training images with ``n_t_per_image`` draws of (t, ε)
each, using :func:`scalelong.kappa_range.noise_ratio_stats` with the callback's own generator.

==============================  ===========================================================
``noise_ratio/mean``            mean of r_t (the paper reports ≈ 1.22)
``noise_ratio/q97``             97th percentile of r_t (the paper: 97% of r_t < 5)
``noise_ratio/xt_energy``       mean of ‖x_t‖²/m (Fig. 3a, Lemma 3.2)
``noise_ratio/kappa_low``       κ with Σ_{i=1..N} κ^(2(i−1)) = mean r_t (Sec. 4.1)
``noise_ratio/kappa_high``      κ with Σ_{i=1..N} κ^(2(i−1)) = q97 of r_t
``noise_ratio/hist``            wandb only: the histogram of r_t
==============================  ===========================================================

All are logged at step 0. The histogram is also written to ``<run dir>/noise_ratio/``
``histogram.npz`` (``counts``, ``edges``, ``mean``, ``q97``, ``xt_energy``) and ``histogram.png``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure

from scalelong.atomic import write_atomic
from scalelong.callbacks.common import log_metrics, wandb_loggers
from scalelong.errors import ConfigError
from scalelong.kappa_range import NoiseRatioStats, kappa_range, noise_ratio_stats
from scalelong.plots.figures import plot_histogram

log = logging.getLogger(__name__)


class NoiseRatio(L.Callback):
    """Logs ``noise_ratio/*`` once and saves the r_t histogram (see the module docstring).

    Args:
        num_images: training images used (chosen at random with ``seed``).
        n_t_per_image: (t, ε) draws per image.
        bins: histogram bins.
        seed: seed of the image choice and of the (t, ε) draws.
    """

    def __init__(self, num_images: int = 2000, n_t_per_image: int = 8, bins: int = 100, seed: int = 0) -> None:
        self.num_images, self.n_t_per_image, self.bins, self.seed = num_images, n_t_per_image, bins, seed
        self.done = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.done:
            return
        stats = self.measure(trainer, pl_module)
        low, high = kappa_range(stats.mean, stats.high, pl_module.model.num_skips)
        log_metrics(trainer, {
            "noise_ratio/mean": stats.mean,
            "noise_ratio/q97": stats.high,
            "noise_ratio/xt_energy": stats.mean_xt_energy,
            "noise_ratio/kappa_low": low,
            "noise_ratio/kappa_high": high,
        }, step=0)
        if trainer.is_global_zero:
            save_histogram(stats, Path(trainer.default_root_dir) / "noise_ratio")
        for logger in wandb_loggers(trainer):
            import wandb

            hist = wandb.Histogram(np_histogram=(stats.hist_counts.numpy(), stats.hist_edges.numpy()))
            logger.experiment.log({"noise_ratio/hist": hist, "trainer/global_step": 0})
        self.done = True

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> NoiseRatioStats:
        train_set = getattr(trainer.datamodule, "train_set", None)
        if train_set is None:
            raise ConfigError("the noise_ratio callback reads datamodule.train_set; train with a scalelong data module")
        g = torch.Generator().manual_seed(self.seed)
        indices = torch.randperm(len(train_set), generator=g)[: self.num_images].tolist()
        with torch.random.fork_rng(devices=[]):  # a flipped training item would draw from the global RNG
            images = torch.stack([train_set[i][0] for i in indices])
        return noise_ratio_stats(pl_module.diffusion, images, self.n_t_per_image, generator=g, bins=self.bins)

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = bool(state_dict["done"])


def save_histogram(stats: NoiseRatioStats, out_dir: Path) -> Path:
    """Write ``histogram.npz`` and ``histogram.png`` (Fig. 3b) into ``out_dir``; returns the .npz path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts, edges = stats.hist_counts.numpy(), stats.hist_edges.numpy()
    path = out_dir / "histogram.npz"
    npz = io.BytesIO()  # written whole or not at all: the dashboard reads it
    np.savez(npz, counts=counts, edges=edges, mean=stats.mean, q97=stats.high, xt_energy=stats.mean_xt_energy)
    write_atomic(path, npz.getvalue())
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    plot_histogram(fig.add_subplot(), counts, edges, stats.mean, stats.high)
    fig.savefig(out_dir / "histogram.png", dpi=100)
    log.info("noise ratio: mean %.4g, q97 %.4g, E|x_t|^2/m %.4g -> %s",
             stats.mean, stats.high, stats.mean_xt_energy, path)
    return path

