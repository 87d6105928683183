"""``scalelong-eval`` and its helpers: metric names, data reading, reference statistics, KID, the command.

The domain classifier is trained on scikit-learn's digits at a small width (a few seconds); the
commands run on checkpoints of 2-step runs of the tiny U-ViT.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from scalelong.config import CONF_DIR, compose
from scalelong.data import DigitsDataModule
from scalelong.errors import ConfigError
from scalelong.eval.cli import run, weights_used
from scalelong.eval.fid import to_uint8
from scalelong.eval.reference import FIDReference, check_sampling, count_label, kid, sampling_label, uint8_batches

# The small domain classifier of conf/debug/fid.yaml (the FID-callback tests train the same one).
SMALL_DOMAIN = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "debug" / "fid.yaml").callbacks.fid.domain)
SMALL_DOMAIN_CLI = [f"domain.{k}={v}" for k, v in SMALL_DOMAIN.items()]


def test_metric_names_carry_count_sampler_and_steps() -> None:
    assert [count_label(n) for n in (256, 1000, 1500, 10_000, 50_000)] == ["256", "1k", "1500", "10k", "50k"]
    assert sampling_label(1000, "dpm_solver", 25) == "1k/dpm_solver-25"
    assert sampling_label(10_000, "ddim", 50, guidance_scale=1.5) == "10k/ddim-50-cfg1.5"
    assert check_sampling(16, "ddpm", None) == 1000 and check_sampling(16, "dpm_solver", 10) == 10
    with pytest.raises(ConfigError, match="sampler=euler is unknown"):
        check_sampling(16, "euler", 10)
    with pytest.raises(ConfigError, match="at least 2 samples"):
        check_sampling(1, "ddim", 10)


def test_weights_used_reads_the_run_config() -> None:
    ema = {"callbacks": {"ema": {"_target_": "lightning.pytorch.callbacks.EMAWeightAveraging"}, "samples": None}}
    assert weights_used(ema) == "ema"
    assert weights_used({"callbacks": {"ema": None}}) == "raw" and weights_used(None) == "raw"


def test_reference_images_are_never_flipped() -> None:
    data = DigitsDataModule(random_flip=True, val_size=297)
    data.setup()
    batches = list(uint8_batches(data.train_set, range(40), batch_size=16))
    assert [len(x) for x, _ in batches] == [16, 16, 8]
    images = torch.cat([x for x, _ in batches])
    assert images.dtype == torch.uint8 and images.shape == (40, 1, 28, 28)
    assert torch.equal(images, to_uint8(data.train_set.images[:40]))
    assert torch.equal(torch.cat([y for _, y in batches]), data.train_set.labels[:40])


def test_kid_is_near_zero_for_one_distribution_and_seeded() -> None:
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(200, 8, generator=g) for _ in range(3))
    same, _ = kid(a, b, subsets=20, subset_size=100, seed=0)
    shifted, std = kid(a, c + 1.0, subsets=20, subset_size=100, seed=0)
    assert abs(same) < 0.05 * shifted and shifted > 10 * std
    assert kid(a, c + 1.0, subsets=20, subset_size=None, seed=0)[0] == pytest.approx(shifted, rel=0.2)  # 100 of 200
    with pytest.raises(ConfigError, match="kid_subset_size=200 must be between 2 and 199"):
        kid(a, c + 1.0, subsets=20, subset_size=200, seed=0)  # every subset would be the whole set


@pytest.mark.slow
def test_reference_of_digits_is_cached_and_ranks_real_above_noise(tmp_path) -> None:
    data = DigitsDataModule()
    ref = FIDReference.build(data, "domain", "train", tmp_path, domain=SMALL_DOMAIN)
    stats_file = tmp_path / "digits_train_28_domain-digits.npz"
    assert ref.stats.count == 1500 and ref.stats.mu.shape == (32,) and stats_file.is_file()
    assert ref.metric_name("fid", 1000, "dpm_solver", 25) == "fid_digits-1k/dpm_solver-25"
    assert ref.extractor.accuracy > 0.85

    mtime = stats_file.stat().st_mtime_ns
    again = FIDReference.build(data, "domain", "train", tmp_path, domain=SMALL_DOMAIN)
    assert stats_file.stat().st_mtime_ns == mtime and np.array_equal(again.stats.sigma, ref.stats.sigma)
    subset = FIDReference.build(data, "domain", "train", tmp_path, count=200, domain=SMALL_DOMAIN)
    assert subset.stats.count == 200  # another data_id: recomputed

    held_out = data.val_set.dataset.images
    noise = torch.rand(len(held_out), 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    real_fid, noise_fid = ref.fid(ref.features(held_out)), ref.fid(ref.features(noise))
    assert 0 < real_fid < 0.1 * noise_fid
    assert ref.real_features(50, seed=0).shape == (50, 32)


def scalelong_eval(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalelong.eval.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_eval_command_names_writes_and_reuses_reference_stats(tiny_run, tmp_path, cli) -> None:
    """The first command in-process, the second as the installed command is started (scalelong-eval's smoke)."""
    run_dir = tiny_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    args = [f"ckpt={ckpt}", "n_samples=32", "batch_size=16", "sampler=ddim", "steps=3", "kid_subset_size=16",
            *SMALL_DOMAIN_CLI]
    first = cli("eval.cli", args)
    assert first.returncode == 0, first.stderr[-3000:]
    stats_file = tmp_path / "outputs" / "fid_stats" / "digits_train_28_domain-digits.npz"
    assert f"wrote reference statistics {stats_file}" in first.stdout
    mtime = stats_file.stat().st_mtime_ns

    second = scalelong_eval([*args, "save_samples=true", "references=true"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"reference statistics {stats_file} (1500 images" in second.stdout
    assert "wrote reference statistics" not in second.stdout and stats_file.stat().st_mtime_ns == mtime

    name = "fid_digits-32/ddim-3"
    out = run_dir / "eval" / "last" / "fid_digits-32_ddim-3_vs_train.json"
    result = json.loads(out.read_text())
    value = result["metrics"][name]
    assert math.isfinite(value) and value > 0
    assert f"{name} = {value:.4f}" in second.stdout and f"wrote {out}" in second.stdout
    assert math.isfinite(result["metrics"]["kid_digits-32/ddim-3"]) and result["kid_std"] >= 0
    assert result["weights"] == "ema" and result["extractor"].startswith("domain-digits/")
    assert result["reference"] == {"dataset": "digits", "split": "train", "images": 1500}
    refs = result["references"]  # real held-out digits sit far closer to the statistics than noise
    assert 0 <= refs["real_test"] < 0.5 * refs["noise"], refs
    assert f"real held-out images {refs['real_test']:.2f}, N(0, 1) noise {refs['noise']:.2f}" in second.stdout
    assert (result["n_samples"], result["sampler"], result["steps"]) == (32, "ddim", 3)
    first_value = float(first.stdout.split(f"{name} = ")[1].split()[0])
    assert first_value == pytest.approx(value, abs=1e-4)  # same seed, same samples, cached reference
    samples = np.load(run_dir / "eval" / "last" / "samples-32_ddim-3.npz")
    assert samples["images"].shape == (32, 28, 28, 1) and samples["images"].dtype == np.uint8


def test_bad_checkpoint_and_options_give_one_line(tmp_path, cli) -> None:
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    for args, message in (
        ([f"ckpt={tmp_path / 'nope.ckpt'}"], "scalelong-eval: checkpoint"),
        ([f"ckpt={corrupt}"], f"scalelong-eval: checkpoint {corrupt} cannot be read"),
    ):
        proc = cli("eval.cli", args)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    for option, message in (("sampler=euler", "sampler=euler is unknown"), ("extractor=clip", "extractor=clip"),
                            ("ref_split=val", "reference split 'val'")):
        with pytest.raises(ConfigError, match=message):  # checked before the checkpoint is read
            run(compose([f"ckpt={corrupt}", option], config_name="eval"))


@pytest.mark.slow
def test_eval_with_inception_features(tiny_run, tmp_path) -> None:
    run_dir = tiny_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cfg = compose([f"ckpt={ckpt}", "extractor=inception", "n_samples=8", "sampler=ddim", "steps=3",
                   "ref_count=16", "kid_subset_size=4", "device=cpu", f"cache_dir={tmp_path / 'stats'}"],
                  config_name="eval")
    result = run(cfg)
    assert result["extractor"].startswith("inception-2015-12-05/")
    assert result["reference"] == {"dataset": "digits", "split": "train", "images": 16}
    assert math.isfinite(result["metrics"]["fid-8/ddim-3"]) and result["metrics"]["fid-8/ddim-3"] > 0
    assert Path(result["path"]) == run_dir / "eval" / "last" / "fid-8_ddim-3_vs_train.json"
    assert (tmp_path / "stats" / "digits_train_28_inception-2015-12-05.npz").is_file()
