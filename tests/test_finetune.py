"""Fine-tuning a trained model (scalelong/finetune.py): which tensors train, the base's outputs at the start,
the accounting, checkpoints of only the trained tensors, resume, new classes, and errors about the base."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import FAST, read_rows, run_config, train_in
from scalelong.errors import CheckpointError, ConfigError
from scalelong.finetune import METHODS, RECORD_KEY, Gamma, StartFromBase
from scalelong.lit import CONFIG_KEY, DiffusionModule, build_module, load_checkpoint

BACKBONE = {"uvit": "model=uvit_tiny", "unet": "model=unet_tiny"}


def base_checkpoint(tmp_path: Path, overrides: list[str], name: str = "base") -> Path:
    """A scalelong checkpoint of the module ``overrides`` build, every weight moved off its init (so that a
    zero-initialised layer cannot make two models agree by accident)."""
    cfg, _ = run_config(tmp_path, overrides, run_name=f"build_{name}")
    module = build_module(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    path = tmp_path / f"{name}.ckpt"
    torch.save({"state_dict": module.state_dict(), CONFIG_KEY: module.config, "global_step": 0}, path)
    return path


def tuned(tmp_path: Path, overrides: list[str], base: Path, method: str, name: str = "tuned") -> DiffusionModule:
    cfg, _ = run_config(tmp_path, [*overrides, f"finetune={method}", f"finetune.from={base}"], run_name=name)
    return build_module(cfg)


def outputs(module: DiffusionModule, seed: int = 1) -> torch.Tensor:
    m = module.model.eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, m.in_chans, m.img_size, m.img_size, generator=g)
    y = torch.tensor([0, 3, 5, 9]) if m.num_classes else None
    with torch.no_grad():
        return m(x, torch.tensor([0, 10, 500, 999]), y)


def base_name(name: str) -> str:
    """The base's name of a fine-tune model's tensor: without the γ wrappers' ``.0`` and StartFromBase's ``gated``."""
    return re.sub(r"\.(qkv|proj|branch\d?)\.0\.", r".\1.", name).replace(".gated.", ".")


@pytest.mark.parametrize(("backbone", "base_scaler", "scaler", "method"), [
    ("uvit", "none", "none", "difffit"), ("unet", "none", "none", "difffit"), ("uvit", "cs", "cs", "bitfit"),
    ("uvit", "none", "ls", "lsc"), ("unet", "cs", "ls", "difffit"), ("unet", "uniform", "learnable_scalar", "lsc"),
    ("uvit", "uniform", "ls", "difffit"), ("uvit", "ls", "ls", "full"),
])
def test_at_the_start_a_fine_tune_model_gives_the_base_outputs_exactly(tmp_path, backbone, base_scaler, scaler,
                                                                        method):
    base = base_checkpoint(tmp_path, [BACKBONE[backbone], f"scaler={base_scaler}"])
    module = tuned(tmp_path, [BACKBONE[backbone], f"scaler={scaler}"], base, method)
    assert (outputs(module) - outputs(load_checkpoint(base))).abs().max().item() == 0.0
    gammas = [m for m in module.model.modules() if isinstance(m, Gamma)]
    sites = {"uvit": 5 * 4, "unet": 11 + 3 * 4}[backbone]  # U-ViT: 5 blocks × 4; UNet: 11 ResBlocks, 4 AttnBlocks × 3
    assert len(gammas) == (sites if method == "difffit" else 0)
    assert all(torch.equal(g.gamma, torch.ones_like(g.gamma)) for g in gammas)
    if base_scaler != scaler and scaler == "ls":  # new gates: 2·κ_i·σ(0) = κ_i
        assert all(isinstance(s, StartFromBase) for s in module.model.skip_scales)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_after_optimiser_steps_only_the_trained_tensors_changed_and_the_frozen_ones_are_the_bases(tmp_path, method):
    scaler = "ls" if method == "lsc" else "cs"
    base = base_checkpoint(tmp_path, [BACKBONE["uvit"], "scaler=cs"])
    module = tuned(tmp_path, [BACKBONE["uvit"], f"scaler={scaler}"], base, method)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    opt = module.configure_optimizers()["optimizer"]
    torch.manual_seed(0)
    for _ in range(3):
        x0 = torch.randn(8, 1, 28, 28)
        loss = module.diffusion.loss(module.model.train(), x0, None, t=torch.randint(0, 1000, (8,))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = module.model.state_dict()
    trained = set(module.finetune.trained)
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed <= trained and len(changed) >= 0.9 * len(trained)
    stored = torch.load(base, weights_only=True)["state_dict"]
    frozen = [k for k in after if k not in trained and f"model.{base_name(k)}" in stored]
    assert (len(frozen) > 0) == (method != "full")
    assert all(torch.equal(after[k], stored[f"model.{base_name(k)}"]) for k in frozen)
    expected = {
        "full": lambda k: True,
        "difffit": lambda k: k.endswith((".gamma", ".bias")) or "norm" in k,
        "bitfit": lambda k: k.endswith(".bias"),
        "lsc": lambda k: k.startswith("skip_scales.") or "norm" in k,
    }[method]
    assert trained == {k for k, _ in module.model.named_parameters(remove_duplicate=False) if expected(k)}
    if method in ("difffit", "lsc"):  # γ and skip-scaler parameters learn at lr × finetune.lr_scale (10)
        fast = {id(p) for k, p in module.model.named_parameters() if k in module.finetune.fast}
        lrs = {g["lr"] for g in opt.param_groups if g["params"] and {id(p) for p in g["params"]} <= fast}
        assert lrs == {module.lr * 10}


def test_difffit_on_uvit_small_trains_under_2_percent_and_its_checkpoint_is_under_a_tenth(tmp_path):
    small = ["model=uvit_small", "trainer.max_steps=2", "callbacks.samples=null"]
    _, base_dir = train_in(tmp_path, small, "base")
    base = base_dir / "checkpoints" / "last.ckpt"
    metrics, run_dir = train_in(tmp_path, [*small, "finetune=difffit", f"finetune.from={base}"], "difffit")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_params"] == sum(p.numel() for p in load_checkpoint(base).model.parameters()) + 6912
    assert summary["trainable_params"] / summary["total_params"] < 0.02
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert summary["checkpoint_bytes"] == ckpt.stat().st_size
    assert ckpt.stat().st_size <= 0.1 * base.stat().st_size
    stored = torch.load(ckpt, weights_only=True)
    assert set(stored["state_dict"]) == {f"model.{n}" for n in stored[RECORD_KEY]["trained"]}


@pytest.mark.slow
def test_a_fine_tune_run_resumes_exactly_like_a_training_run(tmp_path):
    labels = "model.num_classes=10"  # label dropout: randomness the resumed run must repeat
    base = base_checkpoint(tmp_path, [BACKBONE["uvit"], "scaler=none", labels])
    run = [BACKBONE["uvit"], "scaler=ls", labels, "finetune=difffit", f"finetune.from={base}", "callbacks.samples=null",
           "trainer.val_check_interval=3", "callbacks.checkpoint.every_n_train_steps=3", "callbacks.ema.decay=0.9"]
    _, straight = train_in(tmp_path, [*run, "trainer.max_steps=6"], "straight")
    _, first = train_in(tmp_path, [*run, "trainer.max_steps=3"], "resumed")
    partial = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)  # what the rerun resumes from
    assert partial["global_step"] == 3
    assert set(partial["state_dict"]) == {f"model.{n}" for n in partial[RECORD_KEY]["trained"]}
    _, resumed = train_in(tmp_path, [*run, "trainer.max_steps=6"], "resumed")  # ckpt_path=auto
    a = {r["step"]: float(r["train/loss"]) for r in read_rows(straight) if r.get("train/loss")}
    b = {r["step"]: float(r["train/loss"]) for r in read_rows(resumed) if r.get("train/loss")}
    assert len(a) == 6 and a == b
    wa = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    wb = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    for key in ("state_dict", "current_model_state"):
        assert wa[key].keys() == wb[key].keys()
        assert all(torch.equal(t, wb[key][n]) for n, t in wa[key].items()), key
    # A resume with another fine-tune setting is refused naming it, as any result-changing key is.
    with pytest.raises(ConfigError, match=r"finetune.lr_scale: 10 -> 3"):
        train_in(tmp_path, [*run, "trainer.max_steps=8", "finetune.lr_scale=3"], "resumed")


def test_the_fine_tune_checkpoint_samples_and_refuses_another_base(tmp_path):
    base = base_checkpoint(tmp_path, [BACKBONE["uvit"], "scaler=none"])
    _, run_dir = train_in(tmp_path, [BACKBONE["uvit"], "finetune=difffit", f"finetune.from={base}",
                                     "scaler=none", "trainer.max_steps=2"], "ft")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    module = load_checkpoint(ckpt)  # what scalelong-sample and scalelong-eval call
    stored = torch.load(ckpt, weights_only=True)["state_dict"]
    own = module.state_dict()
    assert all(torch.equal(own[k], v) for k, v in stored.items())
    assert module.sample(2, sampler="ddim", steps=2).shape == (2, 1, 28, 28)
    # The same path now holding other weights: the fingerprint no longer matches, one line.
    torch.save({**torch.load(base, weights_only=True), "state_dict": {
        k: v + 1 for k, v in torch.load(base, weights_only=True)["state_dict"].items()}}, base)
    with pytest.raises(CheckpointError, match="was trained from a base with weights") as err:
        load_checkpoint(ckpt)
    assert "\n" not in str(err.value)


def test_another_number_of_classes_grows_the_label_table_keeping_the_null_row(tmp_path):
    base = base_checkpoint(tmp_path, [BACKBONE["uvit"], "model.num_classes=10"])
    module = tuned(tmp_path, [BACKBONE["uvit"], "model.num_classes=12"], base, "bitfit")
    old = load_checkpoint(base).model.label_embed.weight
    table = module.model.label_embed.weight
    assert table.shape == (13, 32) and torch.equal(table[:10], old[:10]) and torch.equal(table[12], old[10])
    assert "label_embed.weight" in module.finetune.trained  # a changed table always trains
    assert (outputs(module) - outputs(load_checkpoint(base))).abs().max().item() == 0.0  # classes 0..9 as before
    fewer = tuned(tmp_path, [BACKBONE["uvit"], "model.num_classes=4", "scaler=ls"], base, "lsc", "fewer")
    assert fewer.model.label_embed.weight.shape == (5, 32)
    assert torch.equal(fewer.model.label_embed.weight[4], old[10])


@pytest.mark.parametrize(("override", "error", "message"), [
    ("model.img_size=32", ConfigError, r"is a model of 1×28×28 images, but the fine-tune model is for 1×32×32"),
    ("model.in_chans=3", ConfigError, r"is a model of 1×28×28 images, but the fine-tune model is for 3×28×28"),
    ("model.embed_dim=64", CheckpointError, r"holds another architecture \(model.embed_dim: 32 -> 64\)"),
    ("model.num_classes=10", ConfigError, r"cannot add or remove the label input"),
    ("scaler=rezero", CheckpointError, r"cannot continue from"),
    ("scaler=cs", CheckpointError, r"scales its skips by κ = \[1.0, 1.0\], the fine-tune scaler by \[1.0, 0.5\]"),
])
def test_a_base_of_another_geometry_or_architecture_is_one_line(tmp_path, override, error, message):
    base = base_checkpoint(tmp_path, [BACKBONE["uvit"], "scaler=none"])
    with pytest.raises(error, match=message) as err:
        tuned(tmp_path, [BACKBONE["uvit"], override], base, "difffit")
    assert "\n" not in str(err.value)


def test_a_missing_crafted_or_fine_tuned_base_is_one_line_and_nothing_runs(tmp_path):
    overrides = [BACKBONE["uvit"]]
    with pytest.raises(ConfigError, match="finetune.from=.*missing.ckpt does not exist") as err:
        tuned(tmp_path, overrides, tmp_path / "missing.ckpt", "difffit")
    with pytest.raises(ConfigError, match="needs the checkpoint to start from"):
        build_module(run_config(tmp_path, [*overrides, "finetune=difffit"], run_name="nofrom")[0])

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, CONFIG_KEY: {}, "x": Exploit()}, crafted)
    with pytest.raises(CheckpointError, match="not plain data") as err2:
        tuned(tmp_path, overrides, crafted, "difffit", name="crafted")
    assert not (tmp_path / "pwned").exists()
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="is not a scalelong checkpoint") as err3:
        tuned(tmp_path, overrides, foreign, "bitfit", name="foreign")
    base = base_checkpoint(tmp_path, overrides)
    _, run_dir = train_in(tmp_path, [*overrides, "finetune=bitfit", f"finetune.from={base}",
                                     "trainer.max_steps=2"], "first")
    with pytest.raises(CheckpointError, match="is itself a fine-tune checkpoint") as err4:
        tuned(tmp_path, overrides, run_dir / "checkpoints" / "last.ckpt", "difffit", name="nested")
    assert all("\n" not in str(e.value) for e in (err, err2, err3, err4))


def test_lsc_with_a_scaler_without_parameters_and_a_bad_lr_scale_are_config_errors(tmp_path):
    base = base_checkpoint(tmp_path, [BACKBONE["uvit"], "scaler=cs"])
    with pytest.raises(ConfigError, match="scaler=ls or scaler=learnable_scalar"):
        tuned(tmp_path, [BACKBONE["uvit"], "scaler=cs"], base, "lsc")
    with pytest.raises(ConfigError, match="finetune.lr_scale=0"):
        tuned(tmp_path, [BACKBONE["uvit"], "finetune.lr_scale=0"], base, "difffit")


def write_shapes(folder: Path, count: int, seed: int) -> None:
    """28×28 grey images of one bright square each, a distribution the digits base never saw."""
    g = torch.Generator().manual_seed(seed)
    (folder / "a").mkdir(parents=True)
    for i in range(count):
        size, x, y = (torch.randint(6, 14, (1,), generator=g).item(), *torch.randint(0, 14, (2,), generator=g).tolist())
        image = Image.new("L", (28, 28), 0)
        image.paste(255, (x, y, x + size, y + size))
        image.save(folder / "a" / f"{i}.png")


@pytest.mark.slow
def test_difffit_on_new_data_lowers_the_base_models_validation_loss(tmp_path):
    """A tiny U-ViT trained on the digits, adapted with DiffFit to squares: the held-out loss on the squares falls
    below the base's (the same run with optim.lr=0 measures the base, with the same validation draws)."""
    tiny = [BACKBONE["uvit"], "scaler=none", "callbacks.samples=null", "optim.lr=1e-3", "callbacks.ema.decay=0.8",
            "trainer.val_check_interval=40", "trainer.max_steps=40"]
    _, base_dir = train_in(tmp_path, tiny, "base")
    for split, seed in (("train", 0), ("val", 1)):
        write_shapes(tmp_path / "data" / "shapes" / split, 96 if split == "train" else 32, seed)
    new = [*tiny, "data=image_folder", "data.folder=shapes", "data.image_size=28", "data.channels=1",
           "data.val_size=32", "data.batch_size=16", "data.random_flip=false", "finetune=difffit",
           f"finetune.from={base_dir / 'checkpoints' / 'last.ckpt'}"]
    before, _ = train_in(tmp_path, [*new, "optim.lr=0"], "frozen")
    after, _ = train_in(tmp_path, new, "difffit")
    assert after["val/loss"] < 0.985 * before["val/loss"]  # measured: 0.7234 -> 0.7049


def test_the_default_adds_no_key_and_builds_the_model_of_today(tmp_path):
    cfg, _ = run_config(tmp_path, [BACKBONE["uvit"]])
    assert "finetune" not in cfg  # conf/finetune/none.yaml: stored configs and run names as before the group
    module = build_module(cfg)
    assert module.finetune is None and all(p.requires_grad for p in module.parameters())
    groups = module.configure_optimizers()["optimizer"].param_groups  # decayed, then spared, all at optim.lr
    assert [(len(g["params"]), g["weight_decay"], g["lr"]) for g in groups] == [(25, 0.03, 2e-4), (43, 0.0, 2e-4)]


@pytest.mark.parametrize(("experiment", "scaler", "arms", "lr", "lr_scale"), [
    ("finetune_digits_scratch", "ConstantScaling", None, 2e-3, None),
    ("finetune_digits_tune", "ConstantScaling", "full", 2e-4, 1),
    ("finetune_digits_few", "ConstantScaling", "difffit,bitfit", 2e-3, 1),  # DiffFit's protocol: 10× full's lr
    ("finetune_digits_ls", "LearnableScaling", "lsc,difffit", 2e-3, 1),
])
def test_the_transfer_study_arms_compose_to_the_base_the_data_and_three_seeds(experiment, scaler, arms, lr, lr_scale):
    from scalelong.config import compose

    cfg = compose([f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.seed == "0,1,2" and params.get("finetune") == arms
    assert cfg.optim.lr == lr and OmegaConf.select(cfg, "finetune.lr_scale") == lr_scale
    assert cfg.scaler._target_.endswith(scaler) and cfg.data._target_.endswith("DigitsDataModule")
    assert (cfg.model.embed_dim, cfg.model.depth, cfg.model.num_classes, cfg.trainer.max_steps) == (64, 12, 5, 2000)
    assert (cfg.data.image_size, list(cfg.data.classes), cfg.data.batch_size) == (8, [5, 6, 7, 8, 9], 16)
    if arms:
        stored = OmegaConf.to_container(cfg.finetune)
        assert stored["method"] == ("full" if arms == "full" else "difffit")  # the group's default of the sweep
        assert stored["from"].endswith("docs/results/finetune/runs/base/checkpoints/last.ckpt")
    base = compose(["experiment=finetune_base"])  # the same model on the other five classes, for longer
    assert list(base.data.classes) == [0, 1, 2, 3, 4] and base.trainer.max_steps == 3000
    assert OmegaConf.to_container(base.model) == OmegaConf.to_container(cfg.model)


def test_the_commands_take_a_fine_tune_and_end_a_bad_base_in_one_line(tmp_path, cli):
    missing = cli("train", [*FAST, "finetune=difffit", "finetune.from=missing.ckpt"])
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("scalelong-train: finetune.from=missing.ckpt does not exist")
    assert not (tmp_path / "outputs" / "runs").exists()  # refused before Hydra made a run directory
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    bad = cli("train", [*FAST, "finetune=bitfit", f"finetune.from={foreign}"])
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == (
        f"scalelong-train: {foreign} is not a scalelong checkpoint (no stored run config); use a .ckpt written by "
        "scalelong-train")
    base = base_checkpoint(tmp_path, [BACKBONE["uvit"]])
    (tmp_path / "outputs").mkdir(exist_ok=True)
    base.rename(tmp_path / "outputs" / "base.ckpt")  # named through an interpolation, as the study's experiments do
    done = cli("train", [*FAST, "finetune=difffit", "finetune.from=${paths.output_dir}/base.ckpt", "run_name=ft"])
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "outputs" / "runs" / "ft"
    assert json.loads((run / "summary.json").read_text())["trainable_params"] == 2737
    sample = cli("sample", [f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "num_samples=2", "steps=2", "out=grid"])
    assert sample.returncode == 0, sample.stderr[-2000:]
    assert np.load(tmp_path / "grid.npz")["images"].shape == (2, 28, 28, 1)


def test_finetune_keys_name_the_run_and_a_base_path_becomes_one_directory_name():
    from scalelong.config import run_name

    assert run_name("finetune-difffit__finetune.from-/runs/base/last.ckpt__trainer.max_steps-4") == \
        "finetune-difffit__finetune.from-%runs%base%last.ckpt"
    assert run_name("finetune.lr_scale-3__logger-none") == "finetune.lr_scale-3"
