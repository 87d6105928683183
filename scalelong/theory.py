"""Numerical checks of ScaleLong's theory on the MLP-UNet of Eq. (3).

Each check returns numbers (no printing, no plotting):

* :func:`lemma_3_2` — E‖x_t‖²/m = 1 − 2·E_t[ᾱ_t]/3 for x_0 ~ U[−1, 1]^m.
* :func:`theorem_3_1` — ‖h_i‖² ≈ c1·‖x_t‖²·Σ_{j=i+1..N} κ_j² + c2 at Kaiming init, fitted across
  levels and scalers, together with a zero-parameter depth-aware prediction (see below).
* :func:`theorem_3_3` — per-block gradient norms against Σ_{j≥i} κ_j².
* :func:`theorem_3_4` — input sensitivity ‖net(x_t + δ) − net(x_t)‖/‖δ‖ per scaler at the same
  weights, and M0 = max_i ‖b_i∘a_i‖₂ from :func:`scalelong.jacobian.spectral_norm_jacobian`
  (App. Fig. 11).

What they come to at the defaults is in docs/theory.md; tests/test_theory.py asserts bounds on them.

The theorems' "≲" hides a per-block constant. With Kaiming N(0, 2/m) on every matrix, as the paper
assumes, the last (non-rectified) layer of each block doubles the expected energy, so a path through k
blocks carries a factor 2^k. For a per-block energy gain γ the recursion ‖s_i‖² = γ‖s_{i−1}‖²,
‖h_N‖² = γ‖s_N‖², ‖h_{i−1}‖² = γ(κ_i²‖s_i‖² + ‖h_i‖²) (s_i ⟂ h_i, which holds in expectation because
every block ends in a fresh zero-mean matrix) has the solution

    ‖h_i‖² ≈ ‖x_t‖²·γ^i·[Σ_{j>i} κ_j²·γ^(2(j−i)) + γ^(2(N−i)+1)],

:func:`depth_aware_energy`, a prediction with no fitted constant. With norm-preserving blocks (γ = 1,
``ToyNets(block_gain=1)``: last layer N(0, 1/m)) it is Thm 3.1's form with c1 = 1 and c2 = ‖x_t‖²/m.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from scalelong.diffusion import Diffusion
from scalelong.jacobian import input_sensitivity, spectral_norm_jacobian
from scalelong.models.mlp_unet import MLPUNet
from scalelong.scalers import ConstantScaling, NoScaling, Scaler, UniformScaling

THEOREM_3_1_SCALERS: tuple[Scaler, ...] = (
    NoScaling(),
    UniformScaling(),
    ConstantScaling(0.3),
    ConstantScaling(0.5),
    ConstantScaling(0.7),
    ConstantScaling(0.9),
)
THEOREM_3_4_SCALERS: tuple[Scaler, ...] = (NoScaling(), UniformScaling(), ConstantScaling(0.5))


def scaler_label(scaler: Scaler) -> str:
    """A short name with the scaler's options, e.g. ``none`` or ``cs(kappa=0.5)``."""
    options = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in vars(scaler).items())
    return f"{scaler.name}({options})" if options else scaler.name


# --------------------------------------------------------------------------------------------
# Inputs and models
# --------------------------------------------------------------------------------------------


def sample_uniform_xt(
    diffusion: Diffusion, num_samples: int, width: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """(x_t, ε_t) in float32 for x_0 ~ U[−1, 1]^m and t ~ U{0, …, T−1}, the setting of Lemma 3.2."""
    x0 = torch.rand(num_samples, width, generator=generator, dtype=torch.float64) * 2 - 1
    t = torch.randint(0, diffusion.num_timesteps, (num_samples,), generator=generator)
    eps = torch.randn(num_samples, width, generator=generator, dtype=torch.float64)
    x_t = diffusion.q_sample(x0, t.to(diffusion.alphas_cumprod.device), eps)
    return x_t.float(), eps.float()


@dataclass(frozen=True)
class ToyNets:
    """The MLP-UNets of Eq. (3) that a check compares: one per scaler, all with the same weights.

    ``block_gain`` γ sets the variance of each block's last matrix to γ/m, the expected factor by
    which a block multiplies ‖·‖²: 2 is Kaiming N(0, 2/m) on every matrix (the paper's
    assumption); 1 makes every block norm-preserving in expectation.
    """

    width: int = 512
    num_skips: int = 6
    layers: int = 2
    block_gain: float = 2.0

    def build(self, scalers: Sequence[Scaler], seed: int = 0) -> list[MLPUNet]:
        """One net per scaler from the same seeded Kaiming draw; the global RNG is restored."""
        nets = []
        with torch.random.fork_rng(), torch.no_grad():
            for scaler in scalers:
                torch.manual_seed(seed)  # the blocks are drawn before the skip scales: same weights
                net = MLPUNet(self.width, self.num_skips, self.layers, scaler).eval()
                if self.block_gain != 2.0:
                    for block in [*net.a, *net.b, net.mid]:
                        block[-1].weight.mul_(math.sqrt(self.block_gain / 2.0))
                nets.append(net)
        return nets


# --------------------------------------------------------------------------------------------
# Lemma 3.2
# --------------------------------------------------------------------------------------------


class Lemma32(NamedTuple):
    """Measured and predicted E‖x_t‖²/m, with the standard error of the measurement."""

    measured: float
    predicted: float
    stderr: float


def lemma_3_2(
    diffusion: Diffusion, width: int = 256, num_samples: int = 20000, generator: torch.Generator | None = None
) -> Lemma32:
    """Lemma 3.2: for x_0 ~ U[−1, 1]^m, E‖x_t‖²/m = E_t[ᾱ_t]/3 + 1 − E_t[ᾱ_t] = 1 − 2·E_t[ᾱ_t]/3.

    The measurement averages ‖x_t‖²/m over ``num_samples`` draws of (x_0, t, ε); the prediction
    uses the exact mean of ᾱ_t over t ∈ {0, …, T−1}.
    """
    x0 = torch.rand(num_samples, width, generator=generator, dtype=torch.float64) * 2 - 1
    t = torch.randint(0, diffusion.num_timesteps, (num_samples,), generator=generator)
    eps = torch.randn(num_samples, width, generator=generator, dtype=torch.float64)
    energy = diffusion.q_sample(x0, t.to(diffusion.alphas_cumprod.device), eps).pow(2).mean(dim=1).cpu()
    predicted = 1 - 2 * float(diffusion.alphas_cumprod.double().mean()) / 3
    return Lemma32(float(energy.mean()), predicted, float(energy.std() / math.sqrt(num_samples)))


# --------------------------------------------------------------------------------------------
# Theorem 3.1
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def hidden_feature_energies(model: MLPUNet, x: Tensor) -> dict[int, float]:
    """Mean ‖h_i‖²/m over the batch for i = 0 … N (Thm 3.1's h_i, the output of f_i in Eq. (3)).

    h_N is the output of ``model.mid`` and h_{i−1} the output of ``model.decoder_levels()[i]``
    (b_i); both are read with forward hooks that are removed afterwards.
    """
    energies: dict[int, float] = {}

    def record(level: int):
        def hook(module, inputs, output: Tensor) -> None:
            energies[level] = float(output.flatten(1).pow(2).mean(dim=1).mean())

        return hook

    handles = [model.mid.register_forward_hook(record(model.num_skips))]
    handles += [b.register_forward_hook(record(i - 1)) for i, b in model.decoder_levels().items()]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return dict(sorted(energies.items()))


def depth_aware_energy(kappas: Sequence[float], level: int, input_energy: float, block_gain: float) -> float:
    """E‖h_i‖²/m for blocks of energy gain γ: ‖x_t‖²/m·γ^i·[Σ_{j>i} κ_j² γ^(2(j−i)) + γ^(2(N−i)+1)].

    The recursion ‖s_i‖² = γ‖s_{i−1}‖², ‖h_N‖² = γ‖s_N‖², ‖h_{i−1}‖² = γ(κ_i²‖s_i‖² + ‖h_i‖²)
    (s_i ⟂ h_i in expectation over the init) solved in closed form; γ = 1 gives Thm 3.1's form
    with c1 = 1, c2 = ‖x_t‖²/m. ``kappas`` are κ_1 … κ_N.
    """
    n, g, i = len(kappas), block_gain, level
    skips = sum(kappas[j - 1] ** 2 * g ** (2 * (j - i)) for j in range(i + 1, n + 1))
    return input_energy * g**i * (skips + g ** (2 * (n - i) + 1))


@dataclass(frozen=True)
class FeatureRow:
    """One (scaler, level) measurement of Thm 3.1, energies per coordinate (‖·‖²/m)."""

    scaler: str
    level: int
    energy: float
    input_energy: float
    kappa_sum: float
    depth_prediction: float


@dataclass(frozen=True)
class Theorem31Result:
    """Least-squares fit energy ≈ c1·input_energy·kappa_sum + c2 over all rows, and its R².

    ``depth_r2`` is the R² of the zero-parameter :func:`depth_aware_energy` prediction.
    """

    c1: float
    c2: float
    r2: float
    depth_r2: float
    rows: tuple[FeatureRow, ...]


def r_squared(measured: Tensor, predicted: Tensor) -> float:
    """Coefficient of determination 1 − SS_res/SS_tot."""
    residual = (measured - predicted).pow(2).sum()
    total = (measured - measured.mean()).pow(2).sum()
    return float(1 - residual / total)


def fit_theorem_3_1(rows: Sequence[FeatureRow]) -> tuple[float, float, float]:
    """(c1, c2, R²) of ‖h_i‖²/m ≈ c1·(‖x_t‖²/m)·Σ_{j=i+1..N} κ_j² + c2 by least squares (Thm 3.1)."""
    y = torch.tensor([r.energy for r in rows], dtype=torch.float64)
    design = torch.tensor([[r.input_energy * r.kappa_sum, 1.0] for r in rows], dtype=torch.float64)
    coef = torch.linalg.lstsq(design, y.unsqueeze(1)).solution.squeeze(1)
    return float(coef[0]), float(coef[1]), r_squared(y, design @ coef)


def theorem_3_1(
    diffusion: Diffusion | None = None,
    toy: ToyNets = ToyNets(),
    scalers: Sequence[Scaler] = THEOREM_3_1_SCALERS,
    num_samples: int = 64,
    num_inits: int = 4,
    seed: int = 0,
) -> Theorem31Result:
    """Theorem 3.1: ‖h_i‖² ≈ c1·‖x_t‖²·Σ_{j=i+1..N} κ_j² + c2 at Kaiming initialisation.

    The theorem's statement in the main text sums from j = i; its proof (App. Eq. (43)–(45)) and
    Eq. (3) give j = i + 1 (h_N, the middle block's output, sees no skip), which is used here.
    Energies are averaged over ``num_samples`` x_t of Lemma 3.2's setting and over ``num_inits``
    weight draws (the theorem holds with high probability over the init, and at finite width one
    draw's energies are far from their mean: docs/theory.md). All scalers see the same weights and
    inputs. The module docstring gives the depth-aware prediction; docs/theory.md what the fit shows.
    """
    diffusion = diffusion if diffusion is not None else Diffusion()
    generator = torch.Generator().manual_seed(seed)
    x_t, _ = sample_uniform_xt(diffusion, num_samples, toy.width, generator)
    input_energy = float(x_t.pow(2).mean())
    totals = [[0.0] * (toy.num_skips + 1) for _ in scalers]
    for k in range(num_inits):
        nets = toy.build(scalers, seed + k)
        for total, net in zip(totals, nets):
            for level, energy in hidden_feature_energies(net, x_t).items():
                total[level] += energy / num_inits
    rows = []
    for scaler, total, net in zip(scalers, totals, nets):
        kappas = net.kappas()
        for level, energy in enumerate(total):
            rows.append(
                FeatureRow(
                    scaler=scaler_label(scaler),
                    level=level,
                    energy=energy,
                    input_energy=input_energy,
                    kappa_sum=sum(k**2 for k in kappas[level:]),
                    depth_prediction=depth_aware_energy(kappas, level, input_energy, toy.block_gain),
                )
            )
    c1, c2, r2 = fit_theorem_3_1(rows)
    depth_r2 = r_squared(
        torch.tensor([r.energy for r in rows], dtype=torch.float64),
        torch.tensor([r.depth_prediction for r in rows], dtype=torch.float64),
    )
    return Theorem31Result(c1, c2, r2, depth_r2, tuple(rows))


# --------------------------------------------------------------------------------------------
# Theorem 3.3
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradientRow:
    """Thm 3.3 at level i: per-sample ‖∇_{W of a_i, b_i} ℓ_s‖²/ℓ_s (sample mean) and Σ_{j≥i} κ_j²."""

    scaler: str
    level: int
    grad_per_loss: float
    loss: float
    kappa_sum: float


@dataclass(frozen=True)
class Theorem33Result:
    """Fit grad_per_loss ≈ c·(‖x_t‖²/m)·Σ_{j≥i} κ_j² + c3 over all rows: (c, c3, R²) and the rows."""

    c: float
    c3: float
    r2: float
    rows: tuple[GradientRow, ...]


def theorem_3_3(
    diffusion: Diffusion | None = None,
    toy: ToyNets = ToyNets(block_gain=1.0),
    scalers: Sequence[Scaler] = THEOREM_3_1_SCALERS,
    num_samples: int = 8,
    seed: int = 0,
) -> Theorem33Result:
    """Theorem 3.3: ‖∇_{W_p^q} ℓ_s‖² ≲ O(ℓ_s·‖x_t‖²·Σ_{j=i..N} κ_j² + c3) for q ∈ {a_i, b_i}.

    ℓ_s = ‖net(x_t) − ε_t‖²/m is the loss of one sample (paper Eq. (2)); the theorem is per
    sample, so gradients are taken sample by sample (a batch-mean gradient would add cancellation
    between samples that differs from level to level). The gradient of level i sums the squared
    gradients of every matrix of a_i and b_i; ``grad_per_loss`` averages ‖∇ℓ_s‖²/ℓ_s over samples.
    Default ``toy.block_gain=1`` (norm-preserving blocks), where Thm 3.1's form holds; with the
    Kaiming gain 2 the depth factors of Thm 3.1 appear again.
    """
    diffusion = diffusion if diffusion is not None else Diffusion()
    generator = torch.Generator().manual_seed(seed)
    x_t, eps = sample_uniform_xt(diffusion, num_samples, toy.width, generator)
    input_energy = float(x_t.pow(2).mean())
    rows = []
    for scaler, net in zip(scalers, toy.build(scalers, seed)):
        per_loss = torch.zeros(toy.num_skips, dtype=torch.float64)
        losses = []
        for s in range(num_samples):
            net.zero_grad(set_to_none=True)
            loss = (net(x_t[s : s + 1]) - eps[s : s + 1]).pow(2).mean()
            loss.backward()
            losses.append(float(loss.detach()))
            for i in range(1, toy.num_skips + 1):
                params = [*net.a[i - 1].parameters(), *net.b[i - 1].parameters()]
                per_loss[i - 1] += float(sum(p.grad.pow(2).sum() for p in params)) / losses[-1]
        kappas = net.kappas()
        rows += [
            GradientRow(
                scaler=scaler_label(scaler),
                level=i,
                grad_per_loss=float(per_loss[i - 1]) / num_samples,
                loss=sum(losses) / num_samples,
                kappa_sum=sum(k**2 for k in kappas[i - 1 :]),
            )
            for i in range(1, toy.num_skips + 1)
        ]
    y = torch.tensor([r.grad_per_loss for r in rows], dtype=torch.float64)
    design = torch.tensor([[input_energy * r.kappa_sum, 1.0] for r in rows], dtype=torch.float64)
    coef = torch.linalg.lstsq(design, y.unsqueeze(1)).solution.squeeze(1)
    return Theorem33Result(float(coef[0]), float(coef[1]), r_squared(y, design @ coef), tuple(rows))


# --------------------------------------------------------------------------------------------
# Theorem 3.4
# --------------------------------------------------------------------------------------------


def block_spectral_norms(model: MLPUNet, x: Tensor, iters: int = 50) -> list[float]:
    """‖b_i∘a_i‖₂ for i = 1 … N (Thm 3.4's M0 = the max; App. Fig. 11).

    The Jacobian of b_i∘a_i is evaluated at the input a_i sees in the network (x for i = 1, the
    output of a_{i−1} otherwise), per sample of the probe batch ``x``; the batch mean is reported.
    """
    norms, inputs = [], x.detach()
    for a_i, b_i in zip(model.a, model.b):
        per_sample = spectral_norm_jacobian(lambda z, a=a_i, b=b_i: b(a(z)), inputs, iters, per_sample=True)
        norms.append(float(per_sample.mean()))
        with torch.no_grad():
            inputs = a_i(inputs)
    return norms


@dataclass(frozen=True)
class Theorem34Result:
    """Input sensitivity per scaler label and σ, and the per-block ‖b_i∘a_i‖₂ with M0 their max."""

    sensitivity: dict[str, dict[float, float]]
    block_norms: tuple[float, ...]
    m0: float


def theorem_3_4(
    diffusion: Diffusion | None = None,
    toy: ToyNets = ToyNets(width=256),
    scalers: Sequence[Scaler] = THEOREM_3_4_SCALERS,
    sigmas: Sequence[float] = (1e-3, 1e-2, 1e-1),
    num_samples: int = 128,
    num_probes: int = 4,
    seed: int = 0,
) -> Theorem34Result:
    """Theorem 3.4: ‖UNet(x_t + δ) − UNet(x_t)‖ ≤ ‖δ‖·[Σ_i κ_i M0^i + c0].

    Measures the sensitivity ratio for each scaler at the same weights and inputs (the same δ
    for every scaler), and ‖b_i∘a_i‖₂ on ``num_probes`` inputs (the weights do not depend on the
    scaler, so neither do these norms).
    """
    diffusion = diffusion if diffusion is not None else Diffusion()
    generator = torch.Generator().manual_seed(seed)
    x_t, _ = sample_uniform_xt(diffusion, num_samples, toy.width, generator)
    nets = toy.build(scalers, seed)
    sensitivity = {
        scaler_label(scaler): {
            s: input_sensitivity(net, x_t, s, torch.Generator().manual_seed(seed + 1)) for s in sigmas
        }
        for scaler, net in zip(scalers, nets)
    }
    norms = block_spectral_norms(nets[0], x_t[:num_probes])
    return Theorem34Result(sensitivity, tuple(norms), max(norms))
