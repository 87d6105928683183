"""Shared helpers: compose and run scalelong-train in-process on tiny settings."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from scalelong.config import compose

# The tiny run of conf/debug/tiny.yaml (digits, a few seconds) with the tiny U-ViT or conv UNet.
TINY = {"uvit": ["model=uvit_tiny"], "unet": ["model=unet_tiny"]}
FAST = ["debug=tiny"]


def run_config(tmp_path: Path, overrides: list[str], run_name: str = "run"):
    """Compose like the command line would and point the run directory into tmp_path."""
    cfg = compose([*FAST, *overrides], config_name="train", return_hydra_config=True)
    run_dir = tmp_path / run_name
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.override_dirname = run_name
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    cfg.paths.data_dir = str(tmp_path / "data")
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg, run_dir


@pytest.fixture
def train_run(tmp_path: Path):
    """``train_run(overrides, run_name) -> (metrics, run_dir)``: one in-process training run."""
    from scalelong.train import train

    def run(overrides: list[str], run_name: str = "run"):
        cfg, run_dir = run_config(tmp_path, overrides, run_name)
        return train(cfg, run_dir), run_dir

    return run


def fill_filesystem(directory: Path) -> None:
    """Write a ballast file into ``directory`` until its filesystem reports ENOSPC."""
    fd = os.open(directory / "ballast", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while os.write(fd, b"\0" * chunk):
                    pass
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)


@contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[bool]:
    """Mount a tmpfs of ``size`` (``4m``) at ``directory`` if this process may (as root in the development
    container and CI) and yield True; else yield False and leave ``directory`` a plain directory."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                                 capture_output=True, check=False).returncode == 0
    except OSError:  # no mount command
        mounted = False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(directory)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """``(directory, mounted)``: a 4 MiB tmpfs at ``tmp_path/disk``, or a plain directory (see ``tmpfs``)."""
    with tmpfs(tmp_path / "disk", "4m") as mounted:
        yield tmp_path / "disk", mounted


@pytest.fixture
def full_disk(small_disk, monkeypatch):
    """``(directory, fill)``: after ``fill()`` writes into ``directory`` fail as on a full disk.

    Where a tmpfs can be mounted, the disk is real: ``fill`` writes a ballast file until the kernel
    says ENOSPC, and every later write that needs a new page fails in ``write``/``flush``. Elsewhere it
    is simulated: ``fill`` makes ``os.fsync`` raise ENOSPC, which is where a full disk shows on a
    filesystem that allocates at write-back (NFS, thin-provisioned volumes).
    """
    disk, mounted = small_disk

    def enospc(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fill() -> None:
        if mounted:
            fill_filesystem(disk)
        else:
            monkeypatch.setattr(os, "fsync", enospc)

    return disk, fill


@pytest.fixture(autouse=True)
def _quiet_and_two_threads():
    torch.set_num_threads(int(os.environ.get("SCALELONG_TEST_THREADS", "2")))
    logging.getLogger("lightning").setLevel(logging.WARNING)
    yield
