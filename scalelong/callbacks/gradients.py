"""Per-block gradient norms on training batches, their oscillation, and loss spikes.

Implements docs/metrics.md "Gradient norms, oscillation, loss spikes" (paper Thm 3.3, Fig. 1). The norms are
read in ``on_before_optimizer_step``: in Lightning 2.6 the precision plugin calls that hook
after the backward pass and, with AMP, after ``GradScaler.unscale_``, and clips gradients only
after it returns (``Precision._after_closure``), so the norms are unscaled and unclipped. With
gradient accumulation they are the norms of the accumulated gradient of the optimizer step.

==============================  ===========================================================
``grad/{block}``                L2 norm of the gradient of the block's parameters
                                (blocks as named by ``model.blocks()``, e.g. ``in_block_1``,
                                ``mid_block``, ``out_block_3``)
``grad/total``                  L2 norm of the gradient of all model parameters
``osc/grad/{block}/rstd``       std/mean of the last ``window`` logged values of ``grad/{block}``
``osc/grad/{block}/mrc``        mean |Δ| / mean over the same window
``osc/grad/mean/{rstd,mrc}``    the average over all blocks (``total`` excluded)
``loss/spikes``                 cumulative number of training steps whose loss exceeded
                                ``spike_factor`` × the median of the previous ``spike_window``
                                training losses (every step counts; logged with the norms)
==============================  ===========================================================

The losses of the steps between two logged steps stay on the device and are read in one transfer on
the next logged step (or when a checkpoint saves the state), so a step that is not logged never waits
for the GPU.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from scalelong.callbacks.common import due, log_metrics
from scalelong.oscillation import SpikeCounter, TrailingWindows


class GradientOscillation(L.Callback):
    """Logs ``grad/*``, ``osc/grad/*`` and ``loss/spikes`` (see the module docstring).

    Args:
        every_n_steps: measure the gradients of every n-th training step.
        window: W, the number of logged values per oscillation window.
        spike_factor, spike_window: a loss above factor × median of the previous window losses
            counts as a spike.
    """

    def __init__(self, every_n_steps: int = 10, window: int = 8, spike_factor: float = 2.0,
                 spike_window: int = 100) -> None:
        self.every_n_steps = every_n_steps
        self.windows = TrailingWindows(window)
        self.spikes = SpikeCounter(spike_factor, spike_window)
        self.pending: list[torch.Tensor] = []  # losses not yet counted, still on the device

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        step = trainer.global_step
        if not due(step, self.every_n_steps):
            return
        self.count_pending()
        norms = block_grad_norms(pl_module.model)
        metrics = {f"grad/{k}": v for k, v in norms.items()}
        metrics.update(self.windows.update({k: v for k, v in norms.items() if k != "total"}, prefix="osc/grad"))
        metrics["loss/spikes"] = float(self.spikes.count)
        log_metrics(trainer, metrics, step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self.every_n_steps > 0:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.pending.append(loss.detach())

    def count_pending(self) -> None:
        """Feed the stored losses to the spike counter, in one device-to-host transfer."""
        if self.pending:
            for value in torch.stack(self.pending).float().tolist():
                self.spikes.update(value)
            self.pending.clear()

    def state_dict(self) -> dict[str, Any]:
        self.count_pending()
        return {"windows": self.windows.state_dict(), "spikes": self.spikes.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.windows.load_state_dict(state_dict["windows"])
        self.spikes.load_state_dict(state_dict["spikes"])


@torch.no_grad()
def block_grad_norms(model: torch.nn.Module) -> dict[str, float]:
    """L2 gradient norm per block of ``model.blocks()`` and over all parameters (``total``)."""
    def norm(params) -> float:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return 0.0
        return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))

    norms = {name: norm(block.parameters()) for name, block in model.blocks().items()}
    norms["total"] = norm(model.parameters())
    return norms
