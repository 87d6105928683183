"""Checkpoint files: the newest valid one is found by step, an unreadable one is skipped, and a write
is atomic (a full disk keeps the previous checkpoint; a held one replaces it only when published)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from scalelong.errors import OutputError
from scalelong.lit import CONFIG_KEY
from scalelong.runs.checkpoints import AtomicCheckpointIO, newest_valid_checkpoint


def fake_checkpoint(path: Path, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"model": {"_target_": "scalelong.models.UNet", "ch": 16}, "seed": 0}
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
    with caplog.at_level(logging.WARNING, logger="scalelong.runs.checkpoints"):
        path, ckpt = newest_valid_checkpoint(tmp_path)
    assert path.name == "step0000020.ckpt" and ckpt["global_step"] == 20
    assert "skipping" in caplog.text and "last.ckpt: it cannot be read" in caplog.text
    assert newest_valid_checkpoint(tmp_path / "empty") is None


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
