"""The diffusion objective: discrete DDPM with ε-prediction (paper App. A; Ho et al. 2020), and sampling.

Forward process (Ho et al. 2020, Eq. 4; ScaleLong paper Eq. (1)-(2)):

    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε_t,   ε_t ~ N(0, I),   ᾱ_t = Π_{s<=t} (1 - β_s),

with timesteps t ∈ {0, ..., T-1} (0-indexed, as in diffusers). The network learns ε_t with the
simple loss of Ho et al. 2020, Eq. (14), kept per sample. :meth:`Diffusion.sample` draws with one
of the samplers of :mod:`scalelong.samplers` (most of them diffusers schedulers configured with
exactly our β); the continuous-time samplers read ᾱ between steps from :meth:`Diffusion.log_alpha_bar`.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from scalelong.errors import ConfigError
from scalelong.samplers import get_sampler

EpsModel = Callable[..., Tensor]
"""model(x_t [B,C,H,W], t [B], y [B] long | None) -> ε prediction [B,C,H,W]."""

SCHEDULES = ("linear", "cosine")
CPU_FORWARD_ROWS = 128
"""On a CPU, :meth:`Diffusion.sample` calls the network on at most this many rows at a time (guidance doubles a
batch): the activations of a larger call outgrow the caches and each image costs more (measured in
``docs/benchmarks/README.md``). The result is the same; the split is of the work only."""
LOSS_WEIGHTINGS = ("uniform", "min_snr")


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Linear β schedule of Ho et al. 2020 (Sec. 4), float64."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule of Nichol & Dhariwal 2021, Eq. (17): ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2).

    β_t = min(1 - ᾱ((t+1)/T)/ᾱ(t/T), 0.999), identical to diffusers' "squaredcos_cap_v2".
    """
    u = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    """Shape a per-sample coefficient [B] to broadcast against a batch `like` [B, ...]."""
    return t.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


class Diffusion(nn.Module):
    """Discrete DDPM with ε-prediction, optional input noise, and sampling (:mod:`scalelong.samplers`).

    The schedule lives in non-persistent float64 buffers `betas` and `alphas_cumprod`: they move
    with `.to(device)` but are not written to checkpoints (they are rebuilt from the config).
    float64 keeps ᾱ_t exact to ~1e-16; coefficients are cast to the data dtype when used.

    Args:
        num_timesteps: T, the number of discrete diffusion steps.
        schedule: "linear" (β from 1e-4 to 0.02, Ho et al. 2020) or "cosine" (Nichol & Dhariwal).
        input_noise: σ_δ of the extra noise added to the network input only, x_t + σ_δ ε_δ
            (ScaleLong Fig. 3c); the regression target stays ε_t.
        clip_denoised: the integer-step samplers (those not ``continuous``) clip each step's
            prediction of x_0 to the data range [-1, 1] (Ho et al. 2020's sampler) and pass the
            scheduler the ε that agrees with the clipped x̂_0 (:meth:`clipped_eps`, as
            guided-diffusion's DDIM does; diffusers' own ``clip_sample`` keeps the unclipped ε for
            DDIM's direction term). With ε-prediction, x̂_0 = (x_t - √(1-ᾱ_t) ε̂)/√ᾱ_t multiplies
            the error of ε̂ by 1/√ᾱ_t, large at high noise, so a model trained briefly gives
            saturated samples without the clip (docs/generation.md, defects 2 and 5); well-trained
            models barely notice it. U-ViT's evaluation samplers (the ``continuous`` ones) do not clip.
        loss_weighting: how the training loss weighs timesteps (:meth:`loss_weights`). "uniform" is
            Ho et al.'s simple loss (the paper's). "min_snr" is Min-SNR-γ (Hang et al. 2023): for
            ε-prediction the weight min(SNR_t, γ)/SNR_t is 1 at high noise and γ/SNR_t below it,
            so the many easy, nearly clean timesteps stop dominating the gradient.
        min_snr_gamma: γ of "min_snr" (5 in Hang et al.).
    """

    def __init__(
        self, num_timesteps: int = 1000, schedule: str = "linear", input_noise: float = 0.0,
        clip_denoised: bool = True, loss_weighting: str = "uniform", min_snr_gamma: float = 5.0,
    ):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ConfigError(
                f"diffusion schedule {schedule!r} is unknown; use one of {', '.join(SCHEDULES)}"
            )
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(
                f"diffusion loss_weighting {loss_weighting!r} is unknown; use one of {', '.join(LOSS_WEIGHTINGS)}"
            )
        if min_snr_gamma <= 0:
            raise ConfigError(f"diffusion min_snr_gamma must be > 0, got {min_snr_gamma}")
        if input_noise < 0:
            raise ConfigError(f"diffusion input_noise must be >= 0, got {input_noise}")
        self.num_timesteps = num_timesteps
        self.schedule = schedule
        self.input_noise = input_noise
        self.clip_denoised = clip_denoised
        self.loss_weighting, self.min_snr_gamma = loss_weighting, min_snr_gamma
        betas = linear_betas(num_timesteps) if schedule == "linear" else cosine_betas(num_timesteps)
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, dim=0), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"num_timesteps={self.num_timesteps}, schedule={self.schedule!r}, "
            f"input_noise={self.input_noise}, clip_denoised={self.clip_denoised}, "
            f"loss_weighting={self.loss_weighting!r}"
        )

    def loss_weights(self, t: Tensor) -> Tensor:
        """Per-sample weight [B] of the training loss at timesteps ``t`` (see ``loss_weighting``).

        The validation loss stays unweighted, so its curves compare across weightings.
        """
        if self.loss_weighting == "uniform":
            return torch.ones(t.shape, dtype=torch.float32, device=t.device)
        alpha_bar = self.alphas_cumprod[t.long()]
        snr = alpha_bar / (1 - alpha_bar)
        return (snr.clamp(max=self.min_snr_gamma) / snr).float()

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε  (Ho et al. 2020 Eq. 4; ScaleLong Eq. (1)-(2))."""
        alpha_bar = self.alphas_cumprod[t.long()]
        return _per_sample(alpha_bar.sqrt(), x0) * x0 + _per_sample((1 - alpha_bar).sqrt(), x0) * noise

    def loss(
        self,
        model: EpsModel,
        x0: Tensor,
        y: Tensor | None = None,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        *,
        delta: Tensor | None = None,
    ) -> Tensor:
        """Per-sample ε-prediction loss ‖ε_t - ε_θ(x_t + σ_δ ε_δ, t, y)‖² / (C·H·W), shape [B].

        Ho et al. 2020 Eq. (14) without the batch mean. `t` ~ U{0, ..., T-1} and `noise` ε_t ~ N(0, I)
        are drawn when not given; passing a fixed (x0, t, noise) triple makes the loss deterministic
        (validation, probe batches). `delta` is the input-noise draw ε_δ, drawn from N(0, I) when not
        given; it only matters when `input_noise` > 0.
        """
        if t is None:
            t = torch.randint(0, self.num_timesteps, (x0.shape[0],), device=x0.device)
        if noise is None:
            noise = torch.randn_like(x0)
        x_in = self.q_sample(x0, t, noise)
        if self.input_noise > 0:
            x_in = x_in + self.input_noise * (torch.randn_like(x0) if delta is None else delta)
        eps = model(x_in, t, y)
        return (eps - noise).pow(2).flatten(1).mean(dim=1)

    def log_alpha_bar(self, k: Tensor) -> Tensor:
        """log ᾱ at fractional discrete steps k ∈ [−1, T−1], linear between steps, 0 at k = −1 (float64)."""
        table = torch.cat([self.alphas_cumprod.new_zeros(1), self.alphas_cumprod.log()])  # k = -1, 0, ..., T-1
        pos = (k.double() + 1).clamp(0, self.num_timesteps)
        lo = pos.floor().long().clamp(max=self.num_timesteps - 1)
        return torch.lerp(table[lo], table[lo + 1], pos - lo)

    def clipped_eps(self, x: Tensor, t: int, eps: Tensor) -> Tensor:
        """The ε that agrees with x̂_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t clipped to [−1, 1] at integer step t.

        Every sampler built on (x_t, x̂_0, ε) then sees one consistent prediction: DDPM's posterior
        mean and DPM-Solver++'s data prediction become the clipped x̂_0 exactly, and DDIM's direction
        term uses the matching ε (guided-diffusion's DDIM recomputes ε the same way).
        """
        alpha_bar = self.alphas_cumprod[t].to(x.dtype)
        x0 = ((x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()).clamp(-1, 1)
        return (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()

    @torch.no_grad()
    def sample(
        self,
        model: EpsModel,
        shape: tuple[int, ...],
        sampler: str = "dpm_solver",
        steps: int | None = None,
        y: Tensor | None = None,
        guidance_scale: float = 1.0,
        num_classes: int = 0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw samples from x_T ~ N(0, I); returns images clamped to [-1, 1].

        `sampler` names an entry of :data:`scalelong.samplers.SAMPLERS`; `steps` (model calls)
        defaults to its ``default_steps``. A ``continuous`` sampler calls the model at fractional
        timesteps (float t), the others at integer steps (long t). With class labels `y` and
        `guidance_scale` s != 1, classifier-free guidance (Ho & Salimans 2022) uses
        ε = ε_θ(x_t, ∅) + s·(ε_θ(x_t, y) - ε_θ(x_t, ∅)) with the null label ∅ = `num_classes`,
        computed in one forward pass of batch 2B (on a CPU, in chunks of :data:`CPU_FORWARD_ROWS` rows).
        `generator` fixes x_T and the DDPM noise; it must live on `device` (default: the device of this
        module's buffers).
        """
        method = get_sampler(sampler)
        guided = guidance_scale != 1.0
        if guided and (y is None or num_classes <= 0):
            raise ConfigError(
                f"guidance_scale={guidance_scale} needs class labels y and num_classes > 0 "
                f"(got y={'None' if y is None else 'given'}, num_classes={num_classes}); "
                "use guidance_scale=1.0 for unconditional sampling"
            )
        device = torch.device(device) if device is not None else self.alphas_cumprod.device
        rows = CPU_FORWARD_ROWS if device.type == "cpu" else None
        steps = method.default_steps if steps is None else steps
        if y is not None:
            y = y.to(device)
            if guided:
                y = torch.cat([y, torch.full_like(y, num_classes)])

        def eps_of(x: Tensor, k: Tensor) -> Tensor:
            """ε_θ at timestep k (a 0-dim tensor), with classifier-free guidance when asked."""
            x_in = torch.cat([x, x]) if guided else x
            t = float(k) if method.continuous else int(k)  # fractional k or an integer step
            eps = forward_in_chunks(model, x_in, torch.full((x_in.shape[0],), t, device=device), y, rows)
            if guided:
                eps_cond, eps_uncond = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            if self.clip_denoised and not method.continuous:
                eps = self.clipped_eps(x, int(k), eps)
            return eps

        x = torch.randn(shape, generator=generator, device=device)
        return method.run(self, eps_of, x, steps, generator).clamp(-1, 1)


def forward_in_chunks(model: EpsModel, x: Tensor, t: Tensor, y: Tensor | None, rows: int | None) -> Tensor:
    """``model(x, t, y)`` computed on at most ``rows`` rows at a time (all at once for None)."""
    if rows is None or len(x) <= rows:
        return model(x, t, y)
    labels = y.split(rows) if y is not None else [None] * len(x.split(rows))
    return torch.cat([model(xc, tc, yc) for xc, tc, yc in zip(x.split(rows), t.split(rows), labels)])
