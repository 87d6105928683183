"""Denoising quality at one noise level, against the best linear estimate (the Wiener filter).

A diffusion model's ε-prediction at timestep t is an estimate of x_0 from x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε:

    x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t.

The best estimate that is linear in x_t, given the data mean μ and covariance Σ, is the Wiener filter

    x̂_0 = μ + √ᾱ Σ (ᾱ Σ + (1-ᾱ) I)⁻¹ (x_t - √ᾱ μ),

which a denoiser must beat to be using more than second-order statistics of the data. At high t the
filter is hard to beat in a short run: x̂_0 multiplies the error of ε̂ by (1-ᾱ_t)/ᾱ_t (≈ 12 at t = T/2
of the linear schedule), so a digits model that already generates beats it at t = T/4, not yet at T/2
(``tests/test_generation.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scalelong.diffusion import Diffusion, EpsModel


class WienerDenoiser:
    """The linear MMSE estimate of x_0 from x_t, from the mean and covariance of ``data`` (N×C×H×W)."""

    def __init__(self, data: Tensor) -> None:
        flat = data.flatten(1).double()  # (N, D)
        self.mean = flat.mean(0)
        centred = flat - self.mean
        self.cov = centred.T @ centred / (len(flat) - 1)  # (D, D)

    def __call__(self, x_t: Tensor, alpha_bar: float) -> Tensor:
        a = alpha_bar**0.5
        d = self.cov.shape[0]
        identity = torch.eye(d, dtype=torch.float64)
        gain = a * self.cov @ torch.linalg.inv(alpha_bar * self.cov + (1 - alpha_bar) * identity)
        flat = x_t.flatten(1).double() - a * self.mean  # (B, D)
        return (self.mean + flat @ gain.T).view_as(x_t).to(x_t.dtype)


@torch.no_grad()
def denoising_mse(
    model: EpsModel, diffusion: Diffusion, x0: Tensor, t: int, generator: torch.Generator, y: Tensor | None = None,
) -> tuple[float, Tensor]:
    """Per-pixel MSE of the model's x̂_0 at timestep ``t`` on ``x0``, and the x_t it saw (same noise for a
    reference estimate)."""
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    ts = torch.full((len(x0),), t, dtype=torch.long, device=x0.device)
    x_t = diffusion.q_sample(x0, ts, noise)
    alpha_bar = float(diffusion.alphas_cumprod[t])
    x0_hat = (x_t - (1 - alpha_bar) ** 0.5 * model(x_t, ts, y)) / alpha_bar**0.5
    return float((x0_hat - x0).pow(2).mean()), x_t
