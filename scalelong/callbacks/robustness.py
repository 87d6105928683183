"""Input sensitivity and per-level Jacobian norms on the probe batch (paper Thm 3.4, App. Fig. 11).

docs/metrics.md "Robustness" (Thm 3.4, App. Fig. 11). Every ``every_n_steps`` steps, with the raw training weights in
eval mode:

==============================  ===========================================================
``robust/ratio/delta_{σ}``      mean over the probe batch of ‖net(x_t + δ) − net(x_t)‖/‖δ‖,
                                δ ~ N(0, σ²I), for each σ in ``sigmas`` (Thm 3.4); the same δ
                                direction at every measurement
``robust/jacobian``             spectral norm of the whole network's Jacobian ∂ε̂/∂x_t, per
                                probe sample (first ``num_jacobian`` samples), mean; the limit
                                of the ratio above for the worst δ direction as σ → 0
``robust/m0/level_{i}``         ‖b_i∘a_i‖₂ of level i (below), per sample, mean
``robust/m0``                   M0 = max_i ‖b_i∘a_i‖₂
==============================  ===========================================================

What b_i∘a_i is for a real backbone. In the MLP-UNet of Eq. (3), b_i∘a_i is the path through
skip i alone. In U-ViT and the conv UNet the decoder block of level i also takes the main path
(the inner levels' output) as input, so we measure the Jacobian of the map

    z ↦ D_i(main path held at its probe value, A_i(z)),

from the input z of the encoder block A_i whose output is s_i to the output of the decoder block
D_i that merges skip i, with κ_i left out (Thm 3.4 bounds Σ κ_i·M0^i, M0 excluding κ) and every
other path held fixed. Encoder and decoder blocks are ``model.blocks()``; A_i is found as the
block whose output tensor is the skip (U-ViT in-block i, conv-UNet input block i, MLP-UNet a_i),
D_i is ``model.decoder_levels()[i]``. The map is evaluated by running the model once with every
other block returning its cached probe output, so each power-iteration step costs about two
blocks. All norms come from :func:`scalelong.jacobian.spectral_norm_jacobian` (power iteration on
JᵀJ), ``iters`` steps at most, stopping at relative change ``rtol``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from scalelong.callbacks.common import (
    ProbeBatch,
    draw_probe_batch,
    due,
    evaluating,
    forward_hooks,
    log_metrics,
    validation_set,
)
from scalelong.jacobian import input_sensitivity, spectral_norm_jacobian

log = logging.getLogger(__name__)


class Robustness(L.Callback):
    """Logs ``robust/*`` (see the module docstring).

    Args:
        every_n_steps: measure after every n-th training step.
        sigmas: the δ scales σ of the sensitivity ratio.
        num_jacobian: probe samples used for the Jacobian norms.
        iters, rtol: power iteration budget and stopping tolerance.
        probe_size, seed: the probe batch (the same as the feature callback's for equal values).
    """

    def __init__(self, every_n_steps: int = 500, sigmas: Sequence[float] = (1e-3, 1e-2, 1e-1),
                 num_jacobian: int = 4, iters: int = 15, rtol: float = 1e-3,
                 probe_size: int = 64, seed: int = 0) -> None:
        self.every_n_steps, self.sigmas = every_n_steps, tuple(float(s) for s in sigmas)
        self.num_jacobian, self.iters, self.rtol = num_jacobian, iters, rtol
        self.probe_size, self.seed = probe_size, seed
        self.probe: ProbeBatch | None = None
        self._warned = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.probe = draw_probe_batch(validation_set(trainer), pl_module, self.probe_size, self.seed)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step - 1
        if due(step, self.every_n_steps):
            log_metrics(trainer, self.measure(pl_module.model), step)

    def measure(self, model: nn.Module) -> dict[str, float]:
        """The ``robust/*`` values at the current weights."""
        p = self.probe
        metrics: dict[str, float] = {}

        def net(x: Tensor) -> Tensor:
            return model(x, p.t, p.y)

        with evaluating(model):
            with torch.no_grad():
                output = net(p.x_t)  # shared by every σ
            for sigma in self.sigmas:
                g = torch.Generator().manual_seed(self.seed)
                metrics[f"robust/ratio/delta_{sigma:g}"] = input_sensitivity(net, p.x_t, sigma, g, output)
            k = min(self.num_jacobian, len(p))
            x, t, y = p.x_t[:k], p.t[:k], None if p.y is None else p.y[:k]
            with torch.enable_grad():
                metrics["robust/jacobian"] = self._norm(lambda z: model(z, t, y), x)
                levels = {i: self._norm(fn, z) for i, (fn, z) in level_maps(model, x, t, y).items()}
        if levels:
            metrics.update({f"robust/m0/level_{i}": v for i, v in sorted(levels.items())})
            metrics["robust/m0"] = max(levels.values())
        elif not self._warned:
            log.warning("robust/m0: no encoder block of %s outputs its skip tensors; M0 is not measured",
                        type(model).__name__)
            self._warned = True
        return metrics

    def _norm(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> float:
        g = torch.Generator().manual_seed(self.seed)
        norms = spectral_norm_jacobian(fn, x, self.iters, per_sample=True, rtol=self.rtol, generator=g)
        return float(norms.mean())


def level_maps(model: nn.Module, x_t: Tensor, t: Tensor, y: Tensor | None
               ) -> dict[int, tuple[Callable[[Tensor], Tensor], Tensor]]:
    """Level i -> (z ↦ D_i(main path fixed, A_i(z)), the probe value of z); see the module doc.

    One forward at (x_t, t, y) caches every block's inputs and output and every skip tensor;
    levels whose skip tensor is no block's output are left out.
    """
    blocks = list(model.blocks().values())
    calls: dict[nn.Module, tuple[tuple, dict, Tensor]] = {}
    skips: dict[int, Tensor] = {}

    def record_call(module, args, kwargs, output) -> None:
        calls[module] = (args, kwargs, output)

    def record_skip(i: int):
        def hook(module, inputs, output) -> None:
            skips[i] = inputs[0]
        return hook

    with torch.no_grad(), forward_hooks({b: record_call for b in blocks}, with_kwargs=True), \
            forward_hooks({s: record_skip(i) for i, s in enumerate(model.skip_scales, start=1)}):
        model(x_t, t, y)

    maps = {}
    for i, decoder in model.decoder_levels().items():
        encoder = next((b for b in blocks if calls[b][2] is skips[i]), None)
        if encoder is not None:
            fn = partial(_skip_path, model, calls, encoder, decoder, model.skip_scales[i - 1], (x_t, t, y))
            maps[i] = (fn, calls[encoder][0][0])
    return maps


def _skip_path(model: nn.Module, calls: dict[nn.Module, tuple[tuple, dict, Tensor]], encoder: nn.Module,
               decoder: nn.Module, scale: nn.Module, inputs: tuple, z: Tensor) -> Tensor:
    """D_i(…, A_i(z)) with every other block at its cached output and the skip scale κ_i removed."""
    out: dict[str, Tensor] = {}
    args, kwargs, _ = calls[encoder]

    def run_encoder(*a: Any, **k: Any) -> Tensor:
        return type(encoder).forward(encoder, z, *args[1:], **kwargs)

    def run_decoder(*a: Any, **k: Any) -> Tensor:
        out["h"] = type(decoder).forward(decoder, *a, **k)
        return out["h"]

    patches = {b: partial(_cached, calls[b][2]) for b in calls if b is not encoder and b is not decoder}
    patches.update({encoder: run_encoder, decoder: run_decoder, scale: _identity})
    with _patched_forwards(patches):
        model(*inputs)
    return out["h"]


def _cached(output: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    return output


def _identity(s: Tensor) -> Tensor:
    return s


@contextlib.contextmanager
def _patched_forwards(patches: dict[nn.Module, Callable[..., Tensor]]) -> Iterator[None]:
    """Replace ``module.forward`` by an instance attribute for one call of the model."""
    for module, forward in patches.items():
        module.forward = forward
    try:
        yield
    finally:
        for module in patches:
            del module.forward
