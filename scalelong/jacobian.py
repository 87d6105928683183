"""How much a network's output moves with its input: the Jacobian's spectral norm and the finite-δ ratio.

Paper Thm 3.4 bounds the input sensitivity of a UNet by Σ κ_i·M0^i with M0 = max_i ‖b_i∘a_i‖₂; these
two tools measure both sides on any differentiable map. :mod:`scalelong.theory` applies them to the
MLP-UNet of Eq. (3), :class:`scalelong.callbacks.robustness.Robustness` to a training backbone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel


def spectral_norm_jacobian(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    iters: int = 100,
    *,
    per_sample: bool = False,
    rtol: float = 1e-7,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Largest singular value of the Jacobian of ``fn`` at ``x``, by power iteration on JᵀJ.

    Used for M0 = max_i ‖b_i∘a_i‖₂ of Thm 3.4 (App. Fig. 11); ``fn`` is any differentiable map
    (an MLP-UNet block pair, a U-ViT level, ...). Each step is one Jacobian-vector product
    (``torch.func.jvp``) and one vector-Jacobian product (``torch.func.vjp``); the estimate is
    ‖J v‖ for the unit iterate v, and iteration stops once it changes by less than ``rtol``.
    Attention runs in SDPA's math backend here because the fused CPU kernel has no forward-mode
    derivative.

    With ``per_sample=False`` the whole tensor ``x`` is one input vector and a 0-d tensor is
    returned. With ``per_sample=True``, ``fn`` must treat the samples of the leading batch axis
    independently (block-diagonal Jacobian); each sample's block is iterated separately and a
    tensor of B norms is returned.
    """
    if per_sample and x.ndim < 2:
        raise ValueError(f"per_sample=True needs a batch axis, got an input of shape {tuple(x.shape)}")
    x = x.detach()
    dims = tuple(range(1, x.ndim)) if per_sample else tuple(range(x.ndim))

    def normalise(v: Tensor) -> Tensor:
        return v / v.pow(2).sum(dim=dims, keepdim=True).sqrt().clamp_min(torch.finfo(v.dtype).tiny)

    def jacobian_times(v: Tensor) -> Tensor:
        return torch.func.jvp(fn, (x,), (v,))[1]

    out_dims = None
    with sdpa_kernel(SDPBackend.MATH):
        _, vjp_fn = torch.func.vjp(fn, x)
        v = normalise(torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device))
        sigma = torch.zeros(())
        for _ in range(iters):
            u = jacobian_times(v)
            if out_dims is None:
                out_dims = tuple(range(1, u.ndim)) if per_sample else tuple(range(u.ndim))
            new_sigma = u.pow(2).sum(dim=out_dims).sqrt()
            v = normalise(vjp_fn(u)[0])
            converged = bool(((new_sigma - sigma).abs() <= rtol * new_sigma).all())
            sigma = new_sigma
            if converged:
                break
        u = jacobian_times(v)
        return u.pow(2).sum(dim=out_dims).sqrt().detach()


@torch.no_grad()
def input_sensitivity(
    model: Callable[[Tensor], Tensor], x: Tensor, sigma: float, generator: torch.Generator | None = None
) -> float:
    """Mean over samples of ‖net(x + δ) − net(x)‖/‖δ‖ for δ ~ N(0, σ²I) (Thm 3.4, docs/metrics.md "Robustness")."""
    delta = sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    change = (model(x + delta) - model(x)).flatten(1).norm(dim=1)
    return float((change / delta.flatten(1).norm(dim=1)).mean())
