"""``scalelong-sample``: draw samples from a checkpoint with its EMA weights.

    scalelong-sample ckpt=outputs/runs/default/checkpoints/last.ckpt num_samples=64 sampler=ddim steps=50

Writes ``<out>.png`` (a grid) and ``<out>.npz`` (``images``: N×H×W×C uint8, ``labels``: N int64),
the layout ADM's and U-ViT's evaluation scripts read (``arr_0`` is an alias of ``images``). The
samples and their labels come from :func:`scalelong.sampling.draw`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from scalelong.config import CONF_DIR
from scalelong.errors import ConfigError, exit_on_user_error
from scalelong.lit import load_checkpoint
from scalelong.samplers import get_sampler
from scalelong.sampling import draw, save_samples


def check_args(cfg: DictConfig) -> None:
    """One ``ConfigError`` naming the argument, before the checkpoint is loaded."""
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise ConfigError("ckpt is not set; pass the checkpoint to sample from, e.g. "
                          "scalelong-sample ckpt=outputs/runs/default/checkpoints/last.ckpt")
    for key in ("num_samples", "batch_size"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]!r} must be a whole number of at least 1, e.g. {key}=64")
    get_sampler(cfg.sampler)


def run(cfg: DictConfig) -> Path:
    check_args(cfg)
    steps = cfg.steps or get_sampler(cfg.sampler).default_steps
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    module = load_checkpoint(cfg.ckpt, map_location=device).to(device)
    images, labels = draw(module, cfg.num_samples, cfg.batch_size, cfg.seed, sampler=cfg.sampler,
                          steps=steps, guidance_scale=cfg.guidance_scale)
    ckpt = Path(cfg.ckpt)
    out = Path(cfg.out) if cfg.out else ckpt.parent.parent / "samples" / f"{ckpt.stem}_{cfg.sampler}_{steps}"
    save_samples(images, labels, out)
    return out


@hydra.main(config_path=str(CONF_DIR), config_name="sample", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Console entry point (``scalelong-sample``)."""
    exit_on_user_error("scalelong-sample", run, cfg)


if __name__ == "__main__":
    main()
