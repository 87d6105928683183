"""Sample grids during and after training, written as PNG and logged as images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from torchvision.utils import save_image

from scalelong.callbacks.common import due
from scalelong.sampling import draw, ema_weights, grid

log = logging.getLogger(__name__)


class SampleGrid(L.Callback):
    """Every ``every_n_steps`` training steps (0: only at the end; the step rule of
    :mod:`scalelong.callbacks.common`) and when training ends, draw ``num_samples`` images with the EMA
    weights (:func:`scalelong.sampling.draw`) and save ``<run dir>/samples/step_XXXXXXX.png``, named by
    the number of optimizer steps taken.

    The samples use a fixed seed, so grids of successive steps (and of runs with other scalers) start
    from the same noise and labels and compare directly.
    """

    def __init__(
        self, every_n_steps: int = 0, num_samples: int = 64, sampler: str = "dpm_solver",
        steps: int = 25, guidance_scale: float = 1.0, seed: int = 0,
    ) -> None:
        self.every_n_steps, self.num_samples = every_n_steps, num_samples
        self.sampler, self.steps, self.guidance_scale, self.seed = sampler, steps, guidance_scale, seed

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step - 1
        last = trainer.global_step >= (trainer.max_steps or -1)  # on_train_end writes that one
        if due(step, self.every_n_steps) and not last and trainer.is_global_zero:
            with ema_weights(trainer, pl_module):
                self._write(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)  # EMAWeightAveraging has copied the EMA weights in already

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        images, _ = draw(pl_module, self.num_samples, self.num_samples, self.seed, sampler=self.sampler,
                         steps=self.steps, guidance_scale=self.guidance_scale)
        out = Path(trainer.default_root_dir) / "samples" / f"step_{trainer.global_step:07d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        picture = grid(images)
        save_image(picture, out)
        log.info("wrote %s", out)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("samples", [picture], step=trainer.global_step)
