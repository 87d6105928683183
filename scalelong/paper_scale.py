"""The paper-scale counterpart of the CPU reproduction: one SLURM command per table or figure, with its
expected wall time per run.

Wall time is extrapolated from one measured throughput, the paper's own (Sec. 5.1): standard U-ViT-S/2 on
CIFAR-10 at batch 32 trained 500k steps in 15.6 hours, i.e. 285 images/s. With the training FLOPs per image
of U-ViT-S/2 (forward and backward, counted by ``torch.utils.flop_counter`` on a meta-device model) that is
a sustained rate in FLOP/s; a run of another model costs steps × batch × its FLOPs per image at that rate.
The paper does not name its GPUs, so the hours are for the paper's hardware; multiply by the ratio of the
paper's rate to a cluster's own (e.g. the step time Lightning logs in the first minutes) to rescale.
"""

from __future__ import annotations

import math
from functools import cache

import torch
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from scalelong.config import CONF_DIR, compose

# Paper Sec. 5.1: "standard UViT trained for 15.6 hours (500 k steps)" at batch 32 (CIFAR-10, U-ViT-S/2).
PAPER_IMAGES_PER_SECOND = 500_000 * 32 / (15.6 * 3600)
PAPER_THROUGHPUT_MODEL = "cifar10_uvit_s2"
SEEDS = "seed=0,1,2"
DEVICES = 8  # GPUs per job of the paper-scale commands


def load_tables() -> dict[str, tuple[str, str]]:
    """``conf/paper_scale.yaml`` as {"experiment overrides": (what it reproduces, overrides besides the seeds)}."""
    entries = yaml.safe_load((CONF_DIR / "paper_scale.yaml").read_text())
    return {f"{e['experiment']} {e.get('overrides', '')}".strip(): (e["what"], e.get("overrides", "")) for e in entries}


TABLES = load_tables()


def training_flops_per_image(experiment: str) -> float:
    """FLOPs of one forward and backward pass of the experiment's model on one image (meta device: no memory)."""
    return model_flops_per_image(compose([f"experiment={experiment}"]).model)


def model_flops_per_image(model_cfg: DictConfig) -> float:
    """FLOPs of one forward and backward pass of the model of ``model_cfg`` on one image, counted by
    ``FlopCounterMode`` on the meta device (nothing is computed; attention counts through its matmuls)."""
    return _model_flops(OmegaConf.to_yaml(model_cfg, resolve=True))


@cache
def _model_flops(model_yaml: str) -> float:
    model_cfg: DictConfig = OmegaConf.create(model_yaml)
    with torch.device("meta"):
        model = instantiate(model_cfg)
        x = torch.randn(1, model.in_chans, model.img_size, model.img_size)
        t = torch.zeros(1, dtype=torch.long)
        y = torch.zeros(1, dtype=torch.long) if model.num_classes else None
        with FlopCounterMode(display=False) as counter:
            model(x, t, y).sum().backward()
    return float(counter.get_total_flops())


def paper_rate() -> float:
    """FLOP/s of the paper's measured throughput (see the module docstring)."""
    return PAPER_IMAGES_PER_SECOND * training_flops_per_image(PAPER_THROUGHPUT_MODEL)


def command(experiment: str, overrides: str) -> str:
    return (f"scalelong-train -m hydra/launcher=slurm trainer=ddp trainer.devices={DEVICES} "
            f"hydra.launcher.partition=gpu experiment={experiment} {overrides} {SEEDS}".replace("  ", " "))


def runs_of(cfg: DictConfig, overrides: str) -> int:
    """Jobs of the command: the experiment's sweep (``hydra.sweeper.params``) × the overrides' values × seeds."""
    values = [str(v) for v in (cfg.hydra.sweeper.get("params") or {}).values()]
    values += [o.split("=", 1)[1] for o in overrides.split()] + [SEEDS.split("=", 1)[1]]
    return math.prod(len(v.split(",")) for v in values)


def paper_scale_markdown() -> str:
    """The table of commands with FLOPs per image and expected hours per run at the paper's throughput."""
    rate = paper_rate()
    rows = ["| table / figure | command | runs | batch × steps | TFLOP per image (fwd+bwd) | hours per run |",
            "|---|---|---|---|---|---|"]
    for key, (what, overrides) in TABLES.items():
        experiment = key.split()[0]
        cfg = compose([f"experiment={experiment}"], return_hydra_config=True)
        batches = [int(b) for b in overrides.split("=")[1].split(",")] if overrides else [int(cfg.data.batch_size)]
        flops = training_flops_per_image(experiment)
        hours = [b * cfg.trainer.max_steps * flops / rate / 3600 for b in batches]
        rows.append(f"| {what} | `{command(experiment, overrides)}` | {runs_of(cfg, overrides)} | "
                    f"{'/'.join(map(str, batches))} × {cfg.trainer.max_steps:,} | {flops / 1e12:.3f} | "
                    f"{' / '.join(f'{h:,.0f}' for h in hours)} |")
    return (f"Expected hours per run at the paper's measured throughput ({PAPER_IMAGES_PER_SECOND:.0f} images/s of "
            f"U-ViT-S/2 at batch 32, i.e. {rate / 1e12:.1f} TFLOP/s sustained; `scalelong/paper_scale.py`), one run "
            f"being one seed of one setting; the job runs on {DEVICES} GPUs per the command (the paper's rate is for "
            "its own, unnamed, hardware):\n\n" + "\n".join(rows))
