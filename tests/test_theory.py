"""Numerical checks of Lemma 3.2 and Theorems 3.1, 3.3, 3.4 on the MLP-UNet of Eq. (3)."""


import pytest
import torch

from scalelong.diffusion import Diffusion
from scalelong.jacobian import spectral_norm_jacobian
from scalelong.scalers import ConstantScaling, NoScaling, UniformScaling
from scalelong.theory import (
    ToyNets,
    depth_aware_energy,
    hidden_feature_energies,
    lemma_3_2,
    theorem_3_1,
    theorem_3_3,
    theorem_3_4,
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# Lemma 3.2 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lemma_3_2_measured_matches_predicted(schedule):
    measured, predicted, stderr = lemma_3_2(Diffusion(1000, schedule), generator=seeded(0))
    assert stderr < 0.003
    assert abs(measured - predicted) < 4 * stderr


def test_lemma_3_2_ddpm_mean_alpha_bar_is_the_papers():
    # App. B.3: for DDPM's linear schedule E_t[ᾱ_t] ≈ 0.27.
    _, predicted, _ = lemma_3_2(Diffusion(), num_samples=10, generator=seeded(0))
    assert 1.5 * (1 - predicted) == pytest.approx(0.2755, abs=1e-4)


# Theorem 3.1 --------------------------------------------------------------------------------


def test_feature_energies_read_every_level_and_leave_no_hooks():
    net = ToyNets(width=32, num_skips=3).build([ConstantScaling(0.5)])[0]
    energies = hidden_feature_energies(net, torch.randn(4, 32, generator=seeded(0)))
    assert list(energies) == [0, 1, 2, 3]
    with torch.no_grad():
        assert energies[0] == pytest.approx(float(net(torch.randn(4, 32, generator=seeded(0))).pow(2).mean()))
    modules = [net.mid, *net.decoder_levels().values()]
    assert all(len(m._forward_hooks) == 0 for m in modules)


def test_toy_nets_share_weights_and_keep_the_global_rng():
    state = torch.random.get_rng_state()
    a, b = ToyNets(width=16, num_skips=2).build([NoScaling(), ConstantScaling(0.5)], seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert b.kappas() == [1.0, 0.5]


def test_depth_aware_energy_solves_the_recursion():
    kappas, gain, x = [1.0, 0.6, 0.3, 0.8], 1.7, 0.9
    s = [x * gain**i for i in range(len(kappas) + 1)]  # ‖s_i‖², s_0 = x_t
    h = {len(kappas): gain * s[-1]}
    for i in range(len(kappas), 0, -1):
        h[i - 1] = gain * (kappas[i - 1] ** 2 * s[i] + h[i])
    for level, energy in h.items():
        assert depth_aware_energy(kappas, level, x, gain) == pytest.approx(energy, rel=1e-12)
    # γ = 1 is the theorem's form with c1 = 1, c2 = ‖x_t‖²/m.
    assert depth_aware_energy(kappas, 1, x, 1.0) == pytest.approx(x * (0.36 + 0.09 + 0.64) + x)


def test_theorem_3_1_fits_with_norm_preserving_blocks():
    result = theorem_3_1(toy=ToyNets(block_gain=1.0))
    input_energy = result.rows[0].input_energy
    assert result.r2 > 0.98  # measured 0.997
    assert 0.7 < result.c1 < 1.3  # measured 1.03; the recursion predicts 1
    assert result.c2 == pytest.approx(input_energy, rel=0.2)  # measured 0.70 vs 0.81


def test_theorem_3_1_at_kaiming_init_needs_the_depth_factors():
    result = theorem_3_1()  # Kaiming N(0, 2/m) everywhere: every block doubles the energy
    assert result.c1 > 0
    assert 0.4 < result.r2 < 0.75  # measured 0.56: the two-constant form fits poorly
    assert result.depth_r2 > 0.95  # measured 0.988 with no fitted constant
    energy = {(r.scaler, r.level): r.energy for r in result.rows}
    assert energy["cs(kappa=0.5)", 0] < energy["uniform(c=0.7071)", 0] < energy["none", 0]
    # h_N, the middle block's output, sees no skip and so no κ.
    assert len({e for (_, level), e in energy.items() if level == 6}) == 1


# Theorem 3.3 --------------------------------------------------------------------------------


def test_theorem_3_3_gradient_norms_follow_the_skip_sum():
    result = theorem_3_3()
    assert result.c > 0
    assert result.r2 > 0.85  # measured 0.92
    grad = {(r.scaler, r.level): r.grad_per_loss for r in result.rows}
    assert grad["cs(kappa=0.5)", 1] < grad["uniform(c=0.7071)", 1] < grad["none", 1]


# Theorem 3.4 --------------------------------------------------------------------------------


def test_theorem_3_4_cs_is_less_sensitive_than_none():
    result = theorem_3_4(num_samples=32)
    for sigma in (1e-3, 1e-2, 1e-1):
        none = result.sensitivity["none"][sigma]
        uniform = result.sensitivity["uniform(c=0.7071)"][sigma]
        cs = result.sensitivity["cs(kappa=0.5)"][sigma]
        assert cs < uniform < none
        assert cs / none < 0.9  # measured 0.77 at σ = 1e-3
    assert len(result.block_norms) == 6
    assert result.m0 == max(result.block_norms) > 1  # App. Fig. 11: M0 ≥ 1


def test_m0_of_a_linear_mlp_block_pair_is_its_matrix_norm():
    # With one layer per block, b_i∘a_i is the linear map W_b W_a.
    net = ToyNets(width=24, num_skips=2, layers=1).build([UniformScaling()])[0]
    x = torch.randn(2, 24, generator=seeded(0))
    product = net.b[0][0].weight @ net.a[0][0].weight
    estimate = spectral_norm_jacobian(lambda z: net.b[0](net.a[0](z)), x, iters=500, per_sample=True)
    torch.testing.assert_close(estimate, torch.linalg.matrix_norm(product, ord=2).expand(2), rtol=1e-3, atol=0)
