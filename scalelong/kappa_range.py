"""Choosing κ for constant scaling (``cs``, κ_i = κ^(i−1)) from the data: paper Sec. 4.1.

Thm 3.1 says the UNet output has squared norm of order ‖x_t‖²·Σ_i κ_i², and the target of
ε-prediction is ε_t, so Σ_{i=1..N} κ^(2(i−1)) should be about r_t = ‖ε_t‖²/‖x_t‖². r_t is
long-tailed over data and timesteps (paper Fig. 3b), so the paper asks the sum to lie between the
mean of r_t (≈ 1.22 there) and a high quantile (97% of r_t < 5), and derives κ ∈ [0.5, 0.95].

    stats = noise_ratio_stats(diffusion, images)             # r_t samples, mean, q97, Fig. 3a/3b
    low, high = kappa_range(stats.mean, stats.high, N)       # solve Σ κ^(2(i−1)) = target
    kappa = choose_kappa(low, high)                          # the value ``kappa: auto`` uses

With the paper's numbers (mean 1.22, q97 5) this module gives κ ∈ [0.425, 0.963] for N = 6
(U-ViT depth 12) and [0.425, 0.905] for N = 12 (DDPM CIFAR10 UNet); the paper rounds the union
of its settings to [0.5, 0.95]. ``choose_kappa`` takes the geometric midpoint, 0.640 for N = 6.

``scalelong-kappa`` (:mod:`scalelong.kappa`) prints :func:`kappa_for_config`'s report for a config;
``cs_kappa=auto`` in a run resolves through :func:`resolve_auto_kappa`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from scalelong.config import check_whole_number
from scalelong.diffusion import Diffusion
from scalelong.errors import ConfigError
from scalelong.scalers import NoScaling

log = logging.getLogger(__name__)

RULES = ("geometric", "arithmetic", "low", "high")


@dataclass(frozen=True)
class NoiseRatioStats:
    """Noise ratio r_t = ‖ε_t‖²/‖x_t‖² over data and uniform timesteps (paper Fig. 3a–b, docs/metrics.md "Noise ratio").

    Attributes:
        ratios: every sampled r_t (float64, one per (image, t) pair).
        mean: mean of r_t (the lower target of Sec. 4.1; the paper reports ≈ 1.22).
        high: the ``quantile`` of r_t (the upper target; the paper reports 97% below 5).
        quantile: the quantile level of ``high`` (0.97 by default).
        hist_counts, hist_edges: histogram of r_t (Fig. 3b), ``len(edges) == len(counts) + 1``.
        mean_xt_energy: mean of ‖x_t‖²/m over the same samples (Fig. 3a; Lemma 3.2 predicts
            1 − 2·E_t[ᾱ_t]/3 for x_0 ~ U[−1, 1]^m).
    """

    ratios: Tensor
    mean: float
    high: float
    quantile: float
    hist_counts: Tensor
    hist_edges: Tensor
    mean_xt_energy: float

    @property
    def num_samples(self) -> int:
        return self.ratios.numel()


def noise_ratio_stats(
    diffusion: Diffusion,
    images: Tensor | Iterable[Tensor | Sequence[Tensor]],
    n_t_per_image: int = 8,
    generator: torch.Generator | None = None,
    quantile: float = 0.97,
    bins: int = 100,
    max_images: int | None = None,
) -> NoiseRatioStats:
    """Sample r_t = ‖ε_t‖²/‖x_t‖² for clean images x_0 in [−1, 1] (paper Sec. 4.1, Fig. 3b).

    Each image gets ``n_t_per_image`` draws of t ~ U{0, …, T−1} and ε_t ~ N(0, I); x_t is the
    forward process of ``diffusion``. ``images`` is one B×… tensor or an iterable of batches
    (tensors, or ``(x, y)`` pairs as the data modules yield). Computed in float64, with the draws
    made on the CPU by ``generator`` so the result is reproducible; ``max_images`` stops early.
    """
    if n_t_per_image < 1:
        raise ConfigError(f"n_t_per_image={n_t_per_image} must be at least 1")
    if not 0 < quantile < 1:
        raise ConfigError(f"quantile={quantile} must lie in (0, 1) (the paper uses 0.97)")
    device = diffusion.alphas_cumprod.device
    batches = [images] if isinstance(images, Tensor) else images
    ratios, energies, seen = [], [], 0
    for batch in batches:
        x0 = (batch if isinstance(batch, Tensor) else batch[0]).detach().cpu().double()
        if max_images is not None:
            x0 = x0[: max_images - seen]
        if len(x0) == 0:
            break
        seen += len(x0)
        x0 = x0.flatten(1).repeat_interleave(n_t_per_image, dim=0)
        t = torch.randint(0, diffusion.num_timesteps, (len(x0),), generator=generator)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_t = diffusion.q_sample(x0.to(device), t.to(device), eps.to(device)).cpu()  # paper Eq. (1)
        energy = x_t.pow(2).sum(1)
        ratios.append(eps.pow(2).sum(1) / energy)
        energies.append(energy / x0.shape[1])
        if max_images is not None and seen >= max_images:
            break
    if not ratios:
        raise ConfigError("noise_ratio_stats got no images; pass a non-empty tensor or loader")
    r = torch.cat(ratios)
    counts, edges = torch.histogram(r, bins=bins)
    return NoiseRatioStats(
        ratios=r,
        mean=float(r.mean()),
        high=float(torch.quantile(r, quantile)),
        quantile=quantile,
        hist_counts=counts,
        hist_edges=edges,
        mean_xt_energy=float(torch.cat(energies).mean()),
    )


def skip_energy(kappa: float, num_skips: int) -> float:
    """Σ_{i=1..N} κ^(2(i−1)), the Σ κ_i² of ``cs`` (paper Eq. (8) in Thm 3.1's output bound)."""
    return float(sum(kappa ** (2 * i) for i in range(num_skips)))


def solve_kappa(target: float, num_skips: int, tol: float = 1e-12) -> float:
    """The κ ∈ [0, 1] with Σ_{i=1..N} κ^(2(i−1)) = target (paper Sec. 4.1), by bisection.

    g(κ) = Σ κ^(2(i−1)) is continuous and strictly increasing on [0, 1] from g(0) = 1 (only the
    outermost skip, κ_1 = 1) to g(1) = N (the standard UNet), so the root is unique and
    bisection reaches it to ``tol`` in about 40 halvings. Outside (1, N) there is no root:

    * target ≤ 1: the outermost skip alone already reaches the target and any κ > 0 overshoots;
      the infimum κ → 0 is returned (0.0), i.e. "scale the inner skips as hard as possible".
    * target ≥ N: even κ = 1 (no scaling) stays below it; κ is clipped to 1.0, since κ > 1
      would amplify the skips, which the paper's analysis (Thm 3.1, 3.4) argues against.
    """
    if num_skips < 1:
        raise ConfigError(f"num_skips={num_skips} must be at least 1")
    if not math.isfinite(target):
        raise ConfigError(f"target Σκ_i² = {target} must be a finite number")
    if target <= 1:
        return 0.0
    if target >= num_skips:
        return 1.0
    lo, hi = 0.0, 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if skip_energy(mid, num_skips) < target else (lo, mid)
    return 0.5 * (lo + hi)


def kappa_range(mean_ratio: float, high_ratio: float, num_skips: int) -> tuple[float, float]:
    """(κ_low, κ_high) solving Σ κ^(2(i−1)) = mean r_t and = high quantile of r_t (Sec. 4.1).

    Edge cases follow :func:`solve_kappa` (mean ≤ 1 gives κ_low = 0; high ≥ N gives κ_high = 1),
    each reported with a warning because the range then says less about the data.
    """
    if mean_ratio > high_ratio:
        raise ConfigError(
            f"mean r_t = {mean_ratio} exceeds the high quantile {high_ratio}; pass (mean, quantile) in order"
        )
    low, high = solve_kappa(mean_ratio, num_skips), solve_kappa(high_ratio, num_skips)
    if mean_ratio <= 1:
        log.warning("mean r_t = %.4g <= 1: the outermost skip alone matches it, so kappa_low -> 0", mean_ratio)
    if high_ratio >= num_skips:
        log.warning("high r_t = %.4g >= N = %d: not reachable with kappa <= 1, kappa_high clipped to 1",
                    high_ratio, num_skips)
    return low, high


def choose_kappa(kappa_low: float, kappa_high: float, rule: str = "geometric") -> float:
    """The κ that ``kappa: auto`` uses: by default the geometric midpoint √(κ_low·κ_high).

    κ acts multiplicatively (skip i is scaled by κ^(i−1)), so its natural middle is on the log
    scale. With the paper's statistics this gives 0.640 for N = 6 and 0.620 for N = 12, the middle
    of the paper's tuned defaults 0.5–0.8 (√(0.5·0.8) = 0.632); the lower end (0.425) lies below all
    of them. If κ_low = 0 (mean r_t ≤ 1) the geometric midpoint is degenerate and the arithmetic
    midpoint is used. Other rules: ``arithmetic``, ``low``, ``high``.
    """
    if rule not in RULES:
        raise ConfigError(f"kappa rule {rule!r} is unknown; use one of {', '.join(RULES)}")
    if not 0 <= kappa_low <= kappa_high <= 1:
        raise ConfigError(f"kappa range [{kappa_low}, {kappa_high}] must satisfy 0 <= low <= high <= 1")
    if rule == "low":
        return kappa_low
    if rule == "high":
        return kappa_high
    if rule == "geometric" and kappa_low > 0:
        return math.sqrt(kappa_low * kappa_high)
    return 0.5 * (kappa_low + kappa_high)


Estimate = tuple[NoiseRatioStats, float, float, float]  # stats, κ_low, κ_high, chosen κ


def estimate_kappa(
    diffusion: Diffusion,
    images: Tensor | Iterable[Tensor | Sequence[Tensor]],
    num_skips: int,
    rule: str = "geometric",
    **stats_kwargs,
) -> Estimate:
    """Measure r_t on ``images``, solve the Sec. 4.1 range, pick κ by ``rule`` (logged)."""
    stats = noise_ratio_stats(diffusion, images, **stats_kwargs)
    low, high = kappa_range(stats.mean, stats.high, num_skips)
    kappa = choose_kappa(low, high, rule)
    log.info(
        "kappa auto: mean r_t %.4g, q%g %.4g -> range [%.4f, %.4f], %s rule -> %.4f",
        stats.mean, 100 * stats.quantile, stats.high, low, high, rule, kappa,
    )
    return stats, low, high, kappa


def format_report(diffusion: Diffusion, num_skips: int, rule: str, estimate: Estimate) -> str:
    """A plain-text report of a Sec. 4.1 estimate: r_t statistics, κ range and chosen κ."""
    stats, low, high, kappa = estimate
    q = f"q{100 * stats.quantile:g}"
    return "\n".join(
        [
            f"noise ratio r_t = |eps_t|^2/|x_t|^2 over {stats.num_samples} (x_0, t) samples "
            f"({diffusion.schedule} schedule, T = {diffusion.num_timesteps})",
            f"  mean r_t        {stats.mean:.4f}",
            f"  {q:<15} {stats.high:.4f}",
            f"  mean |x_t|^2/m  {stats.mean_xt_energy:.4f}",
            f"kappa range for N = {num_skips} skips: [{low:.4f}, {high:.4f}]",
            f"  (sum_i kappa^(2(i-1)) = {stats.mean:.4f} at the low end, = {stats.high:.4f} at the high end)",
            f"chosen kappa ({rule} rule): {kappa:.4f}",
        ]
    )


def training_images(datamodule, num_images: int) -> Tensor:
    """The first ``num_images`` training images x_0 of a data module (in [-1, 1])."""
    datamodule.setup("fit")
    subset = Subset(datamodule.train_set, range(min(num_images, len(datamodule.train_set))))
    return torch.cat([x for x, _ in DataLoader(subset, batch_size=256)])


def num_skips_of(model_cfg: DictConfig) -> int:
    """N of a model config, from a parameter-free (meta-device) build."""
    with torch.device("meta"):
        return instantiate(model_cfg, scaler=NoScaling()).num_skips


def kappa_for_config(cfg: DictConfig, report: bool = False) -> tuple[float, str]:
    """The Sec. 4.1 κ for a run config (its data, schedule and model's N), and the report text.

    ``cfg.kappa_tool`` (``num_images``, ``n_t``, ``rule``, ``seed``) sets the sample sizes.
    """
    tool = cfg.get("kappa_tool") or {}
    num_images, n_t = tool.get("num_images", 2000), tool.get("n_t", 8)
    check_whole_number(num_images, "kappa_tool.num_images", 2, "training images x_0 measured", 2000)
    check_whole_number(n_t, "kappa_tool.n_t", 1, "timesteps per image", 8)
    diffusion = instantiate(cfg.diffusion)
    images = training_images(instantiate(cfg.data), num_images)
    n = num_skips_of(cfg.model)
    rule, seed = tool.get("rule", "geometric"), tool.get("seed", 0)

    estimate = estimate_kappa(diffusion, images, n, rule, n_t_per_image=n_t,
                              generator=torch.Generator().manual_seed(seed))
    return estimate[3], format_report(diffusion, n, rule, estimate) if report else ""


def resolve_auto_kappa(cfg: DictConfig) -> float | None:
    """``scaler.kappa: auto`` (or ``cs_kappa=auto``): measure κ, write it into ``cfg``, return it."""
    if cfg.scaler.get("kappa") != "auto":
        return None
    kappa, _ = kappa_for_config(cfg)
    with open_dict(cfg):
        cfg.scaler.kappa = kappa
    return kappa
