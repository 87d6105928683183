"""The samplers: one class per way of integrating the reverse process, behind one interface.

A :class:`Sampler` knows its name, its default number of model calls, whether it calls the network
at fractional (continuous) timesteps, whether it is stochastic, and how to go from x_T ~ N(0, I) to
a sample (:meth:`Sampler.run`). :data:`SAMPLERS` maps each name to its instance;
:meth:`scalelong.diffusion.Diffusion.sample` looks the name up (:func:`get_sampler`) and does what
all samplers share: the draw of x_T, classifier-free guidance, x̂_0 clipping and the final clamp.
A new sampler is one class here under :func:`register`; the tests parametrize over the registry.

Discrete timesteps k ∈ {0, ..., T-1} are 0-indexed, as in diffusers; the schedulers are configured
with our β, so their ᾱ_k equals ours. The two samplers of the U-ViT/ScaleLong evaluation protocol
(paper App. A, docs/paper_settings.md) work in continuous time t_c ∈ (0, 1] of the VP-SDE (Song et
al. 2021, Eq. 11): step k is t_c = (k + 1)/T, ᾱ between steps is interpolated in log ᾱ
(:meth:`scalelong.diffusion.Diffusion.log_alpha_bar`), and the network is called at k = T t_c − 1.
How close this is to U-ViT's β(t_c) = 0.1 + 19.9 t_c: docs/generation.md, "The samplers".
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor

from scalelong.errors import ConfigError

EpsFn = Callable[[Tensor, Tensor], Tensor]
"""eps_of(x [B,C,H,W], k 0-dim timestep) -> ε̂ [B,C,H,W], with guidance and clipping already applied."""


class Schedule(Protocol):
    """What a sampler reads of :class:`scalelong.diffusion.Diffusion`: T, β_k, ᾱ_k (float64) and log ᾱ
    at fractional steps."""

    num_timesteps: int
    betas: Tensor
    alphas_cumprod: Tensor

    def log_alpha_bar(self, k: Tensor) -> Tensor: ...


class Sampler(ABC):
    """One sampler: from x_T to a sample in ``steps`` calls of ε̂.

    Attributes:
        name: the string a config or CLI names it by (``sampler=<name>``).
        default_steps: model calls when ``steps`` is not given.
        continuous: calls the network at fractional timesteps k (float t) in continuous time; such a
            sampler gets the raw ε̂, the others get ε̂ of the clipped x̂_0 when ``clip_denoised`` is on.
        stochastic: integrates the reverse SDE (fresh noise each step) rather than the
            probability-flow ODE; samplers are compared within their family.
        end_time: continuous time t_c of the returned sample (0: clean data).
    """

    name: ClassVar[str]
    default_steps: ClassVar[int]
    continuous: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    end_time: ClassVar[float] = 0.0

    @abstractmethod
    def run(
        self, schedule: Schedule, eps_of: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None
    ) -> Tensor:
        """The sample (not clamped) reached from ``x`` = x_T with ``steps`` calls of ``eps_of``;
        ``generator`` draws any fresh noise."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, default_steps={self.default_steps})"


SAMPLERS: dict[str, Sampler] = {}
"""Every sampler by name, in registration order."""


def register(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: add an instance of ``cls`` to :data:`SAMPLERS` under ``cls.name``."""
    if cls.name in SAMPLERS:
        raise ValueError(f"sampler name {cls.name!r} is registered twice")
    SAMPLERS[cls.name] = cls()
    return cls


def get_sampler(name: str, key: str = "sampler") -> Sampler:
    """The registered sampler ``name``; otherwise a :class:`ConfigError` naming the config ``key``,
    the value and the valid choices."""
    if name not in SAMPLERS:
        raise ConfigError(f"{key}={name} is unknown; use one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


class SchedulerSampler(Sampler):
    """A diffusers scheduler's step loop, with our β so that the scheduler's ᾱ_k equals ours."""

    @abstractmethod
    def scheduler(self, schedule: Schedule) -> SchedulerMixin:
        """A fresh scheduler for ``schedule``."""

    def set_timesteps(self, scheduler: SchedulerMixin, schedule: Schedule, steps: int, device: torch.device) -> None:
        """Place the ``steps`` model calls; by default the scheduler's own spacing."""
        scheduler.set_timesteps(steps, device=device)

    def run(
        self, schedule: Schedule, eps_of: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None
    ) -> Tensor:
        scheduler = self.scheduler(schedule)
        self.set_timesteps(scheduler, schedule, steps, x.device)
        x = x * scheduler.init_noise_sigma
        for step_t in scheduler.timesteps:
            eps = eps_of(scheduler.scale_model_input(x, step_t), step_t)
            x = scheduler.step(eps, step_t, x, generator=generator).prev_sample
        return x


def scheduler_config(schedule: Schedule) -> dict[str, Any]:
    """The arguments every scheduler here shares: our T and β, ε-prediction."""
    return dict(num_train_timesteps=schedule.num_timesteps, trained_betas=schedule.betas.cpu().numpy(),
                prediction_type="epsilon")


@register
class DDPM(SchedulerSampler):
    """Ancestral sampling of Ho et al. 2020 (Alg. 2) with σ_k² = β̃_k ("fixed_small", Sec. 3.2).

    "linspace" spacing: the first call is at k = T-1, where x_T is drawn, the last at k = 0.
    """

    name, default_steps, stochastic = "ddpm", 1000, True

    def scheduler(self, schedule: Schedule) -> SchedulerMixin:
        return DDPMScheduler(**scheduler_config(schedule), variance_type="fixed_small", clip_sample=False,
                             timestep_spacing="linspace")


@register
class DDIM(SchedulerSampler):
    """Deterministic DDIM (Song, Meng & Ermon 2021, Eq. 12 with σ = 0), "linspace" spacing as DDPM.

    With ``clip_denoised`` its direction term uses the ε of the clipped x̂_0, as guided-diffusion's
    DDIM does (diffusers' own ``clip_sample`` keeps the unclipped ε; docs/generation.md, defect 5).
    """

    name, default_steps = "ddim", 50

    def scheduler(self, schedule: Schedule) -> SchedulerMixin:
        return DDIMScheduler(**scheduler_config(schedule), clip_sample=False, set_alpha_to_one=True,
                             timestep_spacing="linspace")


@register
class DPMSolver(SchedulerSampler):
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2) on integer timesteps uniform in log-SNR.

    The last model call must see (nearly) clean input: diffusers' time-uniform placement ends before
    k = 0 and its final jump returns a posterior mean that erases detail (docs/generation.md,
    defect 1). :meth:`timesteps` ends at k = 0, as the "logSNR" steps of U-ViT's DPM-Solver evaluation.
    """

    name, default_steps = "dpm_solver", 50
    lambda_min: ClassVar[float] = -5.1
    """Lowest log-SNR λ = ½·log(ᾱ/(1-ᾱ)) the grid starts from (diffusers' advice for cosine schedules;
    the linear schedule's λ at k = T-1, −5.06, lies above it)."""

    def scheduler(self, schedule: Schedule) -> SchedulerMixin:
        return DPMSolverMultistepScheduler(**scheduler_config(schedule), algorithm_type="dpmsolver++", solver_order=2)

    def set_timesteps(self, scheduler: SchedulerMixin, schedule: Schedule, steps: int, device: torch.device) -> None:
        scheduler.set_timesteps(timesteps=self.timesteps(schedule, steps), device=device)

    def timesteps(self, schedule: Schedule, steps: int) -> list[int]:
        """``steps`` distinct integer timesteps from T-1 down to 0, uniform in λ_k = ½·log(ᾱ_k/(1-ᾱ_k)).

        λ below :attr:`lambda_min` is pure noise in practice (the cosine schedule's last steps), so the
        grid starts there and only the first step is at T-1. Integer, so the model sees exactly the
        timesteps (and ᾱ_k) it was trained on; where rounding would repeat a timestep (the flat ends of
        λ_k), neighbours are pushed apart by one.
        """
        T = schedule.num_timesteps
        if not 1 <= steps <= T:
            raise ConfigError(f"steps={steps} must be between 1 and num_timesteps={T}")
        alpha_bar = schedule.alphas_cumprod
        lam = 0.5 * (alpha_bar.log() - (1 - alpha_bar).log()).cpu()  # increasing as k falls
        grid = torch.linspace(max(float(lam[-1]), self.lambda_min), float(lam[0]), steps, dtype=torch.float64)
        # λ_k decreases in k: searchsorted on the reversed (increasing) sequence gives T-1-k.
        t = (T - 1 - torch.searchsorted(lam.flip(0).contiguous(), grid)).clamp(0).tolist()
        t[-1] = 0
        for i in range(len(t) - 2, -1, -1):  # from the end: strictly decreasing, last = 0
            t[i] = max(t[i], t[i + 1] + 1)
        t[0] = T - 1
        for i in range(1, len(t)):  # from the start: first = T-1 (where x_T ~ N(0, I) is drawn)
            t[i] = min(t[i], t[i - 1] - 1)
        return t


@register
class DPMSolverFast(SchedulerSampler):
    """U-ViT's "DPM-Solver-fast": DPM-Solver (ε form; Lu et al. 2022, "DPM-Solver") of order 3 with
    lower orders last, from t_c = 1 to :attr:`end_time` = 1e-4 (U-ViT's eps), steps uniform in log-SNR
    (Sec. 3.4). For 50 model calls that is 16 third-order steps and one second-order step.

    Some of the last calls fall below the first trained step (k < 0); the model sees them as
    fractional timesteps. x̂_0 is not clipped, as in U-ViT's evaluation.
    """

    name, default_steps, continuous, end_time = "dpm_solver_fast", 50, True, 1e-4

    def scheduler(self, schedule: Schedule) -> SchedulerMixin:
        with warnings.catch_warnings():  # diffusers deprecates the ε form; U-ViT's protocol uses it
            warnings.filterwarnings("ignore", message=".*dpmsolver.* is deprecated", category=FutureWarning)
            return DPMSolverSinglestepScheduler(
                **scheduler_config(schedule), algorithm_type="dpmsolver", solver_order=3, lower_order_final=True,
                final_sigmas_type="sigma_min",  # keeps the last step 2nd order; set_timesteps sets its σ
            )

    def set_timesteps(self, scheduler: SchedulerMixin, schedule: Schedule, steps: int, device: torch.device) -> None:
        scheduler.set_timesteps(steps, device=device)  # the order plan for `steps` calls
        k, sigmas = self.grid(schedule, steps)
        scheduler.timesteps = k[:-1].float().to(device)  # the network's (fractional) timesteps
        scheduler.sigmas = sigmas.float()  # σ/α at every grid point, the last one the end time

    def grid(self, schedule: Schedule, steps: int) -> tuple[Tensor, Tensor]:
        """(k [steps+1], σ/α [steps+1]): points uniform in λ = log(α/σ) from t_c = 1 to :attr:`end_time`.

        k is found from λ by inverting the monotone λ(k) on a dense grid.
        """
        T = schedule.num_timesteps
        dense = torch.linspace(T * self.end_time - 1, T - 1, 200_001, dtype=torch.float64)
        lab = schedule.log_alpha_bar(dense)
        lam = 0.5 * (lab - torch.log(-torch.expm1(lab)))  # λ(k), decreasing in k
        grid = torch.linspace(float(lam[-1]), float(lam[0]), steps + 1, dtype=torch.float64)
        # np.interp needs increasing x: flip λ (and k) so λ increases.
        k = torch.from_numpy(np.interp(grid.numpy(), lam.flip(0).numpy(), dense.flip(0).numpy()))
        return k, torch.exp(-grid)


@register
class EulerMaruyama(Sampler):
    """Euler–Maruyama of the reverse VP-SDE (Song et al. 2021, Eq. 6), as U-ViT's evaluation sampler:

        dx = [−½β(t)x − β(t)∇log p_t(x)] dt + √β(t) dw̄,   ∇log p_t(x) = −ε_θ(x, t)/σ_t,

    on the grid t_c ∈ [0, linspace(1e-3, 1, steps)] from 1 down: each step from t to s < t is
    x ← x + drift·(s − t) + √(β(t)(t − s))·z, without noise on the last step (to s = 0).
    β(t_c) = −d log ᾱ/dt_c of our schedule (about 0.1 + 19.9 t_c for the linear one). No diffusers
    scheduler implements this SDE with our interpolated ᾱ; x̂_0 is not clipped, as in U-ViT.
    """

    name, default_steps, continuous, stochastic = "euler_maruyama", 1000, True, True
    last_noisy_time: ClassVar[float] = 1e-3
    """U-ViT's eps: the grid's smallest positive time; the step from it to 0 adds no noise."""

    def run(
        self, schedule: Schedule, eps_of: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None
    ) -> Tensor:
        T = schedule.num_timesteps
        grid = torch.cat([torch.zeros(1, dtype=torch.float64),
                          torch.linspace(self.last_noisy_time, 1, steps, dtype=torch.float64)])
        beta_table = -torch.log1p(-schedule.betas) * T  # −d log ᾱ/dt_c on step k, in continuous time
        for s, t in zip(grid.flip(0)[1:], grid.flip(0)[:-1]):
            k = T * t - 1
            sigma = torch.sqrt(-torch.expm1(schedule.log_alpha_bar(k)))
            beta = beta_table[min(int(k.round()), T - 1)]
            drift = -0.5 * beta * x + (beta / sigma) * eps_of(x, k)
            x = x + drift.to(x.dtype) * float(s - t)
            if s > 0:
                z = torch.randn(x.shape, generator=generator, device=x.device)
                x = x + float(torch.sqrt(beta * (t - s))) * z
        return x
