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
from torch import nn

from scalelong.config import CONF_DIR, compose
from scalelong.data import DigitsDataModule
from scalelong.errors import ConfigError
from scalelong.eval.cli import run, weights_used
from scalelong.eval.fid import to_uint8
from scalelong.eval.reference import FIDReference, check_sampling, count_label, kid, sampling_label, uint8_batches
from scalelong.lit import CONFIG_KEY

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
    out = run_dir / "eval" / "step0000002" / "fid_digits-32_ddim-3_vs_train.json"
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
    assert (result["n_samples"], result["sampler"], result["steps"], result["step"]) == (32, "ddim", 3, 2)
    first_value = float(first.stdout.split(f"{name} = ")[1].split()[0])
    assert first_value == pytest.approx(value, abs=1e-4)  # same seed, same samples, cached reference
    samples = np.load(run_dir / "eval" / "step0000002" / "samples-32_ddim-3.npz")
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


def test_eval_scores_the_model_as_a_denoiser_against_the_wiener_filter(tiny_run, tmp_path) -> None:
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    common = [f"ckpt={ckpt}", "n_samples=16", "sampler=ddim", "steps=2", "kid_subset_size=8", "device=cpu",
              f"cache_dir={tmp_path / 'stats'}", f"out={tmp_path / 'result.json'}", *SMALL_DOMAIN_CLI]
    with pytest.raises(ConfigError, match=r"denoise=\[10, 1000\]: \[1000\] are not timesteps 0..999"):
        run(compose([*common, "denoise=[10,1000]"], config_name="eval"))
    assert not (tmp_path / "stats").exists()  # refused before anything was computed or written
    profile = run(compose([*common, "denoise=[10,250]"], config_name="eval"))["denoising"]
    assert list(profile) == [10, 250]
    wiener = [profile[t]["wiener"] for t in (10, 250)]
    assert 0 < wiener[0] < wiener[1] < 1  # more noise, a worse best linear estimate, still below the data's variance
    assert all(profile[t]["model"] > profile[t]["wiener"] for t in (10, 250))  # 2 training steps: not a denoiser yet
    stored = json.loads((tmp_path / "result.json").read_text())["denoising"]
    assert stored["250"] == pytest.approx(profile[250])


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
    assert Path(result["path"]) == run_dir / "eval" / "step0000002" / "fid-8_ddim-3_vs_train.json"
    assert (tmp_path / "stats" / "digits_train_28_inception-2015-12-05.npz").is_file()


class PixelMoments(nn.Module):
    """A stand-in extractor: the mean and spread of each uint8 image's pixels, 2 features."""

    name = "moments"
    extractor_id = "moments/1"
    num_features = 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().flatten(1)
        return torch.stack([x.mean(1), x.std(1)], 1)


def test_reference_statistics_of_two_image_folders_of_one_size_are_not_shared(tmp_path, monkeypatch) -> None:
    """Folders a (dark) and b (bright) hold as many images of one size: b is measured against b's statistics."""
    from PIL import Image

    from scalelong.data import ImageFolderDataModule
    from scalelong.eval import reference

    for folder, base in (("a", 20), ("b", 200)):
        (tmp_path / folder / "train").mkdir(parents=True)
        for i in range(12):
            Image.new("L", (8, 8), base + 3 * i).save(tmp_path / folder / "train" / f"{i}.png")
    monkeypatch.setattr(reference, "feature_extractor", lambda *args: PixelMoments())

    def build(folder: str, cache: Path) -> FIDReference:
        data = ImageFolderDataModule(root=str(tmp_path), folder=folder, image_size=8, channels=1, batch_size=2,
                                     val_size=2, random_flip=False)
        return FIDReference.build(data, "inception", "train", cache)

    a, b = build("a", tmp_path / "stats"), build("b", tmp_path / "stats")
    alone = build("b", tmp_path / "b_alone")
    assert a.stats.mu[0] < 60 and np.array_equal(b.stats.mu, alone.stats.mu) and b.stats.mu[0] > 200
    assert np.array_equal(build("a", tmp_path / "stats").stats.mu, a.stats.mu)

    for i in range(12):  # the content changed: recomputed, not reused
        Image.new("L", (8, 8), 250).save(tmp_path / "b" / "train" / f"{i}.png")
    assert build("b", tmp_path / "b_alone").stats.mu[0] == 250


def checkpoint_copy(source: Path, run_dir: Path, **changes: object) -> Path:
    """``run_dir/checkpoints/last.ckpt``: ``source`` with top-level entries or stored config parts replaced
    (``global_step=40``; ``data={...}`` replaces the stored data config)."""
    ckpt = torch.load(source, weights_only=True)
    for key, value in changes.items():
        if key in ckpt:
            ckpt[key] = value
        else:
            ckpt[CONFIG_KEY][key] = value
    path = run_dir / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


EVAL_ARGS = ["n_samples=32", "batch_size=16", "sampler=ddim", "steps=3", "kid_subset_size=16", *SMALL_DOMAIN_CLI]


@pytest.mark.slow
def test_eval_keeps_one_result_per_checkpoint_step_and_records_the_step(tiny_run, tmp_path, cli) -> None:
    """last.ckpt evaluated at step 2 and again at step 40: two results, each naming its step."""
    source = tiny_run / "checkpoints" / "last.ckpt"
    ckpt = checkpoint_copy(source, tmp_path / "run")
    assert cli("eval.cli", [f"ckpt={ckpt}", *EVAL_ARGS]).returncode == 0
    checkpoint_copy(source, tmp_path / "run", global_step=40)
    later = cli("eval.cli", [f"ckpt={ckpt}", *EVAL_ARGS])
    assert later.returncode == 0, later.stderr[-3000:]
    results = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "run" / "eval").glob("*/*.json")}
    assert sorted(results) == ["step0000002", "step0000040"]
    assert [results[name]["step"] for name in sorted(results)] == [2, 40]
    assert f"wrote {tmp_path / 'run' / 'eval' / 'step0000040' / 'fid_digits-32_ddim-3_vs_train.json'}" in later.stdout


@pytest.mark.slow
def test_eval_reads_data_under_the_current_data_root_never_the_checkpoints(tiny_run, tmp_path, cli, monkeypatch):
    """A checkpoint copied from another machine stores data.root=/home/someone/data: eval reads the data where
    the user's paths.data_dir (or data.root) says, and creates nothing under the stored path."""
    from scalelong.data.base import ImageDataModule

    stored = OmegaConf.to_container(compose(["debug=tiny"]).data, resolve=False)
    elsewhere = tmp_path / "someone" / "data"
    ckpt = checkpoint_copy(tiny_run / "checkpoints" / "last.ckpt", tmp_path / "run", data={**stored, "root":
                                                                                            str(elsewhere)})
    roots = []
    original = ImageDataModule.__init__

    def spy(self, root: str = "data", **options: object) -> None:
        roots.append(Path(root))
        original(self, root=root, **options)

    monkeypatch.setattr(ImageDataModule, "__init__", spy)
    for extra, root in (([], tmp_path / "data"), ([f"data.root={tmp_path / 'mine'}"], tmp_path / "mine")):
        roots.clear()
        done = cli("eval.cli", [f"ckpt={ckpt}", *EVAL_ARGS, *extra])
        assert done.returncode == 0, done.stderr[-3000:]
        assert set(roots) == {root}
    assert not (tmp_path / "someone").exists()


@pytest.mark.slow
def test_eval_on_a_full_disk_is_one_line_leaves_no_partial_file_and_writes_no_result(tiny_run, tmp_path, cli,
                                                                                      full_disk) -> None:
    """The samples and the JSON go to a disk that fills after the checkpoint is on it: one line naming the file,
    no temporary file, no truncated .npz, and no JSON reporting success."""
    disk, fill = full_disk
    ckpt = checkpoint_copy(tiny_run / "checkpoints" / "last.ckpt", disk / "run")
    fill()
    done = cli("eval.cli", [f"ckpt={ckpt}", *EVAL_ARGS, "save_samples=true", f"cache_dir={tmp_path / 'stats'}"])
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith(f"scalelong-eval: cannot write {disk / 'run' / 'eval'}/"), message
    assert message.endswith("the disk is full; the previous version of the file is kept. Free space, or write the "
                            "result to a disk with room (out=<JSON path>, save_samples=false), then rerun"), message
    assert sorted(p.name for p in (disk / "run").rglob("*") if p.is_file()) == ["last.ckpt"]
