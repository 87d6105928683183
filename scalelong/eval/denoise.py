"""Denoising quality at one noise level, against the best linear estimate (the Wiener filter).

A diffusion model's ε-prediction at timestep t is an estimate of x_0 from x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε
(paper Eq. (1)):

    x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t.

The best estimate that is linear in x_t, given the data mean μ and covariance Σ, is the Wiener filter

    x̂_0 = μ + √ᾱ Σ (ᾱ Σ + (1-ᾱ) I)⁻¹ (x_t - √ᾱ μ),

which a denoiser must beat to be using more than second-order statistics of the data. How much there
is to gain over it depends on the data and on t; :class:`ClassGaussianDenoiser`, the exact posterior
mean when each class is a Gaussian, is a nonlinear estimate that shows it without training anything.
What the filter, the class mixture and trained UNets score on the digits and on Fashion-MNIST is in
docs/generation.md ("Tests that fail when generation breaks"), asserted by tests/test_eval_denoise.py
and tests/test_generation.py.

At high t the filter is hard to beat in a short run: x̂_0 multiplies the squared error of ε̂ by
(1-ᾱ_t)/ᾱ_t (≈ 12 at t = T/2 of the linear schedule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from scalelong.diffusion import Diffusion, EpsModel


class WienerDenoiser:
    """The linear MMSE estimate of x_0 from x_t, from the mean and covariance of ``data`` (N×C×H×W),
    plus ``ridge``·I on the covariance (0 by default; a small ridge keeps a class with fewer images than
    pixels invertible)."""

    def __init__(self, data: Tensor, ridge: float = 0.0) -> None:
        flat = data.flatten(1).double()  # (N, D)
        self.mean = flat.mean(0)
        centred = flat - self.mean
        self.cov = centred.T @ centred / (len(flat) - 1) + ridge * torch.eye(flat.shape[1], dtype=torch.float64)

    def marginal_cov(self, alpha_bar: float) -> Tensor:
        """Covariance of x_t = √ᾱ x_0 + √(1-ᾱ) ε: ᾱΣ + (1-ᾱ)I."""
        return alpha_bar * self.cov + (1 - alpha_bar) * torch.eye(self.cov.shape[0], dtype=torch.float64)

    def estimate(self, flat: Tensor, alpha_bar: float) -> Tensor:
        """The estimate for x_t flattened to (B, D) in float64."""
        a = alpha_bar**0.5
        gain = torch.linalg.solve(self.marginal_cov(alpha_bar), a * self.cov).T  # √ᾱ Σ (ᾱΣ + (1-ᾱ)I)⁻¹
        return self.mean + (flat - a * self.mean) @ gain.T

    def __call__(self, x_t: Tensor, alpha_bar: float) -> Tensor:
        return self.estimate(x_t.flatten(1).double(), alpha_bar).view_as(x_t).to(x_t.dtype)


class ClassGaussianDenoiser:
    """The posterior mean E[x_0 | x_t] when x_0 is drawn from a mixture of one Gaussian per class.

    Fitted to ``data`` (N×C×H×W) and its integer ``labels``: each class's weight and Wiener filter
    (covariance plus ``ridge``·I). The estimate is the responsibility-weighted sum of the classes'
    filters; with one class it is the filter.
    """

    def __init__(self, data: Tensor, labels: Tensor, ridge: float = 1e-4) -> None:
        self.classes = [((labels == c).sum().item() / len(labels), WienerDenoiser(data[labels == c], ridge))
                        for c in labels.unique().tolist()]

    def __call__(self, x_t: Tensor, alpha_bar: float) -> Tensor:
        flat = x_t.flatten(1).double()
        log_weights, means = [], []
        for weight, wiener in self.classes:
            likelihood = MultivariateNormal(alpha_bar**0.5 * wiener.mean, wiener.marginal_cov(alpha_bar))
            log_weights.append(math.log(weight) + likelihood.log_prob(flat))
            means.append(wiener.estimate(flat, alpha_bar))
        responsibility = torch.softmax(torch.stack(log_weights, 1), 1)  # (B, K)
        estimate = (responsibility.unsqueeze(-1) * torch.stack(means, 1)).sum(1)
        return estimate.view_as(x_t).to(x_t.dtype)


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


@torch.no_grad()
def denoising_profile(
    model: EpsModel, diffusion: Diffusion, train: Tensor, held_out: Tensor, timesteps: Sequence[int], seed: int = 0,
) -> dict[int, dict[str, float]]:
    """Per timestep, the per-pixel x̂_0 MSE of the model and of the Wiener filter fitted to ``train``, on the same
    noisy ``held_out`` images (unconditional model call): where the model is below the filter it uses more than the
    data's second-order statistics; where it is above, it is underfit at that noise level."""
    wiener = WienerDenoiser(train)
    profile = {}
    for t in timesteps:
        mse, x_t = denoising_mse(model, diffusion, held_out, t, torch.Generator().manual_seed(seed))
        linear = float((wiener(x_t, float(diffusion.alphas_cumprod[t])) - held_out).pow(2).mean())
        profile[int(t)] = {"model": mse, "wiener": linear}
    return profile
