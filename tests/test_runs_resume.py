"""Resume: the newest checkpoint of the same result-changing settings, refused with the keys named when
one differs; an explicit checkpoint of the same model; ckpt_path=null archives the previous attempt."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from scalelong.errors import ConfigError
from scalelong.lit import CONFIG_KEY
from scalelong.runs.resume import config_differences, resume_checkpoint

CONFIG = {"model": {"_target_": "scalelong.models.UNet", "ch": 16},
          "scaler": {"_target_": "scalelong.scalers.NoScaling"},
          "diffusion": {"_target_": "scalelong.diffusion.Diffusion"}, "data": {"root": "/a", "batch_size": 16},
          "optim": {"lr": 2e-4}, "seed": 0, "trainer": {"max_steps": 10, "gradient_clip_val": None},
          "callbacks": {"ema": {"decay": 0.999}, "checkpoint": {"every_n_train_steps": 2}}}


def save_checkpoint(run_dir: Path, step: int) -> Path:
    path = run_dir / "checkpoints" / f"step{step:07d}.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {}, CONFIG_KEY: CONFIG}, path)
    return path


def test_config_differences_name_results_changing_keys_only():
    other = {**CONFIG, "trainer": {"max_steps": 99, "gradient_clip_val": 1.0},
             "callbacks": {"ema": {"decay": 0.9}, "checkpoint": {"every_n_train_steps": 7}},
             "data": {"root": "/elsewhere", "batch_size": 16, "num_workers": 8}}
    assert config_differences(CONFIG, other) == ["callbacks.ema.decay: 0.999 -> 0.9",
                                                 "trainer.gradient_clip_val: None -> 1.0"]
    assert config_differences(CONFIG, CONFIG) == []


def test_auto_resumes_the_newest_checkpoint_also_with_other_data_workers_and_root(tmp_path):
    save_checkpoint(tmp_path, 2)
    newest = save_checkpoint(tmp_path, 4)
    moved = {**CONFIG, "data": {"root": "/scratch", "batch_size": 16, "num_workers": 8}}
    path, stored = resume_checkpoint("auto", tmp_path, moved)
    assert path == str(newest) and stored["global_step"] == 4
    assert resume_checkpoint("auto", tmp_path / "fresh", CONFIG) == (None, None)


def test_auto_refuses_a_run_trained_with_other_result_changing_settings_naming_them(tmp_path):
    save_checkpoint(tmp_path, 2)
    other = {**CONFIG, "optim": {"lr": 1e-3}, "seed": 1}
    with pytest.raises(ConfigError, match=f"^run {re.escape(tmp_path.name)} was trained with other settings "
                                          r"\(optim.lr: 0.0002 -> 0.001; seed: 0 -> 1\), so it cannot continue"):
        resume_checkpoint("auto", tmp_path, other)


def test_an_explicit_checkpoint_must_hold_this_model_and_may_differ_elsewhere(tmp_path):
    path = save_checkpoint(tmp_path, 2)
    assert resume_checkpoint(str(path), tmp_path / "other", {**CONFIG, "optim": {"lr": 1.0}})[0] == str(path)
    with pytest.raises(ConfigError, match=f"^ckpt_path={path} holds another model \\(model.ch: 16 -> 8\\)"):
        resume_checkpoint(str(path), tmp_path / "other", {**CONFIG, "model": {**CONFIG["model"], "ch": 8}})


def test_ckpt_path_null_moves_the_previous_attempt_to_previous_and_starts_over(tmp_path):
    save_checkpoint(tmp_path, 2)
    (tmp_path / "summary.json").write_text("{}")
    assert resume_checkpoint(None, tmp_path, CONFIG) == (None, None)
    (previous,) = (tmp_path / "previous").iterdir()
    assert sorted(p.name for p in previous.iterdir()) == ["checkpoints", "summary.json"]
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "summary.json").exists()


def test_a_config_stored_before_decay_steps_existed_decayed_to_its_max_steps():
    old = {**CONFIG, "optim": {"lr": 2e-4, "decay": "cosine"}}  # trainer.max_steps 10
    new = {**CONFIG, "optim": {"lr": 2e-4, "decay": "cosine", "decay_steps": 10}}
    assert config_differences(old, new) == []
    assert config_differences(old, {**new, "optim": {**new["optim"], "decay_steps": 20}}) == [
        "optim.decay_steps: 10 -> 20"]
    constant = {**CONFIG, "optim": {"lr": 2e-4, "decay": "constant"}}
    assert config_differences(constant, {**constant, "optim": {**constant["optim"], "decay_steps": None}}) == []
