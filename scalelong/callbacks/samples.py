"""Sample grids during and after training, written as PNG and logged as images."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torchvision.utils import make_grid, save_image

log = logging.getLogger(__name__)


class SampleGrid(L.Callback):
    """Every ``every_n_steps`` training steps (0: only at the end) and when training ends, draw
    ``num_samples`` images with the EMA weights and save ``<run dir>/samples/step_XXXXXXX.png``.

    The samples use a fixed generator, so grids of successive steps (and of runs with other
    scalers) start from the same noise and compare directly.
    """

    def __init__(
        self, every_n_steps: int = 0, num_samples: int = 64, sampler: str = "dpm_solver",
        steps: int = 25, guidance_scale: float = 1.0, seed: int = 0,
    ) -> None:
        self.every_n_steps, self.num_samples = every_n_steps, num_samples
        self.sampler, self.steps, self.guidance_scale, self.seed = sampler, steps, guidance_scale, seed

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step < (trainer.max_steps or -1):
            self._write(trainer, pl_module, ema=_ema_callback(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, ema=None)  # EMAWeightAveraging has copied EMA in already

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, ema) -> None:
        if not trainer.is_global_zero:
            return
        if ema is not None:
            ema._swap_models(pl_module)  # Lightning's own swap, as in its validation hooks
        try:
            images = self.draw(pl_module)
        finally:
            if ema is not None:
                ema._swap_models(pl_module)
        out = Path(trainer.default_root_dir) / "samples" / f"step_{trainer.global_step:07d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        grid = make_grid((images + 1) / 2, nrow=int(len(images) ** 0.5))
        save_image(grid, out)
        log.info("wrote %s", out)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("samples", [grid], step=trainer.global_step)

    def draw(self, pl_module: L.LightningModule) -> torch.Tensor:
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        m = pl_module.model
        y = None
        if m.num_classes:
            y = torch.arange(self.num_samples, device=pl_module.device) % m.num_classes
        return pl_module.sample(
            self.num_samples, sampler=self.sampler, steps=self.steps, y=y,
            guidance_scale=self.guidance_scale, generator=generator,
        ).cpu()


def _ema_callback(trainer: L.Trainer):
    from lightning.pytorch.callbacks import WeightAveraging

    for cb in trainer.callbacks:
        if isinstance(cb, WeightAveraging) and cb._average_model is not None:
            return cb
    return None
