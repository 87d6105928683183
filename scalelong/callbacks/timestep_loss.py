"""ε-prediction loss of the training batch by quartile of the timestep t.

Which noise levels the instability hurts (complements docs/metrics.md; paper Sec. 3.3 argues a sensitive
UNet gives an oscillating loss). Every ``every_n_steps`` steps, before the optimizer step, the
training batch of that step is evaluated once more at the weights the step's loss was computed
with, in eval mode without gradients, with the callback's own draws: sample j gets quartile
q = j mod 4 and t uniform in that quartile of {0, …, T − 1}, and a fresh ε (and input-noise δ).
The per-sample losses (paper Eq. (2), Ho et al. Eq. (14)) are averaged per quartile:

==============================  ===========================================================
``loss_t/q1`` … ``loss_t/q4``   mean per-sample loss with t in the 1st … 4th quarter of
                                {0, …, T − 1} (q1: least noise)
==============================  ===========================================================

The training step's own losses have t uniform over all of
{0, …, T − 1}, so a small batch can leave a quartile empty; the stratified draws here give every
quartile B/4 samples, at the cost of one extra forward on the logging steps.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from scalelong.callbacks.common import due, evaluating, log_metrics
from scalelong.seeds import derived_seed

QUARTILES = 4


class TimestepLoss(L.Callback):
    """Logs ``loss_t/q1`` … ``loss_t/q4`` (see the module docstring).

    Args:
        every_n_steps: measure on every n-th training batch.
        seed: base seed of the callback's (t, ε, δ) draws (combined with the step).
    """

    def __init__(self, every_n_steps: int = 50, seed: int = 0) -> None:
        self.every_n_steps, self.seed = every_n_steps, seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        step = trainer.global_step
        if due(step, self.every_n_steps):
            log_metrics(trainer, self.measure(pl_module, batch, step), step)

    @torch.no_grad()
    def measure(self, pl_module: L.LightningModule, batch: Any, step: int) -> dict[str, float]:
        x0, y = batch
        diffusion = pl_module.diffusion
        g = torch.Generator().manual_seed(derived_seed(self.seed, step))
        quartile = torch.arange(len(x0)) % QUARTILES
        width = diffusion.num_timesteps / QUARTILES
        t = ((quartile + torch.rand(len(x0), generator=g)) * width).long().clamp_max(diffusion.num_timesteps - 1)
        noise = torch.randn(x0.shape, generator=g)
        delta = torch.randn(x0.shape, generator=g)
        with evaluating(pl_module.model) as model:
            losses = diffusion.loss(model, x0, pl_module.labels(y), t=t.to(x0.device),
                                    noise=noise.to(x0.device), delta=delta.to(x0.device)).cpu()
        return {f"loss_t/q{q + 1}": float(losses[quartile == q].mean()) for q in range(QUARTILES)
                if (quartile == q).any()}
