"""The LightningModule's optimiser: which parameters weight decay reaches (issue 8, item 5)."""

import torch

from scalelong.diffusion import Diffusion
from scalelong.lit import DiffusionModule, no_decay_names
from scalelong.models import UNet, UViT


def groups(model: torch.nn.Module, exclude: bool) -> list[tuple[float, set[str]]]:
    module = DiffusionModule(model, Diffusion(), weight_decay=0.03, exclude_from_decay=exclude)
    names = {id(p): n for n, p in model.named_parameters()}
    opt = module.configure_optimizers()["optimizer"]
    return [(g["weight_decay"], {names[id(p)] for p in g["params"]}) for g in opt.param_groups]


def test_official_recipe_decays_every_parameter():
    model = UViT(img_size=8, patch_size=2, embed_dim=32, depth=4, num_heads=2, num_classes=5)
    (decay, names), = groups(model, exclude=False)
    assert decay == 0.03 and names == {n for n, _ in model.named_parameters()}


def test_exclusion_spares_norms_biases_tables_and_pos_embed_but_not_the_time_mlp():
    unet = UNet(img_size=8, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), norm_groups=8,
                num_classes=5, scaler="learnable_scalar")
    (wd, decayed), (zero, spared) = groups(unet, exclude=True)
    assert (wd, zero) == (0.03, 0.0)
    assert {"time_embed.0.weight", "time_embed.2.weight"} <= decayed  # Linear layers of the time MLP
    assert {"label_embed.weight", "time_embed.0.bias", "skip_scales.0.weight"} <= spared
    assert all(p.ndim >= 2 for n, p in unet.named_parameters() if n in decayed)
    uvit = UViT(img_size=8, patch_size=2, embed_dim=32, depth=4, num_heads=2, num_classes=5)
    spared = no_decay_names(uvit)
    assert {"pos_embed", "label_embed.weight", "norm.weight"} <= spared
    assert "patch_embed.weight" not in spared and "decoder_pred.weight" not in spared
    assert {n for n in spared if uvit.get_parameter(n).ndim >= 2} == {"pos_embed", "label_embed.weight"}
