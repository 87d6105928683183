"""Shared helpers: compose and run scalelong-train in-process on tiny settings."""

from __future__ import annotations

import logging
import os
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


@pytest.fixture(autouse=True)
def _quiet_and_two_threads():
    torch.set_num_threads(int(os.environ.get("SCALELONG_TEST_THREADS", "2")))
    logging.getLogger("lightning").setLevel(logging.WARNING)
    yield
