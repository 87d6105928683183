"""The FID callback on short CPU runs: the named metric in metrics.csv, the best checkpoint holding the
measured EMA weights, its state, DDP, configuration errors."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY
from scalelong.callbacks.fid import FIDTracker
from scalelong.config import compose
from scalelong.errors import ConfigError
from scalelong.eval.cli import run

NAME = "fid_digits-32/dpm_solver-3"
FID = ["debug=fid"]  # conf/debug/fid.yaml: debug=tiny, FID of 32 samples after every 2nd step


def fid_series(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r[NAME]) for r in csv.DictReader(f) if r.get(NAME)}


def test_config_adds_fid_to_the_default_callbacks() -> None:
    cfg = compose(["callbacks=fid"])
    assert set(cfg.callbacks) == {"ema", "checkpoint", "lr_monitor", "samples", "fid"}
    assert cfg.callbacks.fid._target_ == "scalelong.callbacks.fid.FIDTracker"
    assert cfg.callbacks.fid.extractor == "domain"


def test_bad_settings_raise_and_state_round_trips() -> None:
    with pytest.raises(ConfigError, match="extractor=clip"):
        FIDTracker(extractor="clip")
    with pytest.raises(ConfigError, match="sampler=euler"):
        FIDTracker(sampler="euler")
    tracker = FIDTracker(sampler="ddim", steps=None)
    assert tracker.steps == 50
    tracker.best, tracker.best_step = 12.5, 99
    resumed = FIDTracker(sampler="ddim", steps=None)
    resumed.load_state_dict(tracker.state_dict())
    assert (resumed.best, resumed.best_step) == (12.5, 99)
    assert "'num_samples': 256" in resumed.state_key and "'sampler': 'ddim'" in resumed.state_key


@pytest.mark.slow
def test_fid_is_logged_by_name_and_best_checkpoint_holds_the_measured_ema_weights(train_run, tmp_path) -> None:
    metrics, run_dir = train_run([*TINY["uvit"], *FID, "trainer.max_steps=4", "callbacks.ema.decay=0.5"])
    values = fid_series(run_dir)
    assert sorted(values) == [1, 3]  # after steps 2 and 4 (0-based 1, 3), like the other callbacks
    assert all(math.isfinite(v) and v > 0 for v in values.values())
    assert metrics[NAME] == pytest.approx(values[3])
    assert json.loads((run_dir / "summary.json").read_text())[NAME] == pytest.approx(values[3])
    assert (tmp_path / "outputs" / "fid_stats" / "digits_train_28_domain-digits.npz").is_file()

    best = run_dir / "checkpoints" / "best_fid.ckpt"
    ckpt = torch.load(best, weights_only=False)
    best_step = min(values, key=values.get)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("FIDTracker"))
    assert state == {"best": pytest.approx(values[best_step]), "best_step": best_step}
    assert ckpt["global_step"] == best_step + 1
    key = "model.out_blocks.0.skip_linear.weight"
    assert not torch.equal(ckpt["state_dict"][key], ckpt["current_model_state"][key])

    # The checkpoint's state_dict is what was measured: scalelong-eval on it repeats the logged value.
    cfg = compose([f"ckpt={best}", "n_samples=32", "batch_size=16", "sampler=dpm_solver", "steps=3",
                   "kid_subset_size=16", "device=cpu", f"cache_dir={tmp_path / 'outputs' / 'fid_stats'}"],
                  config_name="eval")
    result = run(cfg)
    assert result["weights"] == "ema"
    assert result["metrics"][NAME] == pytest.approx(values[best_step], rel=1e-6)


@pytest.mark.slow
def test_two_process_ddp_on_cpu_completes_and_measures_fid_on_rank_zero(tmp_path) -> None:
    """``scalelong-train trainer=ddp_cpu`` as a user starts it: two gloo processes train, checkpoint, draw the
    sample grid, and the FID callback measures on rank zero alone."""
    args = ["trainer=ddp_cpu", *FID, "run_name=ddp"]
    proc = subprocess.run([sys.executable, "-m", "scalelong.train", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "runs" / "ddp"
    assert "world_size: 2" in proc.stderr or "distributed_backend=gloo" in proc.stderr
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "samples" / "step_0000004.png").is_file()
    values = fid_series(run_dir)
    assert sorted(values) == [1, 3] and all(math.isfinite(v) for v in values.values())
    assert (run_dir / "checkpoints" / "best_fid.ckpt").is_file()
    log = proc.stdout + proc.stderr  # rank zero alone builds the reference, measures and reports
    assert log.count(f"[INFO] tracking {NAME}") == 1 and log.count(f"[INFO] {NAME} = ") == 2
    assert 1 <= log.count(f"[INFO] best {NAME} = ") <= 2
