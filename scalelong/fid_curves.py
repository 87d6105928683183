"""FID against training steps and wall time of named experiments (docs/generation.md; FID: docs/metrics.md).

An experiment (``conf/experiment/<name>.yaml``) is trained once by ``scalelong-train`` in
``outputs/runs/fid_curves-<name>`` (``/`` → ``-``), with a checkpoint every
``callbacks.checkpoint.every_n_train_steps``. ``scalelong-eval`` scores every checkpoint (EMA weights,
domain FID and KID of :class:`Scoring`'s samples, the grid of the first 256 kept), and the rows (step,
wall time from launch to the checkpoint's write, FID, KID) go to one JSON per experiment and scoring in a
results folder; :func:`write_report` turns the folder into ``README.md`` (table) and ``fid_curves.png``.

A run whose ``status.json`` says completed (:func:`scalelong.runs.status.read_status`) is not retrained. A run
stopped after its first checkpoint resumes from it (``ckpt_path=auto``); the rows written after a resume
are marked, as their wall time includes the downtime. A scored checkpoint is not rescored.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from scalelong.config import CONF_DIR
from scalelong.eval.reference import sampling_label
from scalelong.runs.checkpoints import checkpoint_step
from scalelong.runs.status import read_status

log = logging.getLogger(__name__)

REPO = CONF_DIR.parent
LAUNCH_FILE = "launch.json"  # {"launched": time, "resumed": [time, ...]}: the origin of the wall times
# Training writes its log to a file, where a progress bar is noise; display only, not part of a recipe.
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@dataclass(frozen=True)
class Scoring:
    """How ``scalelong-eval`` scores each checkpoint; ``None`` keeps its default (conf/eval.yaml)."""

    samples: int = 1000
    sampler: str | None = None
    steps: int | None = None
    guidance: float = 1.0

    @property
    def suffix(self) -> str:
        """``_cfg2`` for guidance 2, in the names of the results, so guided and unguided scores coexist."""
        return "" if self.guidance == 1.0 else f"_cfg{self.guidance:g}"

    def overrides(self) -> list[str]:
        options = {"sampler": self.sampler, "steps": self.steps,
                   "guidance_scale": None if self.guidance == 1.0 else self.guidance}
        return [f"n_samples={self.samples}", f"kid_subset_size={self.samples // 2}", "save_samples=true",
                *(f"{k}={v}" for k, v in options.items() if v is not None)]


@dataclass(frozen=True)
class CurveRun:
    """The run of one experiment (and extra overrides, e.g. ``debug=tiny``) for these curves, under ``root``."""

    root: Path
    experiment: str
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``presets-uvit_deep`` for ``presets/uvit_deep``; extra overrides are appended (``__debug-tiny``). Only
        word characters, ``.`` and ``-``, so that the name and the paths under it pass as Hydra override values."""
        return re.sub(r"[^\w.-]+", "-", "__".join([self.experiment, *self.overrides]))

    @property
    def dir(self) -> Path:
        return Path(self.root) / "outputs" / "runs" / f"fid_curves-{self.name}"

    def train(self) -> None:
        """Train the experiment unless its run has completed; resume it if it was stopped."""
        record_path = self.dir / LAUNCH_FILE
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        if "launched" in record and (read_status(self.dir) or {}).get("status") == "completed":
            log.info("%s: already trained", self.dir.name)
            return
        resume = "launched" in record and (self.dir / "checkpoints" / "last.ckpt").is_file()
        if resume:
            record.setdefault("resumed", []).append(time.time())
        else:
            record = {"launched": time.time()}
        self.dir.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record))
        cmd = [sys.executable, "-m", "scalelong.train", f"experiment={self.experiment}", *self.overrides, *QUIET,
               f"run_name={self.dir.name}", f"ckpt_path={'auto' if resume else 'null'}"]
        log.info("%s", " ".join(cmd))
        with open(self.dir / "stdout.log", "a" if resume else "w") as f:
            subprocess.run(cmd, cwd=self.root, check=True, stdout=f, stderr=subprocess.STDOUT)

    def score(self, scoring: Scoring) -> list[dict]:
        """FID and KID of every checkpoint of the run, by step; each row names its checkpoint."""
        record = json.loads((self.dir / LAUNCH_FILE).read_text())
        rows = []
        for ckpt in sorted((self.dir / "checkpoints").glob("step*.ckpt")):
            result = self.dir / "eval" / f"{ckpt.stem}_{scoring.samples}{scoring.suffix}.json"
            if not result.is_file():
                with open(self.dir / "eval.log", "a") as f:
                    subprocess.run([sys.executable, "-m", "scalelong.eval.cli", f"ckpt={ckpt}", f"out={result}",
                                    *scoring.overrides()], cwd=self.root, check=True, stdout=f,
                                   stderr=subprocess.STDOUT)
            res = json.loads(result.read_text())
            fid, kid = (next(k for k in res["metrics"] if k.startswith(m)) for m in ("fid", "kid"))
            written = ckpt.stat().st_mtime
            rows.append({"step": checkpoint_step(ckpt), "checkpoint": ckpt.stem,
                         "wall_s": written - record["launched"],
                         "resumed": any(t < written for t in record.get("resumed", [])), "metric": fid,
                         "scoring": sampling_label(res["n_samples"], res["sampler"], res["steps"],
                                                   res["guidance_scale"]),
                         "fid": res["metrics"][fid], "kid": res["metrics"][kid], "kid_std": res["kid_std"]})
        return sorted(rows, key=lambda r: r["step"])

    def write_result(self, out: Path, scoring: Scoring, rows: list[dict], command: str) -> Path:
        """``<out>/<name><suffix>.json`` and the sample grid of the best checkpoint by FID beside it."""
        name = self.name + scoring.suffix
        path = Path(out) / f"{name}.json"
        path.write_text(json.dumps({"experiment": self.experiment, "overrides": list(self.overrides),
                                    "command": command, "rows": rows}, indent=2))
        if rows:
            best = min(rows, key=lambda r: r["fid"])
            grid = self.dir / "eval" / best["checkpoint"] / f"samples-{best['scoring'].replace('/', '_')}.png"
            if grid.is_file():
                shutil.copyfile(grid, Path(out) / f"samples_{name}_step{best['step']}.png")
        return path


def write_report(out: Path) -> Path:
    """``<out>/README.md`` (a row per scored checkpoint) and ``<out>/fid_curves.png`` from its JSONs."""
    out = Path(out).resolve()
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    lines = [f"# FID against training: {out.name}", "",
             "Domain FID of the EMA weights (docs/metrics.md \"FID\"); wall time from launch to the checkpoint's "
             "write, startup included, on a 2-core machine shared with other jobs, so it varies with their load. "
             "`samples_<experiment>_step<n>.png`: the first 256 scored samples of each experiment's best checkpoint. "
             f"Rebuilt from the JSONs here by `python scripts/fid_curves.py --report-only --out {shown}`.", "",
             "| experiment | scored | step | wall (s) | FID | KID |", "|---|---|---|---|---|---|"]
    fig = Figure(figsize=(11, 5), layout="constrained")
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    for res in results:
        label = " ".join([res["experiment"], *res["overrides"]])
        rows = res["rows"]
        for r in rows:
            wall = f"{r['wall_s']:.0f}" + (" (resumed, includes downtime)" if r["resumed"] else "")
            lines.append(f"| {label} | {r['scoring']} | {r['step']} | {wall} | {r['fid']:.1f} | "
                         f"{r['kid']:.2f} ± {r['kid_std']:.2f} |")
        by_step.plot([r["step"] for r in rows], [r["fid"] for r in rows], marker="o", label=label)
        by_time.plot([r["wall_s"] / 60 for r in rows], [r["fid"] for r in rows], marker="o", label=label)
    for ax, xlabel in ((by_step, "training step"), (by_time, "wall time from launch (min)")):
        ax.set_xlabel(xlabel)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    by_step.set_ylabel("domain FID")
    fig.legend(*by_step.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8)
    fig.savefig(out / "fid_curves.png", dpi=110)
    lines += ["", "Each experiment is `conf/experiment/<experiment>.yaml`; the command that scored it:", ""]
    lines += [f"- `{' '.join([res['experiment'], *res['overrides']])}`: `{res['command']}`" for res in results]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return out / "README.md"
