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
    (an MLP-UNet block pair, a U-ViT level, ...). Each step is one Jacobian-vector product and one
    vector-Jacobian product, both backward passes through graphs built once: Jᵀu backpropagates u
    through y = fn(x), and J v = ∂⟨Jᵀu, v⟩/∂u backpropagates v through the graph of Jᵀu, which is
    linear in u (the "double backward" trick; forward-mode ``torch.func.jvp`` recomputes the whole
    forward at every call). The estimate is ‖J v‖ for the unit iterate
    v, and iteration stops once it changes by less than ``rtol``. Attention runs in SDPA's math
    backend here because the fused CPU kernel cannot be differentiated twice.

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

    out_dims = None
    with sdpa_kernel(SDPBackend.MATH), torch.enable_grad():
        x = x.requires_grad_()
        y = fn(x)
        u0 = torch.zeros_like(y, requires_grad=True)
        transpose_u0 = torch.autograd.grad(y, x, u0, create_graph=True)[0]  # Jᵀu0, linear in u0

        def jacobian_times(v: Tensor) -> Tensor:
            return torch.autograd.grad(transpose_u0, u0, v, retain_graph=True)[0].detach()

        def transpose_times(u: Tensor) -> Tensor:
            return torch.autograd.grad(y, x, u, retain_graph=True)[0]

        v = normalise(torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device))
        sigma = torch.zeros(())
        for _ in range(iters):
            u = jacobian_times(v)
            if out_dims is None:
                out_dims = tuple(range(1, u.ndim)) if per_sample else tuple(range(u.ndim))
            new_sigma = u.pow(2).sum(dim=out_dims).sqrt()
            v = normalise(transpose_times(u))
            converged = bool(((new_sigma - sigma).abs() <= rtol * new_sigma).all())
            sigma = new_sigma
            if converged:
                break
        u = jacobian_times(v)
        return u.pow(2).sum(dim=out_dims).sqrt().detach()


@torch.no_grad()
def input_sensitivity(
    model: Callable[[Tensor], Tensor], x: Tensor, sigma: float, generator: torch.Generator | None = None,
    output: Tensor | None = None,
) -> float:
    """Mean over samples of ‖net(x + δ) − net(x)‖/‖δ‖ for δ ~ N(0, σ²I) (Thm 3.4, docs/metrics.md "Robustness").
    ``output``: net(x) when the caller has it (several σ at one x)."""
    delta = sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    change = (model(x + delta) - (model(x) if output is None else output)).flatten(1).norm(dim=1)
    return float((change / delta.flatten(1).norm(dim=1)).mean())
