"""The diffusion objective and sampling: discrete DDPM with ε-prediction (paper App. A; Ho et al. 2020).

Forward process (Ho et al. 2020, Eq. 4; ScaleLong paper Eq. (1)-(2)):

    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε_t,   ε_t ~ N(0, I),   ᾱ_t = Π_{s<=t} (1 - β_s),

with timesteps t ∈ {0, ..., T-1} (0-indexed, as in diffusers). The network learns ε_t with the
simple loss of Ho et al. 2020, Eq. (14), kept per sample. Sampling is delegated to diffusers'
schedulers, configured with exactly our β so that their ᾱ_t equals ours.

The two samplers of the U-ViT/ScaleLong evaluation protocol (paper App. A, docs/paper_settings.md) work in continuous time
t_c ∈ (0, 1] of the VP-SDE: discrete step k is continuous time t_c = (k + 1)/T, and ᾱ between steps
is interpolated in log ᾱ (log ᾱ = 0 at t_c = 0). For the linear schedule this is close to U-ViT's
VP-SDE with β(t_c) = 0.1 + 19.9 t_c: |Δ log ᾱ| ≤ 0.07, relative ≤ 0.7% for t_c ≥ 0.1 (near t_c = 0
our 1 − ᾱ is up to 9% smaller). The network is called at fractional k = T t_c − 1; DPM-Solver-fast's
last three calls fall below the first trained step (k ≈ −0.63 … −0.85, end time k = −0.9).
"""

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor, nn

from scalelong.errors import ConfigError

EpsModel = Callable[..., Tensor]
"""model(x_t [B,C,H,W], t [B], y [B] long | None) -> ε prediction [B,C,H,W]."""

SCHEDULES = ("linear", "cosine")
# Lowest log-SNR λ = ½·log(ᾱ/(1-ᾱ)) a DPM-Solver grid starts from (diffusers' advice for cosine schedules;
# the linear schedule's λ at t = T-1 is -5.06, above it).
LAMBDA_MIN = -5.1
SAMPLERS = ("ddpm", "ddim", "dpm_solver", "dpm_solver_fast", "euler_maruyama")
LOSS_WEIGHTINGS = ("uniform", "min_snr")
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpm_solver": 50, "dpm_solver_fast": 50, "euler_maruyama": 1000}
CONTINUOUS_SAMPLERS = ("dpm_solver_fast", "euler_maruyama")  # called at fractional timesteps
DPM_FAST_END_TIME = 1e-4  # U-ViT's DPM-Solver "fast": integrate from t_c = 1 to 1e-4 (its eps)
EM_END_TIME = 1e-3  # U-ViT's sde.euler_maruyama: grid [0, linspace(1e-3, 1, N)], last step to 0


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
    """Discrete DDPM with ε-prediction, optional input noise, and diffusers samplers.

    The schedule lives in non-persistent float64 buffers `betas` and `alphas_cumprod`: they move
    with `.to(device)` but are not written to checkpoints (they are rebuilt from the config).
    float64 keeps ᾱ_t exact to ~1e-16; coefficients are cast to the data dtype when used.

    Args:
        num_timesteps: T, the number of discrete diffusion steps.
        schedule: "linear" (β from 1e-4 to 0.02, Ho et al. 2020) or "cosine" (Nichol & Dhariwal).
        input_noise: σ_δ of the extra noise added to the network input only, x_t + σ_δ ε_δ
            (ScaleLong Fig. 3c); the regression target stays ε_t.
        clip_denoised: the ddpm, ddim and dpm_solver samplers clip each step's prediction of x_0 to
            the data range [-1, 1] (Ho et al. 2020's sampler) and pass the scheduler the ε that agrees
            with the clipped x̂_0 (as guided-diffusion's DDIM does; :meth:`clipped_eps`). diffusers'
            own ``clip_sample`` clips x̂_0 but keeps the unclipped ε for DDIM's direction term, which
            is inconsistent: on a trained digits model DDIM-1000 scored domain FID 26 where the
            other ODE samplers scored 11 to 13 (``tests/test_generation.py``).
            With ε-prediction, x̂_0 = (x_t - √(1-ᾱ_t) ε̂)/√ᾱ_t multiplies the error of ε̂ by
            1/√ᾱ_t ≈ 160 at t = T-1 of the linear schedule: an ε̂ off by 0.07 rms (a model trained
            for minutes) gives x̂_0 of std 11 and saturated samples. Well-trained models barely
            notice the clip; U-ViT's evaluation does not clip (dpm_solver_fast, euler_maruyama).
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

    def log_snr_uniform_grid(self, steps: int, end_time: float = DPM_FAST_END_TIME) -> tuple[Tensor, Tensor]:
        """(k [steps+1], σ/α [steps+1]): points uniform in λ = log(α/σ) from t_c = 1 to ``end_time``.

        DPM-Solver "fast" (Lu et al. 2022, Sec. 3.4) steps uniformly in log-SNR. k is found from λ by
        bisection-free inversion on a dense grid of the monotone λ(k).
        """
        dense = torch.linspace(self.num_timesteps * end_time - 1, self.num_timesteps - 1, 200_001, dtype=torch.float64)
        lab = self.log_alpha_bar(dense)
        lam = 0.5 * (lab - torch.log(-torch.expm1(lab)))  # λ(k), decreasing in k
        grid = torch.linspace(float(lam[-1]), float(lam[0]), steps + 1, dtype=torch.float64)
        # np.interp needs increasing x: flip λ (and k) so λ increases.
        k = torch.from_numpy(np.interp(grid.numpy(), lam.flip(0).numpy(), dense.flip(0).numpy()))
        return k, torch.exp(-grid)

    def scheduler(self, name: str) -> SchedulerMixin:
        """A fresh diffusers scheduler with our β (so its `alphas_cumprod` equals ours).

        - "ddpm": DDPMScheduler, ancestral sampling with σ_t² = β̃_t (Ho et al. 2020, "fixed_small").
        - "ddim": DDIMScheduler, deterministic (η = 0 is passed at each step; Song et al. 2021).
        - "dpm_solver": DPMSolverMultistepScheduler, DPM-Solver++ of order 2 (Lu et al. 2022) on the
          integer timesteps of :meth:`log_snr_timesteps` (uniform in log-SNR, ending at t = 0, as
          the "logSNR" steps of U-ViT's DPM-Solver evaluation).
        - "dpm_solver_fast": DPMSolverSinglestepScheduler, DPM-Solver (ε form) of order 3 with
          lower orders last: for 50 model calls 16 third-order steps and one second-order step,
          as U-ViT's DPM-Solver-fast. ``sample`` replaces its timesteps by the log-SNR-uniform
          grid to t_c = 1e-4 (:meth:`log_snr_uniform_grid`).

        Step placement matters as much as the solver: the last model call must see (nearly) clean
        input. DPM-Solver++ with time-uniform steps ends at t = T/steps (t = 40 for 25 steps, noise
        σ = 0.14), and its final jump returns the posterior mean E[x_0 | x_40], which erases detail:
        with an exact ε for Gaussian data of std 0.05 it produced samples of std 0.016. Log-SNR
        steps end at t = 0 and give 0.049 (``tests/test_diffusion.py``, the Gaussian oracle).
        DDPM and DDIM use "linspace" spacing, so the first step is t = T-1 (where x_T ~ N(0, I) is
        drawn) and the last is t = 0. ``clip_denoised`` decides whether ``sample`` clips x̂_0 at each step
        (:meth:`clipped_eps`, outside the scheduler);
        `sample` clamps the final image once in any case.
        """
        common = dict(
            num_train_timesteps=self.num_timesteps,
            trained_betas=self.betas.cpu().numpy(),
            prediction_type="epsilon",
        )
        if name == "ddpm":
            return DDPMScheduler(
                **common, variance_type="fixed_small", clip_sample=False, timestep_spacing="linspace"
            )
        if name == "ddim":
            return DDIMScheduler(
                **common, clip_sample=False, set_alpha_to_one=True, timestep_spacing="linspace"
            )
        if name == "dpm_solver":
            return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
        if name == "dpm_solver_fast":
            with warnings.catch_warnings():  # diffusers deprecates the ε form; U-ViT's protocol uses it
                warnings.filterwarnings("ignore", message=".*dpmsolver.* is deprecated", category=FutureWarning)
                return DPMSolverSinglestepScheduler(
                    **common, algorithm_type="dpmsolver", solver_order=3, lower_order_final=True,
                    final_sigmas_type="sigma_min",  # keeps the last step 2nd order; sample() sets its σ
                )
        if name == "euler_maruyama":
            raise ConfigError("sampler 'euler_maruyama' has no diffusers scheduler; use Diffusion.sample")
        raise ConfigError(f"sampler {name!r} is unknown; use one of {', '.join(SAMPLERS)}")

    def log_snr_timesteps(self, steps: int) -> list[int]:
        """``steps`` distinct integer timesteps from T-1 down to 0, uniform in λ_t = ½·log(ᾱ_t/(1-ᾱ_t)).

        λ below ``LAMBDA_MIN`` is pure noise in practice (the cosine schedule's last steps), so the
        grid starts there and only the first step is at T-1. Integer, so the model sees exactly the
        timesteps (and ᾱ_t) it was trained on; where rounding would repeat a timestep (the flat ends of λ_t),
        neighbours are pushed apart by one.
        """
        if not 1 <= steps <= self.num_timesteps:
            raise ConfigError(f"steps={steps} must be between 1 and num_timesteps={self.num_timesteps}")
        lam = 0.5 * (self.alphas_cumprod.log() - (1 - self.alphas_cumprod).log()).cpu()  # increasing as t falls
        grid = torch.linspace(max(float(lam[-1]), LAMBDA_MIN), float(lam[0]), steps, dtype=torch.float64)
        # λ_t decreases in t: searchsorted on the reversed (increasing) sequence gives T-1-t.
        t = (self.num_timesteps - 1 - torch.searchsorted(lam.flip(0).contiguous(), grid)).clamp(0).tolist()
        t[-1] = 0
        for k in range(len(t) - 2, -1, -1):  # from the end: strictly decreasing, last = 0
            t[k] = max(t[k], t[k + 1] + 1)
        t[0] = self.num_timesteps - 1
        for k in range(1, len(t)):  # from the start: first = T-1 (where x_T ~ N(0, I) is drawn)
            t[k] = min(t[k], t[k - 1] - 1)
        return t

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

        `sampler` is one of SAMPLERS; `steps` (model calls) defaults per sampler (DEFAULT_STEPS).
        "dpm_solver_fast" and "euler_maruyama" are the U-ViT evaluation samplers and call the
        model at fractional timesteps (float t); the others at integer steps (long t). With class labels `y` and
        `guidance_scale` s != 1, classifier-free guidance (Ho & Salimans 2022) uses
        ε = ε_θ(x_t, ∅) + s·(ε_θ(x_t, y) - ε_θ(x_t, ∅)) with the null label ∅ = `num_classes`,
        computed in one forward pass of batch 2B. `generator` fixes x_T and the DDPM noise; it
        must live on `device` (default: the device of this module's buffers).
        """
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler {sampler!r} is unknown; use one of {', '.join(SAMPLERS)}")
        guided = guidance_scale != 1.0
        if guided and (y is None or num_classes <= 0):
            raise ConfigError(
                f"guidance_scale={guidance_scale} needs class labels y and num_classes > 0 "
                f"(got y={'None' if y is None else 'given'}, num_classes={num_classes}); "
                "use guidance_scale=1.0 for unconditional sampling"
            )
        device = torch.device(device) if device is not None else self.alphas_cumprod.device
        steps = DEFAULT_STEPS[sampler] if steps is None else steps
        if y is not None:
            y = y.to(device)
            if guided:
                y = torch.cat([y, torch.full_like(y, num_classes)])

        def eps_of(x: Tensor, k: Tensor) -> Tensor:
            """ε_θ at timestep k (a 0-dim tensor), with classifier-free guidance when asked."""
            x_in = torch.cat([x, x]) if guided else x
            t = float(k) if sampler in CONTINUOUS_SAMPLERS else int(k)  # fractional k or an integer step
            eps = model(x_in, torch.full((x_in.shape[0],), t, device=device), y)
            if guided:
                eps_cond, eps_uncond = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            if self.clip_denoised and sampler not in CONTINUOUS_SAMPLERS:
                eps = self.clipped_eps(x, int(k), eps)
            return eps

        x = torch.randn(shape, generator=generator, device=device)
        if sampler == "euler_maruyama":
            x = self._euler_maruyama(eps_of, x, steps, generator)
        else:
            x = self._scheduler_loop(sampler, eps_of, x, steps, generator)
        return x.clamp(-1, 1)

    def _scheduler_loop(
        self, sampler: str, eps_of: Callable[[Tensor, Tensor], Tensor], x: Tensor, steps: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Sample with a diffusers scheduler; for dpm_solver_fast on the log-SNR-uniform grid."""
        scheduler = self.scheduler(sampler)
        if sampler == "dpm_solver":
            scheduler.set_timesteps(timesteps=self.log_snr_timesteps(steps), device=x.device)
        else:
            scheduler.set_timesteps(steps, device=x.device)
        if sampler == "dpm_solver_fast":
            k, sigmas = self.log_snr_uniform_grid(steps)
            scheduler.timesteps = k[:-1].float().to(x.device)  # the network's (fractional) timesteps
            scheduler.sigmas = sigmas.float()  # σ/α at every grid point, the last one the end time
        x = x * scheduler.init_noise_sigma
        for step_t in scheduler.timesteps:
            eps = eps_of(scheduler.scale_model_input(x, step_t), step_t)
            x = scheduler.step(eps, step_t, x, generator=generator).prev_sample
        return x

    def _euler_maruyama(
        self, eps_of: Callable[[Tensor, Tensor], Tensor], x: Tensor, steps: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Euler–Maruyama of the reverse VP-SDE (Song et al. 2021, Eq. 6), as U-ViT's sde.py.

            dx = [−½β(t)x − β(t)∇log p_t(x)] dt + √β(t) dw̄,   ∇log p_t(x) = −ε_θ(x, t)/σ_t,

        on the grid t_c ∈ [0, linspace(1e-3, 1, steps)] from 1 down: each step from t to s < t is
        x ← x + drift·(s − t) + √(β(t)(t − s))·z, without noise on the last step (to s = 0).
        β(t_c) = −d log ᾱ/dt_c of our schedule (0.1 + 19.9 t_c for the linear one).
        """
        T = self.num_timesteps
        grid = torch.cat([torch.zeros(1, dtype=torch.float64),
                          torch.linspace(EM_END_TIME, 1, steps, dtype=torch.float64)])
        beta_table = -torch.log1p(-self.betas) * T  # −d log ᾱ/dt_c on step k, in continuous time
        for s, t in zip(grid.flip(0)[1:], grid.flip(0)[:-1]):
            k = T * t - 1
            log_ab = self.log_alpha_bar(k)
            sigma = torch.sqrt(-torch.expm1(log_ab))
            beta = beta_table[min(int(k.round()), T - 1)]
            eps = eps_of(x, k)
            drift = -0.5 * beta * x + (beta / sigma) * eps
            x = x + drift.to(x.dtype) * float(s - t)
            if s > 0:
                z = torch.randn(x.shape, generator=generator, device=x.device)
                x = x + float(torch.sqrt(beta * (t - s))) * z
        return x
