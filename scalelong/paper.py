"""The paper's training and evaluation settings as the composed configs state them (issue 8).

:func:`settings` reads one paper experiment's composed config into the quantities the paper and
the official U-ViT/ScaleLong code fix (paper App. A, Table 6): global batch, optimiser, warm-up,
steps, EMA, precision, κ, the LS ratios, label handling and the evaluation protocol.
:func:`render` turns them into ``docs/paper_settings.md`` (``python scripts/paper_settings.py``).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from scalelong.config import CONF_DIR, compose

# Every GPU-scale experiment of the paper (the CPU experiments fmnist_demo, fig1_* are not).
PAPER_EXPERIMENTS = (
    "cifar10_uvit_s2", "celeba64_uvit_s4", "imagenet64_uvit_m4", "imagenet64_uvit_l4", "cifar10_unet_ddpm",
    "table1_cifar10", "table2_ls_modules", "table2_ls_ratio", "table2_ls_activation", "table3_baselines",
    "table4_order", "fig13_kappa",
)
COLUMNS = {
    "experiment": "experiment", "model": "model", "batch": "global batch", "lr": "lr", "betas": "betas",
    "weight_decay": "weight decay (applies to)", "warmup": "warm-up", "steps": "steps", "ema": "EMA",
    "precision": "precision", "kappa": "κ (cs)", "ls_ratio": "LS ratio", "labels": "labels",
    "eval_during": "in-training evaluation", "eval_final": "reported number",
}


def _eval_label(num_samples: int, sampler: str, steps: int, extractor: str) -> str:
    metric = "FID" if extractor == "inception" else f"domain FID ({extractor})"
    return f"{metric}-{num_samples // 1000}k, {sampler} {steps}"


def settings(experiment: str) -> dict[str, Any]:
    """The paper-relevant settings of ``experiment`` (a name in conf/experiment/), from its composed config."""
    cfg = compose([f"experiment={experiment}"], return_hydra_config=True)
    model = cfg.model
    labels = "unconditional"
    if model.num_classes:
        null = "null label" if model.get("null_label", True) else "no null label"
        labels = f"{model.num_classes} classes, {null}, dropout {model.class_dropout}"
    fid = cfg.callbacks.get("fid")
    during = "none"
    if fid is not None:
        label = _eval_label(fid.num_samples, fid.sampler, fid.steps, fid.extractor)
        during = f"{label} every {fid.every_n_steps // 1000}k, best kept"
    return {
        "experiment": experiment,
        "model": cfg.hydra.runtime.choices["model"],
        "batch": int(cfg.data.batch_size),
        "lr": float(cfg.optim.lr),
        "betas": tuple(float(b) for b in cfg.optim.betas),
        "weight_decay": (float(cfg.optim.weight_decay),
                         "all parameters" if not cfg.optim.exclude_from_decay else "weights (no norms/biases/tables)"),
        "warmup": int(cfg.optim.warmup_steps),
        "steps": int(cfg.trainer.max_steps),
        "ema": float(cfg.callbacks.ema.decay),
        "precision": str(cfg.trainer.precision),
        "kappa": float(cfg.cs_kappa),
        "ls_ratio": "r = 16; coders ⌊C_i/4⌋" if model._target_.endswith("UNet") else "r = 16",
        "labels": labels,
        "eval_during": during,
        "eval_final": final_eval(cfg),
    }


def final_eval(cfg: DictConfig) -> str:
    """The reported number of a run config: its ``final_eval`` protocol preset (conf/protocol/)."""
    name = cfg.get("final_eval")
    if name is None:
        return "none"
    protocol = compose([f"+protocol={name}", "ckpt=x"], config_name="eval")
    return f"{_eval_label(protocol.n_samples, protocol.sampler, protocol.steps, protocol.extractor)} ({name})"


def _cell(key: str, value: Any) -> str:
    if key == "experiment":
        return f"`{value}`"
    if key == "betas":
        return f"({value[0]:g}, {value[1]:g})"
    if key == "weight_decay":
        return f"{value[0]:g} ({value[1]})"
    if key in ("lr", "ema", "kappa"):
        return f"{value:g}"
    if key in ("steps", "warmup", "batch"):
        return f"{value:,}"
    return str(value)


def render(experiments: tuple[str, ...] = PAPER_EXPERIMENTS) -> str:
    """``docs/paper_settings.md``: one row per paper experiment, generated from the composed configs."""
    rows = [settings(e) for e in experiments]
    head = "| " + " | ".join(COLUMNS.values()) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    body = ["| " + " | ".join(_cell(k, r[k]) for k in COLUMNS) + " |" for r in rows]
    return "\n".join([
        "# Paper settings",
        "",
        "Generated from the composed configs by `python scripts/paper_settings.py` (do not edit by hand;",
        "`tests/test_paper.py` checks it against the paper's values and that it is up to date).",
        "",
        "The global batch is split over processes: each loads batch / (devices × num_nodes ×",
        "accumulate_grad_batches). Precision is that of the experiment's trainer preset (GPU: fp16 mixed,",
        "as the official code). The LS ratio is the SE core's r (paper Eq. (11)); a conv UNet's per-width",
        "encoders/decoders use r_i = ⌊C_i/4⌋ (App. A.2, Eq. (12)–(13)). The reported number is scored with",
        "`scalelong-eval +protocol=<name> ckpt=<run dir>/checkpoints/best_fid.ckpt`.",
        f"Configs: `{CONF_DIR.name}/experiment/`, `{CONF_DIR.name}/protocol/`, "
        f"`{CONF_DIR.name}/callbacks/paper_fid.yaml`.",
        "",
        head,
        rule,
        *body,
        "",
    ])
