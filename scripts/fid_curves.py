"""FID against training steps and wall time, for named recipes (issue "Trained models must generate").

Each recipe is a list of ``scalelong-train`` overrides. The script trains it once with a checkpoint
every ``--every`` steps (unless the recipe sets the interval), then scores every checkpoint with
``scalelong-eval`` (EMA weights, domain FID on ``--samples`` images, the recipe's sampler; the grid of
the first 256 samples is kept), and writes one JSON per recipe, the best checkpoint's sample grid, a Markdown
table and a plot of FID against steps and against wall time (time from launch to the checkpoint's write,
startup included, as a user waits for it).

    python scripts/fid_curves.py demo                  # the recipes tried for `make demo`
    python scripts/fid_curves.py presets --guidance 2 --steps 10   # each CPU preset's documented recipe
    python scripts/fid_curves.py demo --only unet16_msnr_cos_cond --guidance 2 --steps 15   # scored with guidance

Results go to ``docs/results/<study>/`` (``<recipe>.json``, ``README.md`` table, ``fid_curves.png``, ``samples_*.png``);
runs go to ``outputs/runs/fid_curves-<study>-<recipe>``. A recipe already trained is not retrained
(delete its run directory to redo it); a checkpoint already scored is not rescored.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("fid_curves")

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# The demo recipe as it stood before the screening below (conf/experiment/fmnist_demo.yaml at commit 488c349),
# spelled out so that the study does not change when the demo does: unconditional UNet ch 16 with cs,
# batch 32, lr 2e-3, Adam (0.9, 0.999), EMA 0.995, uniform loss weighting, constant lr.
SCREEN_BASE = ["model=unet_small", "scaler=cs", "data=fashion_mnist", "trainer=cpu", "model.ch=16",
               "data.batch_size=32", "data.val_size=512", "optim.lr=2e-3", "optim.betas=[0.9,0.999]",
               "optim.warmup_steps=100", "callbacks.ema.decay=0.995", "trainer.val_check_interval=300",
               "callbacks.samples.steps=25", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]

# A recipe may set its checkpoint interval with this override; otherwise `--every` does.
EVERY = "callbacks.checkpoint.every_n_train_steps"

# The demo's training recipe on any preset: class labels (for guidance), min-SNR, cosine decay, batch 32.
PRESET_BASE = ["data=fashion_mnist", "data.val_size=512", "data.batch_size=32", "scaler=cs", "model.num_classes=10",
               "diffusion.loss_weighting=min_snr", "optim.betas=[0.9,0.999]", "optim.warmup_steps=100",
               "optim.decay=cosine", "callbacks.ema.decay=0.995", "callbacks.samples.steps=15",
               "callbacks.samples.guidance_scale=2", "trainer.enable_progress_bar=false",
               "trainer.enable_model_summary=false"]

# The 10k-step presets' schedule, and the two guards against uvit_deep's loss spike (see "presets" below).
LONG = ["callbacks.ema.decay=0.999", "trainer.max_steps=10000", f"{EVERY}=2000"]
SPIKE_GUARDS = ["optim.betas=[0.9,0.99]", "trainer.gradient_clip_val=0.5"]

STUDIES: dict[str, dict[str, list[str]]] = {
    # What was tried for `make demo` (about 5 minutes of training on 2 cores each).
    "demo": {
        "unet16_b32_lr2e-3": [*SCREEN_BASE, "trainer.max_steps=1500"],
        # Screening: two runs at a time, one thread each, so their wall times are about twice a quiet run's.
        "unet16_msnr": [*SCREEN_BASE, "diffusion.loss_weighting=min_snr", "model.dropout=0", "trainer.max_steps=1500"],
        "unet16_msnr_cos": [*SCREEN_BASE, "diffusion.loss_weighting=min_snr", "model.dropout=0", "optim.decay=cosine",
                            "trainer.max_steps=1500"],
        "unet16_msnr_cos_cond": [*SCREEN_BASE, "diffusion.loss_weighting=min_snr", "model.dropout=0",
                                 "optim.decay=cosine", "model.num_classes=10", "model.class_dropout=0.1",
                                 "trainer.max_steps=1500"],
        "unet16_msnr_cos_b16": [*SCREEN_BASE, "diffusion.loss_weighting=min_snr", "model.dropout=0",
                                "optim.decay=cosine", "data.batch_size=16", "trainer.max_steps=2300"],
    },
    # Each CPU preset with the demo's training recipe (class labels, min-SNR, cosine decay, batch 32), scored
    # with guidance 2 (`--guidance 2 --steps 10`), one seed. Longer runs than the demo. The U-ViTs at lr 2e-3
    # after the lr 1e-3 run of uvit_small fell short.
    "presets": {
        "unet_small": ["model=unet_small", *PRESET_BASE, "model.dropout=0", "optim.lr=2e-3", "trainer.max_steps=1600",
                       f"{EVERY}=800"],
        "uvit_small_lr1e-3": ["model=uvit_small", *PRESET_BASE, "optim.lr=1e-3", "trainer.max_steps=3000",
                              f"{EVERY}=1500"],
        "uvit_small": ["model=uvit_small", *PRESET_BASE, "optim.lr=2e-3", "trainer.max_steps=3000", f"{EVERY}=1000"],
        "uvit_deep": ["model=uvit_deep", *PRESET_BASE, "optim.lr=2e-3", "trainer.max_steps=900", f"{EVERY}=300"],
        # Longer runs, after the curves above were still falling: EMA 0.999 (a window of ~1,000 steps) for 10k steps.
        "uvit_small_10k": ["model=uvit_small", *PRESET_BASE, "callbacks.ema.decay=0.999", "optim.lr=2e-3",
                           "trainer.max_steps=10000", f"{EVERY}=2000"],
        "uvit_deep_10k": ["model=uvit_deep", *PRESET_BASE, "callbacks.ema.decay=0.999", "optim.lr=2e-3",
                          "trainer.max_steps=10000", f"{EVERY}=2000"],
        # uvit_deep_10k's loss spiked at step ~4,950 (0.03 -> 0.5, then a plateau near 0.05) and its FID went from
        # 104 at 4k steps to 372 at 6k. Half the lr, Adam beta2 0.99 (the second moment forgets a quiet stretch
        # sooner) and a gradient-norm clip at 0.5 (about 6x the typical norm, 0.08 at step 4k: it cuts spikes only).
        "uvit_deep_stable": ["model=uvit_deep", *PRESET_BASE, *LONG, *SPIKE_GUARDS, "optim.lr=1e-3"],
        # The same guards at uvit_deep_10k's lr 2e-3, which was ahead of uvit_small at 4k steps before its spike.
        # It ran through (19.4 at 10k against uvit_deep_stable's 24.3) and is experiment=fmnist_uvit_deep.
        "uvit_deep_guarded": ["model=uvit_deep", *PRESET_BASE, *LONG, *SPIKE_GUARDS, "optim.lr=2e-3"],
    },
}


def run_dir(study: str, recipe: str) -> Path:
    return ROOT / "outputs" / "runs" / f"fid_curves-{study}-{recipe}"


def train(study: str, recipe: str, overrides: list[str], every: int) -> None:
    """Train the recipe (skipped once it has finished; an interrupted run resumes) and record the launch time."""
    out = run_dir(study, recipe)
    meta_path = out / "launch.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if "finished" in meta:
        log.info("%s/%s: already trained", study, recipe)
        return
    out.mkdir(parents=True, exist_ok=True)
    resume = "launched" in meta and (out / "checkpoints" / "last.ckpt").is_file()
    if resume:  # wall times from launch now include the time the run was down; the report says so
        meta.setdefault("resumed", []).append(time.time())
    else:
        meta = {"launched": time.time(), "overrides": overrides}
    meta_path.write_text(json.dumps(meta))
    interval = [] if any(o.startswith(f"{EVERY}=") for o in overrides) else [f"{EVERY}={every}"]
    cmd = [str(BIN / "scalelong-train"), *overrides, f"run_name={run_dir(study, recipe).name}", *interval,
           f"ckpt_path={'auto' if resume else 'null'}"]
    log.info("%s", " ".join(cmd))
    with open(out / "stdout.log", "a" if resume else "w") as f:
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=f, stderr=subprocess.STDOUT)
    meta_path.write_text(json.dumps({**meta, "finished": time.time()}))


def score(study: str, recipe: str, samples: int, sampler: str | None, steps: int | None,
          guidance: float = 1.0) -> list[dict]:
    """FID/KID of every checkpoint of the recipe; rows sorted by step."""
    out = run_dir(study, recipe)
    meta = json.loads((out / "launch.json").read_text())
    launched, resumed = meta["launched"], meta.get("resumed", [])
    rows = []
    for ckpt in sorted((out / "checkpoints").glob("step*.ckpt")):
        step = int(re.sub(r"\D", "", ckpt.stem))
        suffix = "" if guidance == 1.0 else f"_cfg{guidance:g}"
        result = out / "eval" / f"{ckpt.stem}_{samples}{suffix}.json"
        if not result.is_file():
            cmd = [str(BIN / "scalelong-eval"), f"ckpt={ckpt}", f"n_samples={samples}", f"out={result}",
                   f"kid_subset_size={samples // 2}", "save_samples=true"]
            cmd += [f"sampler={sampler}"] if sampler else []
            cmd += [f"steps={steps}"] if steps else []
            cmd += [f"guidance_scale={guidance}"] if guidance != 1.0 else []
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
        res = json.loads(result.read_text())
        fid_key = next(k for k in res["metrics"] if k.startswith("fid"))
        kid_key = next(k for k in res["metrics"] if k.startswith("kid"))
        written = ckpt.stat().st_mtime
        rows.append({"step": step, "wall_s": written - launched, "resumed": any(r < written for r in resumed),
                     "metric": fid_key,
                     "fid": res["metrics"][fid_key], "kid": res["metrics"][kid_key], "kid_std": res["kid_std"]})
    return sorted(rows, key=lambda r: r["step"])


def copy_best_grid(study: str, recipe: str, rows: list[dict], dest: Path, name: str) -> None:
    """Copy the sample grid (the first 256 scored samples) of the best checkpoint by FID to ``dest``."""
    if not rows:
        return
    best = min(rows, key=lambda r: r["fid"])
    label = best["metric"].split("-", 1)[1].replace("/", "_")  # fid_<data>-1k/dpm-10-cfg2 -> 1k_dpm-10-cfg2
    grid = run_dir(study, recipe) / "eval" / f"step{best['step']:07d}" / f"samples-{label}.png"
    if grid.is_file():
        shutil.copyfile(grid, dest / f"samples_{name}_step{best['step']}.png")


def report(study: str, results: dict[str, dict], command: str) -> Path:
    """README.md table and the two plots of ``docs/results/<study>/``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = ROOT / "docs" / "results" / study
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    lines = [f"# FID against training: {study}", "",
             f"Made by `{command}` (domain FID of the EMA weights; wall time from "
             "launch to the checkpoint's write, startup included, on a 2-core machine shared with other jobs, "
             "so it varies with their load). `samples_<recipe>_step<n>.png`: the first 256 scored samples of "
             "each recipe's best checkpoint.", "",
             "| recipe | step | wall (s) | FID | KID |", "|---|---|---|---|---|"]
    for recipe, res in results.items():
        rows = res["rows"]
        if not rows:
            continue
        for r in rows:
            wall = f"{r['wall_s']:.0f}" + (" (resumed, includes downtime)" if r.get("resumed") else "")
            lines.append(f"| {recipe} | {r['step']} | {wall} | {r['fid']:.1f} | "
                         f"{r['kid']:.2f} ± {r['kid_std']:.2f} |")
        axes[0].plot([r["step"] for r in rows], [r["fid"] for r in rows], marker="o", label=recipe)
        axes[1].plot([r["wall_s"] / 60 for r in rows], [r["fid"] for r in rows], marker="o", label=recipe)
    metric = next((res["rows"][0]["metric"] for res in results.values() if res["rows"]), "fid")
    for ax, xlabel in zip(axes, ("training step", "wall time (min)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fid_curves.png", dpi=110)
    lines += ["", "Overrides of each recipe:", ""]
    lines += [f"- `{recipe}`: `{' '.join(res['overrides'])}`" for recipe, res in results.items()]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument("--only", nargs="*", help="recipes to run (default: all of the study)")
    parser.add_argument("--every", type=int, default=300,
                        help="checkpoint interval in steps, unless the recipe sets one")
    parser.add_argument("--samples", type=int, default=1000, help="samples per FID")
    parser.add_argument("--sampler", default=None, help="override the sampler (default: scalelong-eval's)")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps")
    parser.add_argument("--guidance", type=float, default=1.0,
                        help="classifier-free guidance scale (class-conditional recipes); results get a _cfg<s> suffix")
    parser.add_argument("--report-only", action="store_true", help="rebuild the table and plot from the JSONs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")

    out = ROOT / "docs" / "results" / args.study
    out.mkdir(parents=True, exist_ok=True)
    recipes = STUDIES[args.study]
    for recipe in args.only or recipes:
        if args.report_only:
            continue
        train(args.study, recipe, recipes[recipe], args.every)
        rows = score(args.study, recipe, args.samples, args.sampler, args.steps, args.guidance)
        overrides = recipes[recipe] + ([f"(eval) guidance_scale={args.guidance:g}"] if args.guidance != 1.0 else [])
        name = recipe if args.guidance == 1.0 else f"{recipe}_cfg{args.guidance:g}"
        (out / f"{name}.json").write_text(json.dumps({"overrides": overrides, "rows": rows}, indent=2))
        copy_best_grid(args.study, recipe, rows, out, name)
        for r in rows:
            log.info("%s step %d wall %.0fs %s %.1f", name, r["step"], r["wall_s"], r["metric"], r["fid"])
    results = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    scoring = f" --guidance {args.guidance:g}" if args.guidance != 1.0 else ""
    scoring += f" --steps {args.steps}" + (f" --sampler {args.sampler}" if args.sampler else "")
    log.info("wrote %s", report(args.study, results, f"python scripts/fid_curves.py {args.study}{scoring}"))


if __name__ == "__main__":
    main()
