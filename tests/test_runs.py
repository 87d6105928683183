"""Run directories: lock, newest valid checkpoint, config comparison, atomic writes, checkpoint
safety (weights_only loading and the _target_ allow-list), sweep directories and status."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from scalelong.atomic import write_atomic
from scalelong.config import compose, run_dir_name, run_name
from scalelong.errors import CheckpointError, ConfigError, OutputError
from scalelong.lit import CONFIG_KEY, load_checkpoint, read_checkpoint
from scalelong.runs import AtomicCheckpointIO, OutputDirCheck, RunLock, config_differences, newest_valid_checkpoint

CONFIG = {"model": {"_target_": "scalelong.models.UNet", "ch": 16},
          "scaler": {"_target_": "scalelong.scalers.NoScaling"},
          "diffusion": {"_target_": "scalelong.diffusion.Diffusion"}, "data": {"root": "/a", "batch_size": 16},
          "optim": {"lr": 2e-4}, "seed": 0, "trainer": {"max_steps": 10, "gradient_clip_val": None},
          "callbacks": {"ema": {"decay": 0.999}, "checkpoint": {"every_n_train_steps": 2}}}


def fake_checkpoint(path: Path, step: int, config: dict = CONFIG) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.full((2,), float(step))}, CONFIG_KEY: config}, path)


def test_resume_picks_the_highest_step_not_a_stale_last_ckpt(tmp_path):
    ckpts = tmp_path / "checkpoints"
    fake_checkpoint(ckpts / "last.ckpt", 20)  # left behind by an older attempt
    fake_checkpoint(ckpts / "step0000020.ckpt", 20)
    fake_checkpoint(ckpts / "last-v1.ckpt", 40)
    fake_checkpoint(ckpts / "step0000040.ckpt", 40)
    path, ckpt = newest_valid_checkpoint(tmp_path)
    assert ckpt["global_step"] == 40 and path.name == "last-v1.ckpt"


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_valid_one_with_a_warning(tmp_path, caplog):
    ckpts = tmp_path / "checkpoints"
    fake_checkpoint(ckpts / "step0000020.ckpt", 20)
    fake_checkpoint(ckpts / "last.ckpt", 40)
    (ckpts / "last.ckpt").write_bytes((ckpts / "last.ckpt").read_bytes()[:200])  # truncated by a crash
    with caplog.at_level(logging.WARNING, logger="scalelong.runs"):
        path, ckpt = newest_valid_checkpoint(tmp_path)
    assert path.name == "step0000020.ckpt" and ckpt["global_step"] == 20
    assert "skipping" in caplog.text and "last.ckpt: it cannot be read" in caplog.text
    assert newest_valid_checkpoint(tmp_path / "empty") is None


def test_config_differences_name_results_changing_keys_only():
    other = {**CONFIG, "trainer": {"max_steps": 99, "gradient_clip_val": 1.0},
             "callbacks": {"ema": {"decay": 0.9}, "checkpoint": {"every_n_train_steps": 7}},
             "data": {"root": "/elsewhere", "batch_size": 16}}
    assert config_differences(CONFIG, other) == ["callbacks.ema.decay: 0.999 -> 0.9",
                                                 "trainer.gradient_clip_val: None -> 1.0"]
    assert config_differences(CONFIG, CONFIG) == []


@pytest.mark.parametrize("override", ["trainer.gradient_clip_val-1.0", "trainer.accumulate_grad_batches-2",
                                      "trainer.precision-bf16-mixed", "callbacks.ema.decay-0.9"])
def test_results_changing_trainer_and_ema_overrides_name_the_run(override):
    assert run_name(f"scaler-cs__{override}__trainer.max_steps-10") == f"scaler-cs__{override}"


def test_run_names_stay_one_directory_under_outputs_runs():
    assert run_name("data.root-../../etc__scaler-cs") == "data.root-..%..%etc__scaler-cs"
    for bad in ["../../elsewhere", "..", "a/b"]:
        with pytest.raises(ConfigError, match="is not a single directory name"):
            run_dir_name(bad)


def test_sweep_directory_resolves_before_hydra_sets_its_runtime(tmp_path, monkeypatch):
    """The README's `scalelong-train -m ...` resolves hydra.sweep.dir before HydraConfig exists."""
    monkeypatch.chdir(tmp_path)
    from hydra.core.hydra_config import HydraConfig

    cfg = compose(["seed=0"], return_hydra_config=True)
    HydraConfig.instance().cfg = None  # as in Hydra's launcher, before the first job
    assert cfg.hydra.sweep.dir.startswith(f"{tmp_path}/outputs/multirun/")


def test_a_second_process_on_the_same_run_directory_gets_a_clear_error(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(ConfigError, match=f"run directory {tmp_path} is in use by another scalelong-train "
                                              f"\\(pid {os.getpid()}\\)"):
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):  # released when the first run ends
        pass


def test_a_full_disk_keeps_the_previous_file_and_names_the_path(full_disk):
    disk, fill = full_disk
    target = disk / "summary.json"
    write_atomic(target, "old")
    fill()
    with pytest.raises(OutputError, match=f"cannot write {target}: the disk is full; the previous version"):
        write_atomic(target, "new" * 10_000)
    assert target.read_text() == "old"
    assert sorted(p.name for p in disk.iterdir()) in (["ballast", "summary.json"], ["summary.json"])  # no temporary


def test_a_checkpoint_write_on_a_full_disk_keeps_the_previous_checkpoint(full_disk):
    disk, fill = full_disk
    path = disk / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(1000)}}, path)
    before = path.read_bytes()
    fill()
    with pytest.raises(OutputError, match=f"cannot write {path}: the disk is full; the previous version"):
        io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.zeros(100_000)}}, path)
    assert path.read_bytes() == before and not list(disk.glob(".*"))


def test_a_held_checkpoint_replaces_the_previous_one_only_when_published(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 6}, path)
    io.hold = True  # RunFiles: the checkpoint counts a metrics row that is not on disk yet
    io.save_checkpoint({"global_step": 8}, path)
    io.save_checkpoint({"global_step": 8}, tmp_path / "step0000008.ckpt")
    assert torch.load(path)["global_step"] == 6 and not (tmp_path / "step0000008.ckpt").exists()
    io.publish()
    assert torch.load(path)["global_step"] == 8 and (tmp_path / "step0000008.ckpt").exists()
    io.save_checkpoint({"global_step": 10}, path)
    io.discard()  # the row never came (a full disk): the run resumes at step 8
    assert torch.load(path)["global_step"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "step0000008.ckpt"]


def test_a_metrics_append_on_a_full_disk_keeps_every_previous_row(full_disk):
    from scalelong.loggers import ResumableCSVLogger

    disk, fill = full_disk
    logger = ResumableCSVLogger(disk, name="csv", version="")
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.save()
    metrics = disk / "csv" / "metrics.csv"
    before = metrics.read_text()
    fill()
    logger.experiment.metrics = [{"train/loss": 0.5, "step": s} for s in range(1, 1000)]  # more than a page
    with pytest.raises(OutputError, match=f"cannot write {metrics}: the disk is full"):
        logger.save()
    assert metrics.read_text() == before
    logger.experiment.metrics = [{"train/loss": 0.5, "val/loss": 0.4, "step": 1}]  # a new column: a rewrite
    with pytest.raises(OutputError, match=f"cannot write {metrics}: the disk is full"):
        logger.save()
    assert metrics.read_text() == before and not list(metrics.parent.glob(".*"))


class RunsCode:
    """A pickle payload: unpickling it calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_whose_pickle_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "shared.ckpt"
    torch.save({"global_step": 1, "state_dict": {}, CONFIG_KEY: CONFIG, "x": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="holds Python objects that are not plain data and was not loaded"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("target", ["os.system", "subprocess.Popen", "scalelong.runs.shutil.rmtree",
                                    "scalelong.runs.RunLock", "builtins.eval"])
def test_a_stored_config_may_only_name_scalelong_model_scaler_diffusion_and_data_classes(tmp_path, target):
    path = tmp_path / "crafted.ckpt"
    config = {**CONFIG, "model": {**CONFIG["model"], "scaler": {"_target_": target, "_args_": ["rm -rf ~"]}}}
    torch.save({"global_step": 1, "state_dict": {}, CONFIG_KEY: config}, path)
    with pytest.raises(CheckpointError, match=f"names model.scaler._target_='{target}', which is not a scalelong"):
        load_checkpoint(path)


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



def test_an_unwritable_output_directory_is_one_line_before_hydra_creates_the_run(tmp_path):
    (tmp_path / "a_file").write_text("")
    output_dir = tmp_path / "a_file" / "outputs"
    cfg = compose(["data=digits", f"paths.output_dir={output_dir}"], return_hydra_config=True)
    with pytest.raises(SystemExit) as exit_:
        OutputDirCheck().on_run_start(config=cfg)
    assert exit_.value.code == (
        f"scalelong-train: cannot create or write the run directory {output_dir}/runs/data-digits (Not a directory); "
        f"set paths.output_dir to a writable directory (paths.output_dir={output_dir})")
    OutputDirCheck().on_run_start(config=compose([f"paths.output_dir={tmp_path}/ok"], return_hydra_config=True))
    assert (tmp_path / "ok" / "runs" / "default").is_dir()
