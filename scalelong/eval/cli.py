"""``scalelong-eval``: FID and KID of a checkpoint's samples against its dataset (docs/metrics.md "FID").

    scalelong-eval ckpt=outputs/runs/fmnist_demo/checkpoints/last.ckpt n_samples=1000 sampler=dpm_solver steps=25
    scalelong-eval ckpt=... n_samples=10000 steps=50 extractor=inception save_samples=true

The checkpoint's weights (its ``state_dict``: the EMA weights when the run had EMA) draw ``n_samples``
images with :func:`scalelong.sampling.draw`. Class-conditional models get labels uniform over the
classes, which is the label distribution of the balanced datasets here (Fashion-MNIST, CIFAR-10,
ImageNet); for an imbalanced image folder it is not. The dataset is the one of the checkpoint's stored
config, read from this command's ``paths.data_dir`` (or ``data.root=...``; other ``data.*`` options
override the stored ones too): nothing is read from or written under a directory that only the
checkpoint names. Features are those of the dataset's domain classifier (``extractor=domain``, CPU scale, metrics
``fid_<dataset>`` and ``kid_<dataset>``) or Inception-v3 pool3 (``extractor=inception``: ``fid``, ``kid``).
FID is taken against the statistics of a whole dataset split (``ref_split``; ``ref_count`` for a fixed
subset), cached in ``cache_dir`` and computed only when missing, stale or unreadable; KID (torchmetrics, mean ± std
over subsets) needs real features, so it extracts those of ``n_samples`` images of the same split.

Metric names carry the sample count, sampler and steps, e.g. ``fid_fashion_mnist-1k/dpm_solver-25`` or
``fid-10k/dpm_solver-50``. The result is printed and written as JSON to
``<run dir>/eval/step<NNNNNNN>/<metric name>_vs_<split>.json``, one directory per training step of the
checkpoint (``last.ckpt`` evaluated at step 4 and again at step 40 keeps both; the JSON records ``step``);
``save_samples=true`` also writes the samples there as ``.png`` and ``.npz`` (see
:func:`scalelong.sampling.save_samples`). Every file is written whole or not at all, the JSON last: a full
disk ends the command with one line and leaves no result that reports success.

``denoise=[10,50,100,250,500]`` also scores the model as a denoiser: at each timestep, the per-pixel MSE of its
x̂_0 on ``n_samples`` held-out images against the Wiener filter's (:mod:`scalelong.eval.denoise`), which shows at
which noise levels an undertrained model is still worse than the best linear estimate.

The evaluation is :func:`scalelong.eval.evaluate.evaluate`; the extractor, the reference statistics and KID live in
:mod:`scalelong.eval.reference`, shared with the training-time FID callback :class:`scalelong.callbacks.fid.FIDTracker`;
this module is the command.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from scalelong.atomic import write_atomic
from scalelong.config import CONF_DIR
from scalelong.errors import ConfigError, exit_on_user_error
from scalelong.eval.denoise import denoising_profile
from scalelong.eval.evaluate import evaluate
from scalelong.eval.reference import check_reference, check_sampling, load_split, sampling_label
from scalelong.lit import DiffusionModule, load_checkpoint
from scalelong.sampling import save_samples

log = logging.getLogger("scalelong.eval")


def weights_used(config: Mapping[str, Any] | None) -> str:
    """``ema`` if the run kept an EMA of the weights (its checkpoints' ``state_dict``), else ``raw``."""
    callbacks = (config or {}).get("callbacks") or {}
    ema = any(c and str(c.get("_target_", "")).endswith("EMAWeightAveraging") for c in callbacks.values())
    return "ema" if ema else "raw"


def data_config(stored: Mapping[str, Any], given: DictConfig) -> dict[str, Any]:
    """The checkpoint's stored data config with this command's ``data`` options over it: ``data.root`` is the
    current ``paths.data_dir`` unless given, never the stored one (a copied checkpoint's root is another
    machine's or person's directory, which eval must not create or download into)."""
    return {**stored, **OmegaConf.to_container(given, resolve=True)}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt``; returns the result also written as JSON (its path under ``"path"``)."""
    steps = check_sampling(cfg.n_samples, cfg.sampler, cfg.steps)
    check_reference(cfg.extractor, cfg.ref_split)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    ckpt = Path(cfg.ckpt)
    module = load_checkpoint(ckpt, map_location=device).to(device)
    timesteps = check_timesteps(list(cfg.denoise or []), module.diffusion.num_timesteps)
    datamodule = instantiate(data_config(module.config["data"], cfg.data))
    ev = evaluate(module, datamodule, cfg, steps, device)
    fid_name, kid_name = ev.fid_name, ev.kid_name

    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out_dir = run_dir / "eval" / f"step{module.checkpoint_step:07d}"
    path = Path(cfg.out) if cfg.out else out_dir / f"{fid_name.replace('/', '_')}_vs_{cfg.ref_split}.json"
    result: dict[str, Any] = {
        "metrics": ev.metrics,
        "kid_std": ev.kid_std,
        "checkpoint": str(ckpt.resolve()),
        "step": module.checkpoint_step,
        "weights": weights_used(module.config),
        **ev.details,
        "n_samples": cfg.n_samples,
        "sampler": cfg.sampler,
        "steps": steps,
        "guidance_scale": cfg.guidance_scale,
        "seed": cfg.seed,
        "seconds_per_sample": ev.seconds_per_sample,
    }
    if ev.references is not None:
        result["references"] = ev.references
    if timesteps:
        result["denoising"] = denoising(module, datamodule, timesteps, cfg.n_samples, cfg.seed)
    fix = "Free space, or write the result to a disk with room (out=<JSON path>, save_samples=false), then rerun"
    if cfg.save_samples:
        label = sampling_label(cfg.n_samples, cfg.sampler, steps, cfg.guidance_scale)
        save_samples(ev.images, ev.labels, out_dir / f"samples-{label.replace('/', '_')}", fix)
    write_atomic(path, json.dumps(result, indent=2), fix)  # last: a result on disk means everything was written

    print(f"{fid_name} = {result['metrics'][fid_name]:.4f}")
    print(f"{kid_name} = {ev.metrics[kid_name]:.5f} ± {ev.kid_std:.5f}")
    if cfg.references:
        print(f"references with the same features and count: real held-out images "
              f"{result['references']['real_test']:.2f}, N(0, 1) noise {result['references']['noise']:.2f}")
    for t, mse in result.get("denoising", {}).items():
        print(f"x0 MSE at t={t}: model {mse['model']:.4f}, Wiener filter {mse['wiener']:.4f}")
    ref = ev.reference
    print(f"({result['weights']} weights of {ckpt}; features {result['extractor']}; reference {ref.dataset} "
          f"{ref.split}, {ref.stats.count} images)")
    print(f"wrote {path}")
    return {**result, "path": str(path)}


def check_timesteps(timesteps: list[int], num_timesteps: int) -> list[int]:
    """``denoise=[...]``: timesteps of the checkpoint's schedule (checked before any sampling)."""
    bad = [t for t in timesteps if not (isinstance(t, int) and 0 <= t < num_timesteps)]
    if bad:
        raise ConfigError(f"denoise={timesteps}: {bad} are not timesteps 0..{num_timesteps - 1} of the checkpoint's "
                          "schedule; pass integers in that range, e.g. denoise=[10,50,100,250,500]")
    return timesteps


def denoising(module: DiffusionModule, datamodule: Any, timesteps: list[int], n: int, seed: int) -> dict[int, dict]:
    """The model's x̂_0 MSE against the Wiener filter's at each of ``timesteps`` on ``n`` held-out images."""
    train, _ = load_split(datamodule, "train")
    held_out, _ = load_split(datamodule, "test")
    return denoising_profile(module.model, module.diffusion, train.to(module.device), held_out[:n].to(module.device),
                             timesteps, seed)


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Console entry point (``scalelong-eval``)."""
    exit_on_user_error("scalelong-eval", run, cfg)


if __name__ == "__main__":
    main()
