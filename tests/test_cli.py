"""The installed commands as a user runs them: multirun sweeps, 2-process DDP on CPU, sampling,
clean errors. Each test launches real processes, so they are marked slow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TINY_CLI = [
    "data=digits", "data.batch_size=16", "model.embed_dim=32", "model.depth=4", "model.num_heads=2",
    "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "callbacks.samples.num_samples=4", "callbacks.samples.steps=3",
    "callbacks.checkpoint.every_n_train_steps=2",
]


def scalelong(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"scalelong.{module}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_multirun_of_two_jobs_writes_two_run_directories(tmp_path):
    sweep = tmp_path / "sweep"
    proc = scalelong("train", ["-m", "scaler=none,cs", *TINY_CLI, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(runs) == 2
    assert "scaler-cs" in runs[0] and "scaler-none" in runs[1]
    for run in runs:
        assert (sweep / run / "checkpoints" / "last.ckpt").is_file()
        assert (sweep / run / "csv" / "metrics.csv").is_file()


@pytest.mark.slow
def test_ddp_cpu_two_processes_complete(tmp_path):
    proc = scalelong("train", ["trainer=ddp_cpu", *TINY_CLI, "run_name=ddp"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "outputs" / "runs" / "ddp"
    assert "world_size: 2" in proc.stderr or "distributed_backend=gloo" in proc.stderr
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "samples" / "step_0000004.png").is_file()


@pytest.mark.slow
def test_sample_command_writes_png_and_npz_and_errors_are_one_line(tmp_path):
    proc = scalelong("train", [*TINY_CLI, "run_name=s"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp_path / "outputs" / "runs" / "s" / "checkpoints" / "last.ckpt"
    out = tmp_path / "grid"
    proc = scalelong("sample", [f"ckpt={ckpt}", "num_samples=5", "batch_size=2", "sampler=ddim",
                                "steps=3", f"out={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = np.load(out.with_suffix(".npz"))
    assert data["images"].shape == (5, 28, 28, 1) and data["images"].dtype == np.uint8
    assert out.with_suffix(".png").is_file()

    bad = scalelong("sample", [f"ckpt={tmp_path / 'nope.ckpt'}"], tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("scalelong-sample: checkpoint")
    assert "Traceback" not in bad.stderr
    bad = scalelong("train", ["model=uvit_s2_cifar10", *TINY_CLI], tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "model expects 3×32×32 images but data gives 1×28×28" in bad.stderr
