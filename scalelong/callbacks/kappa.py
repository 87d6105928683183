"""κ readout of every LSC scaler, and the LS gate protocol of paper Fig. 7 with its κ^(i−1) fit.

docs/metrics.md "κ readout" (paper Fig. 7). Every ``every_n_steps`` steps:

==================================  =======================================================
``kappa/skip_{i}``                  the current κ_i: the constant or learned scalar of the
                                    scaler; for ``ls`` the Fig. 7 gate average below
``ls/gate/t_{t}/skip_{i}``          ``ls`` only: the gate σ(ζ(GAP(s_i))) averaged over the
                                    ``num_inputs`` inputs and over tokens (U-ViT) or channels
                                    (conv UNet), at timestep t
``ls/fit_kappa``, ``ls/fit_scale``  ``ls`` only: κ and a of the least-squares fit
                                    log κ_i ≈ log a + (i − 1)·log κ over i = 1 … N
``ls/fit_r2``                       R² of that fit in log space
==================================  =======================================================

Fig. 7 protocol (paper Sec. 6): 30 inputs x ~ N(0, I) of the data's shape, drawn once with the
callback's seed, pass through the raw training weights in eval mode at each of ``timesteps``;
``kappa/skip_{i}`` of ``ls`` is the mean of the per-timestep averages. The fit is linear
regression in log space, which weighs every skip's ratio equally whatever its magnitude. It
keeps a free amplitude a because an LS gate starts near 0.5 (default PyTorch init of the SE gate,
paper Eq. (9)–(11)) while CS fixes κ_1 = 1: what Fig. 7 compares is the exponential decay κ^(i−1),
which a forced a = 1 would mix up with the overall level of the gates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch

from scalelong.callbacks.common import due, evaluating, forward_hooks, log_metrics, wandb_loggers
from scalelong.scalers import GatedScale


class KappaReadout(L.Callback):
    """Logs ``kappa/*`` and, for ``ls``, ``ls/*`` (see the module docstring).

    Args:
        every_n_steps: read out after every n-th training step.
        num_inputs: number of N(0, I) inputs of the Fig. 7 protocol (the paper uses 30).
        timesteps: the timesteps at which the gates are read.
        seed: seed of the N(0, I) inputs.
    """

    def __init__(self, every_n_steps: int = 100, num_inputs: int = 30,
                 timesteps: Sequence[int] = (100, 500, 900), seed: int = 0) -> None:
        self.every_n_steps, self.num_inputs = every_n_steps, num_inputs
        self.timesteps, self.seed = tuple(int(t) for t in timesteps), seed
        self.last: dict[str, float] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step - 1
        if due(step, self.every_n_steps):
            self.last = self.measure(pl_module)
            log_metrics(trainer, self.last, step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        kappas = [self.last[k] for k in sorted(self.last, key=_skip_index) if k.startswith("kappa/")]
        for logger in wandb_loggers(trainer):
            import wandb

            table = wandb.Table(columns=["i", "kappa_i"], data=[[i, k] for i, k in enumerate(kappas, start=1)])
            logger.experiment.log({"kappa/table": table, "trainer/global_step": trainer.global_step - 1})

    def measure(self, pl_module: L.LightningModule) -> dict[str, float]:
        """The readout keys of the module docstring at the current weights."""
        model = pl_module.model
        gated = [scale for scale in model.skip_scales if isinstance(scale, GatedScale)]
        if not gated:
            return {f"kappa/skip_{i}": k for i, k in enumerate(model.kappas(), start=1)}
        per_t = self.gate_means(pl_module)
        metrics = {f"ls/gate/t_{t}/skip_{i}": g for t, gates in per_t.items() for i, g in enumerate(gates, 1)}
        kappas = np.mean([gates for gates in per_t.values()], axis=0)
        metrics.update({f"kappa/skip_{i}": float(k) for i, k in enumerate(kappas, start=1)})
        if len(kappas) > 1:
            kappa, scale, r2 = fit_geometric(kappas)
            metrics.update({"ls/fit_kappa": kappa, "ls/fit_scale": scale, "ls/fit_r2": r2})
        return metrics

    @torch.no_grad()
    def gate_means(self, pl_module: L.LightningModule) -> dict[int, list[float]]:
        """Timestep -> [mean gate of skip 1, …, skip N] on the Fig. 7 inputs."""
        model = pl_module.model
        g = torch.Generator().manual_seed(self.seed)
        shape = (self.num_inputs, model.in_chans, model.img_size, model.img_size)
        x = torch.randn(shape, generator=g).to(pl_module.device)
        gates: dict[int, float] = {}

        def hook(i: int):
            def record(module, inputs, output) -> None:
                gates[i] = float(output.float().mean())
            return record

        out: dict[int, list[float]] = {}
        hooks = {scale.gate: hook(i) for i, scale in enumerate(model.skip_scales, start=1)}
        with evaluating(model), forward_hooks(hooks):
            for t in self.timesteps:
                model(x, torch.full((len(x),), t, device=x.device, dtype=torch.long))
                out[t] = [gates[i] for i in range(1, model.num_skips + 1)]
        return out


def fit_geometric(kappas: Sequence[float]) -> tuple[float, float, float]:
    """(κ, a, R²) of log κ_i ≈ log a + (i − 1)·log κ by least squares (Fig. 7's κ^(i−1) curve)."""
    y = np.log(np.asarray(kappas, dtype=np.float64))
    x = np.arange(len(y), dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1 - (residual**2).sum() / total if total > 0 else math.nan
    return float(np.exp(slope)), float(np.exp(intercept)), float(r2)


def _skip_index(key: str) -> int:
    return int(key.rsplit("_", 1)[-1]) if key.startswith("kappa/skip_") else -1
