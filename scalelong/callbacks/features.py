"""Feature energies of the skips and decoder levels on the probe batch, and their oscillation.

Implements docs/metrics.md "Feature energy and oscillation" (paper Fig. 1, Thm 3.1). Every
``every_n_steps`` steps the probe batch runs once through the raw (non-EMA) training weights in
eval mode without gradients, with forward hooks attached for that forward only:

==============================  ===========================================================
``feat/skip_{i}``               F of s_i, the skip tensor of LSC i before scaling
``feat/skip_{i}_scaled``        F of κ_i·s_i, the tensor merged into the decoder
``feat/level_{i}``              F of the decoder output right after skip i is merged
``osc/feat/{name}/rstd``        std/mean of the last ``window`` logged values of ``feat/{name}``
``osc/feat/{name}/mrc``         mean |Δ| / mean over the same window
``osc/feat/mean/{rstd,mrc}``    the average over every ``feat/`` series above
==============================  ===========================================================

F = mean over the probe batch of ‖h‖²/numel(h) per sample; i = 1 is the outermost LSC.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from scalelong.callbacks.common import (
    ProbeBatch,
    draw_probe_batch,
    due,
    energy,
    evaluating,
    forward_hooks,
    log_metrics,
    validation_set,
)
from scalelong.oscillation import TrailingWindows


class FeatureOscillation(L.Callback):
    """Logs ``feat/*`` and ``osc/feat/*`` (see the module docstring).

    Args:
        every_n_steps: measure after every n-th training step.
        window: W, the number of logged values per oscillation window.
        probe_size: number of probe samples drawn from the validation split.
        seed: seed of the probe draw (the run's seed by default in the config).
    """

    def __init__(self, every_n_steps: int = 50, window: int = 8, probe_size: int = 64, seed: int = 0) -> None:
        self.every_n_steps, self.probe_size, self.seed = every_n_steps, probe_size, seed
        self.windows = TrailingWindows(window)
        self.probe: ProbeBatch | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.probe = draw_probe_batch(validation_set(trainer), pl_module, self.probe_size, self.seed)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step - 1
        if not due(step, self.every_n_steps):
            return
        energies = self.measure(pl_module)
        metrics = {f"feat/{k}": v for k, v in energies.items()}
        metrics.update(self.windows.update(energies, prefix="osc/feat"))
        log_metrics(trainer, metrics, step)

    @torch.no_grad()
    def measure(self, pl_module: L.LightningModule) -> dict[str, float]:
        """``{"skip_i": …, "skip_i_scaled": …, "level_i": …}`` on the probe batch."""
        model, probe = pl_module.model, self.probe
        energies: dict[str, float] = {}

        def skip_hook(i: int):
            def hook(module, inputs, output) -> None:
                energies[f"skip_{i}"] = energy(inputs[0])
                energies[f"skip_{i}_scaled"] = energy(output)
            return hook

        def level_hook(i: int):
            def hook(module, inputs, output) -> None:
                energies[f"level_{i}"] = energy(output)
            return hook

        hooks = {scale: skip_hook(i) for i, scale in enumerate(model.skip_scales, start=1)}
        hooks.update({block: level_hook(i) for i, block in model.decoder_levels().items()})
        with evaluating(model), forward_hooks(hooks):
            model(probe.x_t, probe.t, probe.y)
        return dict(sorted(energies.items(), key=lambda kv: _order(kv[0])))

    def state_dict(self) -> dict[str, Any]:
        return {"windows": self.windows.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.windows.load_state_dict(state_dict["windows"])


def _order(name: str) -> tuple[str, int, str]:
    """Sort ``skip_2`` before ``skip_10`` (numeric index), then the ``_scaled`` variant."""
    kind, rest = name.split("_", 1)
    index, _, suffix = rest.partition("_")
    return kind, int(index), suffix
