"""``scalelong-train``: train a diffusion backbone with an LSC scaler from the Hydra config tree.

    scalelong-train                                   # CPU U-ViT with cs on Fashion-MNIST
    scalelong-train model=uvit_deep scaler=ls seed=1  # any group option, any field
    scalelong-train -m scaler=none,uniform,cs,ls seed=0,1,2   # a sweep, one run directory each
    scalelong-train experiment=cifar10_uvit_s2 trainer=ddp    # a paper setting on GPUs

A run directory holds ``.hydra/`` (the composed config), ``train.log``, ``csv/metrics.csv``,
``checkpoints/`` (``last.ckpt`` and one per interval) and ``samples/``. Running the same command
again resumes from ``checkpoints/last.ckpt`` (``ckpt_path=auto``).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from scalelong.config import CONF_DIR
from scalelong.errors import ConfigError, ScaleLongError
from scalelong.kappa import resolve_auto_kappa
from scalelong.lit import DiffusionModule, build_module, read_checkpoint

log = logging.getLogger("scalelong.train")

# Lightning warns when resuming mid-epoch with a loader it cannot restore; ours needs no state:
# ResumableBatchSampler derives its position from the restored global step.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def train(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Build everything from ``cfg``, fit, and return the final metrics (also in summary.json)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    auto = resolve_auto_kappa(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.shuffle_seed = cfg.seed
    module = build_module(cfg)
    check_geometry(module, datamodule)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    ckpt = resume_path(cfg.ckpt_path, run_dir)
    log.info("run %s: %s with %s, %d LSCs, %.2fM parameters%s", run_dir, type(module.model).__name__,
             cfg.scaler._target_.rsplit(".", 1)[-1], module.model.num_skips,
             sum(p.numel() for p in module.parameters()) / 1e6, f", resuming {ckpt}" if ckpt else "")
    if auto is not None:
        log.info("scaler.kappa=auto chose kappa = %.4f (paper Sec. 4.1)", auto)
        for logger in loggers:
            logger.log_metrics({"kappa/auto": auto}, step=0)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics["step"] = trainer.global_step
    if trainer.is_global_zero:
        (run_dir / "summary.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def check_geometry(module: DiffusionModule, datamodule: L.LightningDataModule) -> None:
    """The model's input geometry must match the data's (one clear error, not a shape mismatch)."""
    m = module.model
    want = (datamodule.channels, datamodule.image_size)
    have = (m.in_chans, m.img_size)
    if want != have:
        raise ConfigError(
            f"model expects {have[0]}×{have[1]}×{have[1]} images but data gives "
            f"{want[0]}×{want[1]}×{want[1]}; pick a model preset for this data or set "
            f"model.in_chans={want[0]} model.img_size={want[1]}"
        )
    if m.num_classes and not datamodule.num_classes:
        raise ConfigError(f"model.num_classes={m.num_classes} but the data has no labels; set model.num_classes=0")


def resume_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``auto``: the run's last checkpoint if any; a path: that file, which must be a readable
    scalelong checkpoint."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            return None
        ckpt_path = str(last)
    read_checkpoint(ckpt_path)  # one clear error for a missing, corrupt or foreign file
    return ckpt_path


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return train(cfg, run_dir).get("val/loss")
    except ScaleLongError as err:
        log.error("%s", err)
        sys.exit(f"scalelong-train: {err}")


def main() -> None:
    """Console entry point (``scalelong-train``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
