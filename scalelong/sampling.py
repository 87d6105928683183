"""Drawing samples from a trained module: the one sampling function, its label policy, and the EMA swap.

``scalelong-sample``, ``scalelong-eval``, the sample-grid callback and the FID callback all draw with
:func:`draw`, so a grid, an FID value and a saved ``.npz`` of the same (weights, seed, sampler, steps)
hold the same images. The math is :meth:`scalelong.diffusion.Diffusion.sample`.

Label policy. A class-conditional model gets labels drawn uniformly over its classes by the same seeded
generator that draws the noise (the label distribution of the balanced datasets here: Fashion-MNIST,
CIFAR-10, ImageNet); an unconditional model gets none.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torchvision.utils import make_grid, save_image

from scalelong.atomic import write_atomic
from scalelong.lit import DiffusionModule

log = logging.getLogger(__name__)

GRID_MAX = 256  # at most this many samples go into a saved grid picture


def draw(
    module: DiffusionModule,
    num_samples: int,
    batch_size: int,
    seed: int,
    sampler: str = "dpm_solver",
    steps: int | None = None,
    guidance_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_samples`` images in [-1, 1] (N×C×H×W, on the CPU) and their labels (N, int64), drawn in
    batches of ``batch_size`` with ``module``'s current weights; the same for the same ``seed``.

    Labels follow the module docstring's policy; for an unconditional model they are zeros and the
    model gets none. The labels are drawn first, so the noise of sample k depends only on ``seed``
    and on the batches before it.
    """
    generator = torch.Generator(device=module.device).manual_seed(seed)
    num_classes = module.model.num_classes
    labels = torch.randint(0, max(num_classes, 1), (num_samples,), generator=generator, device=module.device)
    images = []
    for start in range(0, num_samples, batch_size):
        y = labels[start : start + batch_size]
        images.append(module.sample(len(y), y=y if num_classes else None, generator=generator, sampler=sampler,
                                    steps=steps, guidance_scale=guidance_scale).cpu())
    return torch.cat(images), labels.cpu()


def grid(images: torch.Tensor) -> torch.Tensor:
    """The first :data:`GRID_MAX` images in [-1, 1] as one square-ish 3×H'×W' grid in [0, 1]."""
    shown = images[:GRID_MAX]
    return make_grid((shown + 1) / 2, nrow=int(len(shown) ** 0.5))


def save_samples(images: torch.Tensor, labels: torch.Tensor, out: Path, fix: str = "") -> None:
    """``<out>.png`` (a grid) and ``<out>.npz`` (``images``: N×H×W×C uint8, ``labels``: N int64), the
    layout ADM's and U-ViT's evaluation scripts read (``arr_0`` is an alias of ``images``). Each is written
    whole or not at all (:func:`scalelong.atomic.write_atomic`; a full disk raises its ``OutputError``,
    naming ``fix``)."""
    png, npz = io.BytesIO(), io.BytesIO()
    save_image(grid(images), png, format="png")
    pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez(npz, images=pixels, arr_0=pixels, labels=labels.numpy())
    write_atomic(out.with_suffix(".png"), png.getvalue(), fix)
    write_atomic(out.with_suffix(".npz"), npz.getvalue(), fix)
    log.info("wrote %s.png and %s.npz (%d samples)", out, out, len(images))


@contextlib.contextmanager
def ema_weights(trainer: L.Trainer, pl_module: L.LightningModule) -> Iterator[None]:
    """The averaged (EMA) weights in ``pl_module`` for the block, the training weights back afterwards.

    Uses the hooks by which Lightning's ``WeightAveraging`` itself swaps the weights around a
    validation epoch (``on_validation_epoch_start`` / ``_end``), so nothing changes for a run without
    weight averaging, or before its average exists.
    """
    averaging = [cb for cb in trainer.callbacks if isinstance(cb, WeightAveraging)]
    for cb in averaging:
        cb.on_validation_epoch_start(trainer, pl_module)
    try:
        yield
    finally:
        for cb in reversed(averaging):
            cb.on_validation_epoch_end(trainer, pl_module)
