"""The LightningModule's optimiser: which parameters weight decay reaches (issue 8, item 5); checkpoint
safety: weights_only loading, the _target_ allow-list of a stored config, weights that fit it."""

import os
from pathlib import Path

import pytest
import torch

from scalelong.diffusion import Diffusion
from scalelong.errors import CheckpointError
from scalelong.lit import CONFIG_KEY, DiffusionModule, load_checkpoint, no_decay_names, read_checkpoint, seed_draws
from scalelong.models import UNet, UViT

STORED = {"model": {"_target_": "scalelong.models.UNet", "ch": 16},
          "scaler": {"_target_": "scalelong.scalers.NoScaling"},
          "diffusion": {"_target_": "scalelong.diffusion.Diffusion"}, "seed": 0}


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


class RunsCode:
    """A pickle payload: unpickling it calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_whose_pickle_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "shared.ckpt"
    torch.save({"global_step": 1, "state_dict": {}, CONFIG_KEY: STORED, "x": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="holds Python objects that are not plain data and was not loaded"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("target", ["os.system", "subprocess.Popen", "scalelong.runs.resume.shutil.rmtree",
                                    "scalelong.runs.lock.RunLock", "builtins.eval"])
def test_a_stored_config_may_only_name_scalelong_model_scaler_diffusion_and_data_classes(tmp_path, target):
    path, marker = tmp_path / "crafted.ckpt", tmp_path / "pwned"
    config = {**STORED, "model": {**STORED["model"], "scaler": {"_target_": target, "_args_": [f"touch {marker}"]}}}
    torch.save({"global_step": 1, "state_dict": {}, CONFIG_KEY: config}, path)
    with pytest.raises(CheckpointError, match=f"names model.scaler._target_='{target}', which is not a scalelong"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_checkpoint_of_another_model_is_one_line(tmp_path):
    from conftest import TINY, run_config
    from scalelong.lit import build_module

    cfg, _ = run_config(tmp_path, TINY["unet"])
    module = build_module(cfg)
    config = dict(module.config)
    config["model"] = {**config["model"], "ch": 8}  # the stored config disagrees with the weights
    path = tmp_path / "other.ckpt"
    torch.save({"global_step": 1, "state_dict": module.state_dict(), CONFIG_KEY: config}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    assert "do not fit the model of its stored config" in str(info.value)


@pytest.mark.parametrize(("decay", "horizon"), [("cosine", 7), ("constant", None)])
def test_a_checkpoint_stored_before_optim_decay_steps_existed_loads_with_the_horizon_it_ran_with(
        tmp_path, decay, horizon):
    from conftest import TINY, run_config
    from scalelong.lit import build_module

    cfg, _ = run_config(tmp_path, [*TINY["uvit"], f"optim.decay={decay}", "trainer.max_steps=7"])
    module = build_module(cfg)
    config = dict(module.config)
    config["optim"] = {k: v for k, v in config["optim"].items() if k != "decay_steps"}  # as written before the key
    path = tmp_path / "old.ckpt"
    torch.save({"global_step": 7, "state_dict": module.state_dict(), CONFIG_KEY: config}, path)
    loaded = load_checkpoint(path)
    assert loaded.decay_steps == horizon and loaded.config["optim"]["decay_steps"] == horizon


def test_seed_draws_on_a_cpu_gives_the_draws_of_torch_manual_seed() -> None:
    """A training step's t, ε and dropout draws after ``seed_draws`` are those after ``torch.manual_seed``."""
    def draws() -> tuple[torch.Tensor, ...]:
        return torch.randint(0, 1000, (8,)), torch.randn(8, 3), torch.nn.functional.dropout(torch.ones(16), 0.5)

    torch.manual_seed(1234)
    expected = draws()
    torch.manual_seed(99)  # another state in between
    seed_draws(1234, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(draws(), expected))
