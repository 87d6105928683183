"""``scalelong-sample``: draw samples from a checkpoint with its EMA weights.

    scalelong-sample ckpt=outputs/runs/default/checkpoints/last.ckpt num_samples=64 sampler=ddim steps=50

Writes ``<out>.png`` (a grid) and ``<out>.npz`` (``images``: N×H×W×C uint8, ``labels``: N int64),
the layout ADM's and U-ViT's evaluation scripts read (``arr_0`` is an alias of ``images``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import make_grid, save_image

from scalelong.config import CONF_DIR
from scalelong.diffusion import DEFAULT_STEPS
from scalelong.errors import ConfigError, ScaleLongError
from scalelong.lit import DiffusionModule, load_checkpoint

log = logging.getLogger("scalelong.sample")


def draw(
    module: DiffusionModule, num_samples: int, batch_size: int, seed: int, **sample_kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_samples`` images in [-1, 1] in batches, with labels drawn like the training data
    (uniform over classes) for class-conditional models; reproducible for a fixed seed."""
    generator = torch.Generator(device=module.device).manual_seed(seed)
    num_classes = module.model.num_classes
    labels = torch.randint(0, max(num_classes, 1), (num_samples,), generator=generator,
                           device=module.device)
    images = []
    for start in range(0, num_samples, batch_size):
        y = labels[start : start + batch_size]
        images.append(module.sample(len(y), y=y if num_classes else None, generator=generator,
                                    **sample_kwargs).cpu())
    return torch.cat(images), labels.cpu()


def save_samples(images: torch.Tensor, labels: torch.Tensor, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid((images[:256] + 1) / 2, nrow=int(min(len(images), 256) ** 0.5))
    save_image(grid, out.with_suffix(".png"))
    pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez(out.with_suffix(".npz"), images=pixels, arr_0=pixels, labels=labels.numpy())
    log.info("wrote %s.png and %s.npz (%d samples)", out, out, len(images))


def check_args(cfg: DictConfig) -> None:
    """One ``ConfigError`` naming the argument, before the checkpoint is loaded."""
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise ConfigError("ckpt is not set; pass the checkpoint to sample from, e.g. "
                          "scalelong-sample ckpt=outputs/runs/default/checkpoints/last.ckpt")
    for key in ("num_samples", "batch_size"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]!r} must be a whole number of at least 1, e.g. {key}=64")


def run(cfg: DictConfig) -> Path:
    check_args(cfg)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    module = load_checkpoint(cfg.ckpt, map_location=device).to(device)
    steps = cfg.steps or DEFAULT_STEPS.get(cfg.sampler)
    images, labels = draw(module, cfg.num_samples, cfg.batch_size, cfg.seed, sampler=cfg.sampler,
                          steps=steps, guidance_scale=cfg.guidance_scale)
    ckpt = Path(cfg.ckpt)
    out = Path(cfg.out) if cfg.out else ckpt.parent.parent / "samples" / f"{ckpt.stem}_{cfg.sampler}_{steps}"
    save_samples(images, labels, out)
    return out


@hydra.main(config_path=str(CONF_DIR), config_name="sample", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ScaleLongError as err:
        sys.exit(f"scalelong-sample: {err}")


def main() -> None:
    """Console entry point (``scalelong-sample``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
