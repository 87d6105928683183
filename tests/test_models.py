"""Backbones: preset parameter counts (the papers' Table 6 / official configs), skip order, scalers at the merge line,
forward/backward for every backbone × scaler, determinism, hooks, configuration errors."""

import pytest
import torch

from scalelong.config import build_model
from scalelong.errors import ConfigError
from scalelong.models import MLPUNet, UNet, UViT
from scalelong.scalers import SCALERS, LearnableScaling

PAPER_PRESETS = {  # paper presets: preset -> (parameters, LSCs)
    "uvit_s2_cifar10": (44.3e6, 6),
    "uvit_s4_celeba64": (44.3e6, 6),
    "uvit_m4_imagenet64": (130.9e6, 8),
    "uvit_l4_imagenet64": (286.8e6, 10),
    "unet_ddpm_cifar10": (35.7e6, 12),
}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_preset_parameter_count_within_half_a_percent(preset):
    with torch.device("meta"):
        model = build_model(preset)
    params, skips = PAPER_PRESETS[preset]
    assert abs(count(model) - params) / params < 0.005
    assert model.num_skips == skips


def test_ls_gate_of_uvit_s2_cifar10_has_8497_parameters_shared_and_6x_per_skip():
    with torch.device("meta"):
        shared = build_model("uvit_s2_cifar10", "ls")
        per_skip = build_model("uvit_s2_cifar10", "ls", ["scaler.shared=false"])
        none = build_model("uvit_s2_cifar10", "none")
    assert count(shared.skip_scales) == 8497
    assert count(per_skip.skip_scales) == 6 * 8497
    assert count(shared) - count(none) == 8497


@pytest.mark.parametrize(
    "overrides,params",
    [([], 130_940_292), (["model.null_label=true", "model.class_dropout=0.1"], 130_941_060)],
)
def test_uvit_m4_imagenet64_has_the_official_1000_row_label_embedding(overrides, params):
    with torch.device("meta"):
        model = build_model("uvit_m4_imagenet64", "cs", overrides)
    assert count(model) == params
    assert model.label_embed.num_embeddings == 1000 + (params - 130_940_292) // 768


def test_a_model_without_null_label_refuses_label_dropout_and_missing_labels():
    with pytest.raises(ConfigError, match="model.null_label=true or model.class_dropout=0"):
        small_uvit(num_classes=5, class_dropout=0.1, null_label=False)
    model = small_unet(num_classes=5, class_dropout=0.0, null_label=False).eval()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 5])
    assert model(x, t, torch.tensor([4, 0])).shape == (2, 3, 8, 8)
    assert model.label_embed.num_embeddings == 5
    with pytest.raises(ConfigError, match="no null label"):
        model(x, t, None)


@pytest.mark.parametrize("preset,skips", [("uvit_small", 4), ("uvit_deep", 10), ("unet_small", 6)])
def test_cpu_presets(preset, skips):
    model = build_model(preset)
    assert model.num_skips == skips
    x = torch.randn(2, 1, 28, 28)
    assert model(x, torch.tensor([0, 999])).shape == x.shape
    assert preset != "uvit_deep" or model.num_skips >= 8


def small_uvit(scaler="none", **kw):
    args = dict(img_size=8, patch_size=2, in_chans=3, embed_dim=32, depth=4, num_heads=2)
    return UViT(**{**args, **kw}, scaler=scaler)


def small_unet(scaler="none", **kw):
    args = dict(img_size=8, in_chans=3, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                attn_resolutions=(4,), dropout=0.0, norm_groups=8)
    return UNet(**{**args, **kw}, scaler=scaler)


def scale_with_same_weights(make, scaler, seed=0):
    """A model whose weights are perturbed so zero-initialised layers (DDPM) carry signal."""
    torch.manual_seed(seed)
    model = make(scaler)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("make", [small_uvit, small_unet])
@pytest.mark.parametrize("scaler", ["cs_one", "uniform_one"])
def test_kappa_one_equals_no_scaling_for_the_same_weights(make, scaler):
    name, kwargs = {"cs_one": ("cs", {"kappa": 1.0}), "uniform_one": ("uniform", {"c": 1.0})}[scaler]
    base = scale_with_same_weights(make, "none").eval()
    scaled = scale_with_same_weights(make, SCALERS[name](**kwargs)).eval()
    scaled.load_state_dict(base.state_dict())
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 700])
    assert torch.equal(base(x, t), scaled(x, t))


@pytest.mark.parametrize("make", [small_uvit, small_unet])
def test_cs_changes_the_output_and_only_through_the_skips(make):
    base = scale_with_same_weights(make, "none").eval()
    cs = scale_with_same_weights(make, "cs").eval()
    cs.load_state_dict(base.state_dict())
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 700])
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((i[0], o))) for m in cs.skip_scales]
    out = cs(x, t)
    for h in hooks:
        h.remove()
    assert not torch.allclose(out, base(x, t))
    kappas = cs.kappas()
    # hooks run innermost first (the decoder pops s_N first)
    for (s_in, s_out), kappa in zip(seen, reversed(kappas)):
        assert torch.allclose(s_out, kappa * s_in)


SCALER_NAMES = sorted(SCALERS)


@pytest.mark.parametrize("scaler", SCALER_NAMES)
@pytest.mark.parametrize("make", [small_uvit, small_unet])
@pytest.mark.parametrize("num_classes", [0, 5])
def test_forward_backward_every_backbone_and_scaler(make, scaler, num_classes):
    torch.manual_seed(0)
    model = make(scaler, num_classes=num_classes)
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([0, 10, 999])
    y = torch.tensor([0, 4, 2]) if num_classes else None
    out = model(x, t, y)
    assert out.shape == x.shape
    out.square().mean().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)
    assert sum(float(p.grad.abs().sum()) for p in trainable) > 0
    assert len(model.kappas()) == model.num_skips


@pytest.mark.parametrize("scaler", SCALER_NAMES)
def test_mlp_unet_every_scaler(scaler):
    torch.manual_seed(0)
    model = MLPUNet(width=32, num_skips=4, layers=2, scaler=scaler)
    x = torch.randn(5, 32)
    out = model(x)
    assert out.shape == (5, 32)
    out.square().mean().backward()
    assert model.a[0][0].weight.grad is not None


def test_mlp_unet_follows_eq3_and_kaiming_init():
    torch.manual_seed(0)
    model = MLPUNet(width=512, num_skips=2, layers=1, scaler="cs")
    w = model.a[0][0].weight
    assert w.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.02)
    x = torch.randn(3, 512)
    a1, b1 = model.a[0][0].weight, model.b[0][0].weight
    a2, b2, mid = model.a[1][0].weight, model.b[1][0].weight, model.mid[0].weight
    u1 = x @ a1.T
    u2 = u1 @ a2.T
    h1 = (0.5 * u2 + u2 @ mid.T) @ b2.T  # f_1 = b_2[κ_2 a_2 x + f_2(a_2 x)], κ_2 = 0.5
    h0 = (1.0 * u1 + h1) @ b1.T
    assert torch.allclose(model(x), h0, atol=1e-5)


@pytest.mark.parametrize("make", [small_uvit, small_unet])
def test_class_labels_and_null_label(make):
    model = scale_with_same_weights(lambda s: make(s, num_classes=5, class_dropout=0.0), "cs")
    model.eval()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 5])
    a = model(x, t, torch.tensor([1, 1]))
    b = model(x, t, torch.tensor([3, 3]))
    null = model(x, t, None)
    assert not torch.allclose(a, b)
    assert torch.equal(null, model(x, t, torch.tensor([5, 5])))


def test_label_dropout_only_in_training():
    model = scale_with_same_weights(lambda s: small_uvit(s, num_classes=5, class_dropout=1.0), "none")
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([5, 5]), torch.tensor([1, 2])
    assert torch.equal(model.train()(x, t, y), model(x, t, None))
    assert not torch.equal(model.eval()(x, t, y), model(x, t, None))


@pytest.mark.parametrize("make", [small_uvit, small_unet])
@pytest.mark.parametrize("scaler", ["none", "cs", "ls", "learnable_scalar"])
def test_determinism_under_a_fixed_seed(make, scaler):
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        outs.append(make(scaler).eval()(x, t))
    assert torch.equal(*outs)


def test_image_size_not_divisible_by_patch_is_a_config_error():
    with pytest.raises(ConfigError, match="img_size=30 is not divisible by model.patch_size=4"):
        UViT(img_size=30, patch_size=4)
    with pytest.raises(ConfigError, match="img_size=28 is not divisible by 2\\^3"):
        UNet(img_size=28, ch_mult=(1, 2, 2, 2))


def test_labels_to_an_unconditional_model_is_a_config_error():
    for model in (small_uvit(), small_unet()):
        with pytest.raises(ConfigError, match="unconditional model"):
            model(torch.randn(1, 3, 8, 8), torch.tensor([1]), torch.tensor([0]))


def test_observation_points_are_named_and_free_when_unused():
    model = small_uvit("ls")
    assert model.num_skips == 2
    assert set(model.decoder_levels()) == {1, 2}
    assert model.decoder_levels()[2] is model.out_blocks[0]  # innermost skip merges first
    assert list(model.blocks()) == ["in_block_1", "in_block_2", "mid_block", "out_block_1", "out_block_2"]
    assert all(not m._forward_hooks for m in model.modules())
    unet = small_unet()
    assert set(unet.decoder_levels()) == set(range(1, unet.num_skips + 1))
    feats = {}
    for i, level in unet.decoder_levels().items():
        level.register_forward_hook(lambda m, inp, out, i=i: feats.__setitem__(i, out.shape))
    unet(torch.randn(1, 3, 8, 8), torch.tensor([1]))
    assert feats[1] == (1, 16, 8, 8) and len(feats) == unet.num_skips


def test_ls_gate_keeps_default_init_inside_uvit():
    torch.manual_seed(0)
    model = UViT(img_size=8, patch_size=2, embed_dim=32, depth=4, num_heads=2,
                 scaler=LearnableScaling(ratio=4))
    gate = model.skip_scales[0].gate.core.down.weight
    bound = 1 / 17**0.5  # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), L = 16 + 1
    assert gate.abs().max() <= bound and gate.std() > 0.05
