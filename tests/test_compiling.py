"""trainer.compile: the setting and its rule, no run name and no resume refusal, and compiled runs of the tiny U-ViT
(one inductor compile for the file) that train as eager ones, resume bit-exact, and checkpoint, average, measure and
sample as eager ones."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import read_rows, train_in
from scalelong.bench.framework import framework_rows
from scalelong.bench.measure import Precision
from scalelong.bench.training import Timings, compile_rows
from scalelong.compiling import AUTO_MIN_STEPS, CompiledBackbone, compiles
from scalelong.config import check_train_config, compose, run_name
from scalelong.diffusion import Diffusion
from scalelong.errors import ConfigError
from scalelong.lit import DiffusionModule, build_module
from scalelong.result_keys import changes_result
from scalelong.runs.resume import config_differences

# debug=stability (every stability measurement, often) on a one-LSC class-conditional tiny U-ViT, whose label
# dropout draws random numbers inside the compiled graph; 20 steps, checkpointed and validated every 10.
RUN = ["debug=stability", "model=uvit_tiny", "model.depth=2", "model.num_classes=10", "trainer.max_steps=20",
       "trainer.val_check_interval=10", "callbacks.checkpoint.every_n_train_steps=10"]
COMPILED = [*RUN, "trainer.compile=true"]
STABILITY_KEYS = ("feat/skip_1", "grad/total", "kappa/skip_1", "robust/jacobian", "loss_t/q1")


@pytest.mark.parametrize("trainer, expected", [
    ({"compile": True}, True),
    ({"compile": False, "accelerator": "gpu", "max_steps": 10**6}, False),
    ({"compile": "auto", "accelerator": "cpu", "max_steps": 10**6}, False),
    ({"compile": "auto", "accelerator": "gpu", "max_steps": AUTO_MIN_STEPS}, True),
    ({"compile": "auto", "accelerator": "gpu", "max_steps": AUTO_MIN_STEPS - 1}, False),
    ({"accelerator": "gpu", "max_steps": 10**6}, False),  # a config stored before trainer.compile existed
])
def test_auto_compiles_long_gpu_runs_only(trainer, expected) -> None:
    assert compiles(trainer) is expected


def test_a_bad_setting_is_one_config_error_and_the_trainer_never_sees_the_key() -> None:
    with pytest.raises(ConfigError, match=r"trainer.compile='maybe'.*true.*false.*auto"):
        check_train_config(compose(["trainer.compile=maybe"]))
    assert compose([]).trainer.compile == "auto"
    cfg = compose(["trainer.compile=true", "trainer.enable_progress_bar=false", "trainer.default_root_dir=."])
    assert isinstance(instantiate(cfg.trainer, logger=False), L.Trainer)  # the Trainer is built without it


def test_trainer_compile_names_no_run_and_refuses_no_resume_of_a_run_stored_before_it() -> None:
    assert not changes_result("trainer.compile")
    assert run_name("seed-1__trainer.compile-true") == "seed-1"
    stored = OmegaConf.to_container(compose(["run_name=x", "paths.run_dir=x"]), resolve=True)
    del stored["trainer"]["compile"]
    current = OmegaConf.to_container(compose(["trainer.compile=true", "run_name=x", "paths.run_dir=x"]), resolve=True)
    assert config_differences(stored, current) == []


def test_the_compiled_forward_adds_no_state_dict_keys_and_a_copy_starts_uncompiled() -> None:
    model = instantiate(compose(["model=uvit_tiny", "model.depth=2"]).model)
    eager = DiffusionModule(model, Diffusion())
    compiled = DiffusionModule(copy.deepcopy(model), Diffusion(), compile_backbone=True)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    twin = copy.deepcopy(compiled)  # what Lightning's EMA average does
    assert isinstance(twin.compiled, CompiledBackbone) and twin.compiled._compiled is None
    assert twin.compiled.model is twin.model and twin.model is not compiled.model


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """eager and compiled 20-step runs, and a compiled run stopped at step 10 and resumed to 20."""
    root = tmp_path_factory.mktemp("compiling")
    dirs = {"eager": train_in(root, RUN, "eager")[1], "compiled": train_in(root, COMPILED, "compiled")[1]}
    train_in(root, [*COMPILED, "trainer.max_steps=10"], "resumed")
    dirs["resumed"] = train_in(root, COMPILED, "resumed")[1]
    return dirs


def losses(run_dir: Path) -> list[float]:
    return [float(r["train/loss"]) for r in sorted(read_rows(run_dir), key=lambda r: int(r["step"]))
            if r.get("train/loss")]


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.slow
def test_compiled_and_eager_training_give_the_same_loss_curve(runs) -> None:
    eager, compiled = losses(runs["eager"]), losses(runs["compiled"])
    assert len(eager) == len(compiled) == 20
    # the compiled run's module trains through torch.compile (an eager run in its place would pass the comparison)
    assert build_module(compose(COMPILED)).compiled is not None and build_module(compose(RUN)).compiled is None
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_compiled_run_resumed_at_step_10_ends_bit_exact(runs) -> None:
    assert losses(runs["resumed"]) == losses(runs["compiled"])
    straight, resumed = checkpoint(runs["compiled"]), checkpoint(runs["resumed"])
    assert resumed["global_step"] == straight["global_step"] == 20
    for part in ("state_dict", "current_model_state"):
        assert all(torch.equal(resumed[part][k], v) for k, v in straight[part].items())


@pytest.mark.slow
def test_a_compiled_run_checkpoints_averages_and_measures_as_an_eager_one(runs) -> None:
    compiled, eager = checkpoint(runs["compiled"]), checkpoint(runs["eager"])
    assert list(compiled["state_dict"]) == list(eager["state_dict"])  # no _orig_mod. prefix
    assert not any("_orig_mod" in k for k in [*compiled["state_dict"], *compiled["current_model_state"]])
    assert not all(torch.equal(compiled["state_dict"][k], v) for k, v in compiled["current_model_state"].items())
    rows = read_rows(runs["compiled"])
    for key in STABILITY_KEYS:
        values = [float(r[key]) for r in rows if r.get(key)]
        assert values and all(math.isfinite(v) for v in values), key


@pytest.mark.slow
def test_scalelong_sample_draws_from_a_compiled_runs_checkpoint(runs, cli) -> None:
    ckpt = runs["compiled"] / "checkpoints" / "last.ckpt"
    done = cli("sample", [f"ckpt={ckpt}", "num_samples=4", "steps=2", "sampler=ddim", "guidance_scale=2",
                          f"out={ckpt.parent.parent / 'grid'}"])
    assert done.returncode == 0, done.stderr
    assert (ckpt.parent.parent / "grid.npz").is_file()


@pytest.mark.slow
def test_the_bench_times_a_compiled_training_step_and_scalelong_train_against_eager(runs) -> None:
    """The compiled rows of scalelong-bench on the runs' network (its compiled graph is cached by then)."""
    timings, cpu = Timings(), Precision.for_device("cpu")
    rows = compile_rows([("uvit_tiny model.depth=2 model.num_classes=10 scaler=cs", 16)], 1, cpu, timings)
    rows += framework_rows(["debug=tiny", "model.depth=2", "model.num_classes=10"], 3, 1, 1, cpu, compiled=True)
    assert [r.section for r in rows] == ["compile"] * 3
    assert all(math.isfinite(r.ratio) and r.ratio > 0 for r in rows)
    assert rows[0].target == (">=", 1.05) and "compile and first step" in rows[0].note
    assert list(timings.steps) == [("uvit_tiny model.depth=2 model.num_classes=10 scaler=cs", 16, True)]
