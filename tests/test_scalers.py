"""The skip scalers of scalelong.scalers: κ values, order, LS gates, baselines, errors."""

import logging
import math

import pytest
import torch

from scalelong.errors import ConfigError
from scalelong.scalers import (
    SCALERS,
    ConstantScaling,
    LearnableScaling,
    ReversedConstantScaling,
    ReZero,
    SkipSpec,
    StableScaling,
    UniformScaling,
    build_scaler,
)


def token_specs(n: int, length: int = 257, dim: int = 64) -> list[SkipSpec]:
    return [SkipSpec(i, "tokens", (length, dim)) for i in range(1, n + 1)]


def test_cs_kappa_order_outermost_is_one_innermost_is_kappa_pow_n_minus_1():
    kappas = ConstantScaling(0.5).skips(token_specs(6)).kappas()
    assert kappas[0] == 1.0
    assert kappas[-1] == 0.5**5
    assert kappas == [0.5 ** (i - 1) for i in range(1, 7)]


def test_cs_reversed_is_the_opposite_order():
    kappas = ReversedConstantScaling(0.5).skips(token_specs(6)).kappas()
    assert kappas[0] == 0.5**6
    assert kappas[-1] == 0.5
    assert kappas == [0.5 ** (6 - i + 1) for i in range(1, 7)]


def test_uniform_default_is_one_over_sqrt2():
    assert UniformScaling().skips(token_specs(3)).kappas() == [1 / math.sqrt(2)] * 3


def test_constant_scale_multiplies_the_skip_only():
    scales = ConstantScaling(0.5).skips(token_specs(3))
    s = torch.randn(2, 257, 64)
    assert torch.equal(scales[0](s), s)
    assert torch.allclose(scales[2](s), 0.25 * s)


@pytest.mark.parametrize("kappa", [0.0, -0.5])
def test_nonpositive_kappa_is_a_config_error(kappa):
    with pytest.raises(ConfigError, match="kappa"):
        ConstantScaling(kappa)


def test_kappa_above_one_is_allowed_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        scaler = ConstantScaling(1.2)
    assert scaler.skips(token_specs(3)).kappas()[2] == pytest.approx(1.44)
    assert "Fig. 13" in caplog.text


def test_unknown_scaler_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown scaler 'foo'.*none, uniform, cs"):
        build_scaler("foo")


def test_every_spec_name_is_registered():
    expected = {"none", "uniform", "cs", "cs_reversed", "learnable_scalar", "ls"}
    assert expected | {"rezero", "stable", "skip_norm"} == set(SCALERS)


def test_ls_gate_shapes_and_range_tokens():
    scales = LearnableScaling().skips(token_specs(2))
    s = torch.randn(3, 257, 64)
    gate = scales[0].gate(s)
    assert gate.shape == (3, 257, 1)
    assert bool(((gate > 0) & (gate < 1)).all())
    assert torch.allclose(scales[0](s), s * gate)
    assert 0.3 < scales[0].kappa() < 0.7  # default init: σ(ζ(·)) starts near 0.5


def test_ls_shared_gate_across_channel_widths_has_one_coder_pair_per_wider_width():
    specs = [
        SkipSpec(1, "channels", (32, 16, 16)),
        SkipSpec(2, "channels", (64, 8, 8)),
        SkipSpec(3, "channels", (64, 8, 8)),
        SkipSpec(4, "channels", (128, 4, 4)),
    ]
    scales = LearnableScaling(ratio=4).skips(specs)
    cores = {id(m.gate.core) for m in scales}
    assert len(cores) == 1  # one ζ on C_min = 32 shared by every skip
    assert scales[1].gate.encode is scales[2].gate.encode  # equal widths share a coder pair
    assert scales[1].gate.encode is not scales[3].gate.encode
    # ζ: 32->8->32 (core ratio 4); en/de of App. A.2 with r_i = ⌊C_i/4⌋, a bottleneck of 4:
    # 64: 64->4->32 and 32->4->64; 128: 128->4->32 and 32->4->128
    expected = (32 * 8 + 8 + 8 * 32 + 32) + (64 * 4 + 4 + 4 * 32 + 32) + (32 * 4 + 4 + 4 * 64 + 64)
    expected += (128 * 4 + 4 + 4 * 32 + 32) + (32 * 4 + 4 + 4 * 128 + 128)
    assert sum(p.numel() for p in scales.parameters()) == expected
    for spec, scale in zip(specs, scales):
        s = torch.randn(2, *spec.shape, requires_grad=True)
        gate = scale.gate(s)
        assert gate.shape == (2, spec.shape[0], 1, 1)
        assert bool(((gate > 0) & (gate < 1)).all())


@pytest.mark.parametrize("width,hidden", [(6, 6), (10, 5), (64, 4), (256, 4), (257, 4), (3, 3)])
def test_ls_coder_ratio_is_floor_of_width_over_4(width, hidden):
    """App. A.2 Eq. (12)-(13): r_i = ⌊C_i/4⌋, bottleneck C_i // r_i, whatever the core ratio."""
    specs = [SkipSpec(1, "channels", (2, 4, 4)), SkipSpec(2, "channels", (width, 2, 2))]
    scales = LearnableScaling(ratio=16).skips(specs)
    assert scales[1].gate.encode.down.out_features == hidden
    assert scales[1].gate.decode.down.out_features == hidden
    assert scales[1].gate.core.down.out_features == 1  # the core keeps r = 16 on C_min = 2


def test_ls_gates_receive_gradients_from_the_skip_only():
    scales = LearnableScaling(ratio=4).skips(token_specs(2, length=20, dim=8))
    s = torch.randn(2, 20, 8)
    (scales[0](s).sum() + scales[1](2 * s).sum()).backward()
    grads = [p.grad for p in scales.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("activation", ["relu", "elu", "mish"])
def test_ls_activations(activation):
    scales = LearnableScaling(activation=activation, shared=False).skips(token_specs(2, 32, 8))
    assert scales[1](torch.randn(1, 32, 8)).shape == (1, 32, 8)


def test_ls_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="activation"):
        LearnableScaling(activation="tanh")
    with pytest.raises(ConfigError, match="ratio"):
        LearnableScaling(ratio=0)


def test_branch_baselines():
    h = torch.randn(4, 5)
    rezero = ReZero().branch()
    assert torch.equal(rezero(h), torch.zeros_like(h))
    assert [n for n, _ in rezero.named_parameters()] == ["alpha"]
    stable = StableScaling(0.3).branch()
    assert torch.allclose(stable(h), 0.3 * h)
    assert list(stable.parameters()) == []
    # baselines leave the LSCs at κ = 1
    assert ReZero().skips(token_specs(3)).kappas() == [1.0, 1.0, 1.0]


def test_skip_norm_normalises_tokens_and_channels():
    tok = build_scaler("skip_norm").skips(token_specs(1, 10, 16))[0]
    out = tok(5 + 3 * torch.randn(2, 10, 16))
    assert torch.allclose(out.mean(-1), torch.zeros(2, 10), atol=1e-5)
    ch = build_scaler("skip_norm").skips([SkipSpec(1, "channels", (48, 4, 4))])[0]
    assert ch.norm.num_groups == 16  # gcd(32, 48)
