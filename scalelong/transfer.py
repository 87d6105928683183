"""``scalelong-finetune-report``: the report of a transfer study (docs/results/finetune.md).

    scalelong-finetune-report docs/results/finetune/runs       # writes docs/results/finetune.md
    scalelong-finetune-report A B --base A/base --out x.md     # runs of several directories, one base

A transfer study is a base run (``ROOT/base``, trained from scratch) and sweeps of runs below ``ROOT`` that adapt it
to new data (``finetune=full|difffit|bitfit|lsc``, any scaler) or train on that data from scratch. Runs are grouped
into *arms* (the fine-tune method, with the scaler when it differs from the base's) of seeds. The report gives per
arm the trainable parameters, the checkpoint size, FID against steps and against wall time, the final FID and the
time per step, sample grids, and a verdict on each of DiffFit's claims (Xie et al. 2023) by the decision rule of the
reproduction reports (:func:`scalelong.reproduction.claims.verdict`: a comparison holds when the ±1 std intervals
over seeds separate).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from scalelong.errors import ScaleLongError
from scalelong.eval.speedup import Curve, speedup
from scalelong.plots.metrics import load_run
from scalelong.reproduction.claims import Check, verdict
from scalelong.reproduction.report import last_grids, tile_row
from scalelong.reproduction.results import attempt_count, fid_curve, log_matches, scaler_name, wall_minutes
from scalelong.runs.status import find_run_dirs, read_status, run_config
from scalelong.stats import Stat, markdown_table, stat

log = logging.getLogger(__name__)

ARMS = ("scratch", "full", "difffit", "bitfit", "lsc", "difffit + ls")  # the report's order; others follow
CLOSE_TO_FULL = 1.10  # "close to a full fine-tune": final FID at most 10% above it
FEW_PARAMS = 0.02  # "far fewer parameters": under 2% of the model trainable (DiffFit: 0.12% of DiT-XL/2)
SMALL_CHECKPOINT = 0.10  # and a checkpoint at most a tenth of a full one
# the FID callback's log line: "... fid_<data>-256/dpm_solver-10 = 14.1663 (1.5 s)" (value as logged, seconds taken)
FID_LINE = r"\]\[scalelong\.callbacks\.fid\]\[INFO\] fid_\S+ = (\S+) \(([\d.]+) s\)"
PROSE = Path(__file__).resolve().parent.parent / "docs" / "results" / "prose"


@dataclass
class ArmRun:
    """One run of the study, read back from its directory."""

    path: Path
    arm: str
    seed: int
    status: str
    fid: Curve | None  # FID of the EMA weights against steps
    fid_minutes: np.ndarray  # wall minutes of the run at each FID measurement (NaN: not found in train.log)
    minutes: float
    fid_seconds: float  # of those minutes, the seconds the FID measurements took
    attempts: int  # 1, or more when the run was interrupted and resumed
    steps: int
    trainable: float
    total: float
    checkpoint_bytes: float

    @property
    def final_fid(self) -> float:
        return float(self.fid.values[-1]) if self.status == "completed" and self.fid is not None else math.nan

    @property
    def seconds_per_step(self) -> float:
        """Wall seconds per training step, the FID measurements left out (the same for every arm)."""
        return (60 * self.minutes - self.fid_seconds) / self.steps if self.steps else math.nan

    @property
    def fid_against_time(self) -> Curve | None:
        """FID against wall minutes; None when a measurement was not found in train.log."""
        if self.fid is None or not np.isfinite(self.fid_minutes).all():
            return None
        return Curve(self.fid_minutes, self.fid.values)


def arm_of(config: DictConfig, base_scaler: str) -> str:
    """``scratch`` (no fine-tune), or the fine-tune method, with `` + <scaler>`` when a method other than ``lsc``
    (whose point is the scaler) switched the base's scaler."""
    method = OmegaConf.select(config, "finetune.method", default=None)
    if not method:
        return "scratch"
    scaler = scaler_name(config)
    return method if method == "lsc" or scaler == base_scaler else f"{method} + {scaler}"


def load_arm_run(run_dir: Path, base_scaler: str) -> ArmRun:
    config = run_config(run_dir)
    status = (read_status(run_dir) or {"status": "running"})["status"]
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    fid = fid_curve(load_run(run_dir) if (run_dir / "csv" / "metrics.csv").is_file() else None)
    logged = log_matches(run_dir, FID_LINE)
    at = {m.group(1): minutes for minutes, m in logged}  # a step measured again after a resume: its last line
    minutes = np.array([at.get(f"{v:.4f}", math.nan) for v in fid.values]) if fid is not None else np.array([])
    if not np.isfinite(minutes).all():
        log.warning("%s: %d FID measurements are not in its train.log; it is left out of FID against wall time",
                    run_dir, int((~np.isfinite(minutes)).sum()))
    return ArmRun(run_dir, arm_of(config, base_scaler), int(config.seed), status, fid, minutes, wall_minutes(run_dir),
                  sum(float(m.group(2)) for _, m in logged), attempt_count(run_dir), int(summary.get("step", 0)),
                  summary.get("trainable_params", math.nan), summary.get("total_params", math.nan),
                  summary.get("checkpoint_bytes", math.nan))


class Study:
    """The base run (``base``, else ``<first root>/base``) and the arms of the runs under ``roots``."""

    def __init__(self, *roots: Path, base: Path | None = None) -> None:
        self.roots = roots
        self.base_dir = base_dir = Path(base) if base is not None else roots[0] / "base"
        if run_config(base_dir) is None:
            raise ScaleLongError(f"{base_dir} holds no run; a transfer study keeps its base run there "
                                 "(sh scripts/finetune_study.sh trains it)")
        self.base = load_arm_run(base_dir, "")
        self.base_scaler = scaler_name(run_config(base_dir))
        dirs = sorted({d for root in roots for d in find_run_dirs(root)[0]
                       if base_dir.resolve() not in (d.resolve(), *d.resolve().parents) and run_config(d) is not None})
        self.runs = [load_arm_run(d, self.base_scaler) for d in dirs]
        seen: dict[tuple[str, int], Path] = {}
        for r in self.runs:
            if (other := seen.setdefault((r.arm, r.seed), r.path)) != r.path:
                raise ScaleLongError(f"two runs of arm '{r.arm}' with seed {r.seed}: {other} and {r.path}; a study "
                                     "holds one run per arm and seed (report the other protocol on its own)")
        found = {r.arm for r in self.runs}
        self.arms = [a for a in ARMS if a in found] + sorted(found - set(ARMS))

    def of(self, arm: str, completed: bool = True) -> list[ArmRun]:
        return sorted((r for r in self.runs if r.arm == arm and (r.status == "completed" or not completed)),
                      key=lambda r: r.seed)

    def stat(self, arm: str, value: Callable[[ArmRun], float]) -> Stat:
        return stat(value(r) for r in self.of(arm))

    def paired(self, arm: str, reference: str, value: Callable[[ArmRun, ArmRun], float]) -> Stat:
        """``value(run, reference run)`` over the seeds both arms completed."""
        refs = {r.seed: r for r in self.of(reference)}
        return stat(value(r, refs[r.seed]) for r in self.of(arm) if r.seed in refs)


def time_speedup(run: ArmRun, reference: ArmRun) -> float:
    """Wall minutes the reference took to reach the FID both runs reach (the worse of their final FIDs) / the minutes
    the run took; > 1: the run got there first. NaN without timed curves."""
    mine, theirs = run.fid_against_time, reference.fid_against_time
    if mine is None or theirs is None:
        return math.nan
    return speedup(theirs, mine, max(run.final_fid, reference.final_fid)) or math.nan


def checks(study: Study) -> dict[str, list[Check]]:
    """DiffFit's three claims, and the question the study adds, as comparisons over seeds."""
    final = ArmRun.final_fid.fget
    return {
        "DiffFit's FID is close to a full fine-tune's": [
            Check(f"final FID of difffit / full (paired by seed) < {CLOSE_TO_FULL:g}",
                  study.paired("difffit", "full", lambda r, ref: r.final_fid / ref.final_fid), CLOSE_TO_FULL, "<"),
            Check("final FID: difffit < scratch (the transfer helps)", study.stat("difffit", final),
                  study.stat("scratch", final), "<"),
        ],
        "DiffFit trains faster than a full fine-tune": [
            Check("training seconds per step (FID measurements left out): difffit < full",
                  study.stat("difffit", ArmRun.seconds_per_step.fget), study.stat("full", ArmRun.seconds_per_step.fget),
                  "<", "per step"),
            Check("wall-time speed-up to the FID both reach (the worse final FID of the pair) > 1",
                  study.paired("difffit", "full", time_speedup), 1.0, ">", "to a FID"),
        ],
        "DiffFit trains far fewer parameters, in a far smaller checkpoint": [
            Check(f"difffit: trainable / total < {FEW_PARAMS:.0%}",
                  study.stat("difffit", lambda r: r.trainable / r.total), FEW_PARAMS, "<", "trainable parameters"),
            Check(f"difffit: checkpoint / base's < {SMALL_CHECKPOINT:.0%}",
                  study.stat("difffit", lambda r: r.checkpoint_bytes / study.base.checkpoint_bytes), SMALL_CHECKPOINT,
                  "<", "checkpoint size"),
        ],
        "Letting the long-skip scalers adapt helps (this study's question)": [
            Check("final FID: lsc < bitfit (fewer parameters, on the skips)", study.stat("lsc", final),
                  study.stat("bitfit", final), "<", "lsc"),
            Check("final FID: difffit + ls < difffit", study.stat("difffit + ls", final), study.stat("difffit", final),
                  "<", "difffit + ls"),
        ],
    }


def _mean_band(ax, x: np.ndarray, values: np.ndarray, label: str, color: str) -> None:
    mean = values.mean(0)
    std = values.std(0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
    ax.plot(x, mean, label=label, color=color)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)


def fid_figure(study: Study) -> Figure | None:
    """FID against steps and against wall minutes per arm, mean ± 1 std over seeds (wall time: the seeds' mean at
    each measurement)."""
    fig = Figure(figsize=(10.5, 3.6), layout="constrained")
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    drawn = False
    for k, arm in enumerate(study.arms):
        runs = [r for r in study.of(arm) if r.fid is not None]
        if not runs:
            continue
        length = min(len(r.fid.steps) for r in runs)
        values = np.stack([r.fid.values[:length] for r in runs])
        label = f"{arm} (n={len(runs)})"
        _mean_band(by_step, runs[0].fid.steps[:length], values, label, f"C{k}")
        timed = [r.fid_against_time for r in runs]
        if all(t is not None for t in timed):
            _mean_band(by_time, np.stack([t.steps[:length] for t in timed]).mean(0), values, label, f"C{k}")
        drawn = True
    if not drawn:
        return None
    for ax, xlabel in ((by_step, "training step"), (by_time, "wall minutes (one core per run)")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
    by_step.set_ylabel("domain FID (256 samples)")
    by_step.legend(fontsize=7)
    return fig


def sample_row(study: Study, out: Path, name: str) -> str | None:
    """Real images of the new data, then the last grid of seed 0 of every arm; None without grids."""
    tiles, names = last_grids([(arm, next((r.path for r in study.of(arm)), None)) for arm in study.arms],
                              "real images")
    if not tiles:
        return None
    tile_row(tiles).save(out / name)
    return ", ".join(names)


def base_row(study: Study, out: Path, name: str) -> bool:
    tiles, _ = last_grids([("base", study.base.path)])
    if not tiles:
        return False
    tile_row(tiles).save(out / name)
    return True


def _fmt(value: float, spec: str) -> str:
    return "–" if not math.isfinite(value) else format(value, spec)


def arm_table(study: Study) -> str:
    rows = []
    for arm in study.arms:
        runs = study.of(arm)
        first = runs[0] if runs else None
        trainable = first.trainable if first else math.nan
        total = first.total if first else math.nan
        size = first.checkpoint_bytes if first else math.nan
        rows.append([arm, f"{len(runs)} of {len(study.of(arm, completed=False))}", _fmt(trainable, ",.0f"),
                     _fmt(100 * trainable / total, ".2f") + "%", _fmt(size / 1e3, ",.0f") + " kB",
                     _fmt(100 * size / study.base.checkpoint_bytes, ".1f") + "%",
                     study.stat(arm, ArmRun.final_fid.fget),
                     study.stat(arm, lambda r: float(r.fid.values.min()) if r.fid is not None else math.nan),
                     study.stat(arm, ArmRun.seconds_per_step.fget), study.stat(arm, lambda r: r.minutes)])
    return markdown_table(["arm", "seeds completed", "trainable", "of total", "checkpoint", "of base's",
                           "final FID", "best FID", "s / step", "wall minutes"], rows)


def write_csvs(study: Study, out: Path) -> None:
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seed", "status", "final_fid", "best_fid", "steps", "wall_minutes", "seconds_per_step",
                    "trainable_params", "total_params", "checkpoint_bytes", "path"])
        for r in [study.base, *study.runs]:
            w.writerow(["base" if r is study.base else r.arm, r.seed, r.status, r.final_fid,
                        float(r.fid.values.min()) if r.fid is not None else math.nan, r.steps, r.minutes,
                        r.seconds_per_step, r.trainable, r.total, r.checkpoint_bytes,
                        os.path.relpath(r.path, out.parent)])
    with open(out / "fid_curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seed", "step", "wall_minutes", "fid"])
        for r in [study.base, *study.runs]:
            if r.fid is not None:
                timed = r.fid_against_time
                for i, (step, value) in enumerate(zip(r.fid.steps, r.fid.values)):
                    w.writerow(["base" if r is study.base else r.arm, r.seed, int(step),
                                timed.steps[i] if timed is not None else math.nan, value])


def prose(name: str) -> list[str]:
    path = PROSE / name
    return [path.read_text().strip(), ""] if path.is_file() else []


def write_report(roots: Sequence[str | Path], out: str | Path, base: str | Path | None = None, note: str = "") -> Path:
    """Read the study under ``roots`` (its base: ``base``, else ``<first root>/base``) and write the report ``out``
    with its figures and raw CSVs in ``out``'s
    directory under ``<stem>/``; ``note``, when given, is a paragraph under the title."""
    out = Path(out)
    study = Study(*map(Path, roots), base=None if base is None else Path(base))
    assets = out.parent / out.stem
    assets.mkdir(parents=True, exist_ok=True)
    rel = assets.name
    write_csvs(study, assets)
    claims = checks(study)
    verdicts = {title: verdict(cs) for title, cs in claims.items()}
    (assets / "verdicts.json").write_text(json.dumps({t: list(v) for t, v in verdicts.items()}, indent=1) + "\n")
    base = study.base
    lines = ["# Fine-tuning with few parameters: DiffFit, BitFit and the LSC scalers (CPU scale)", "",
             "Generated by `scalelong-finetune-report` (`sh scripts/finetune_study.sh` reruns the study and writes "
             "this page). How to fine-tune and what each method trains: [docs/finetune.md](../finetune.md). Every "
             "number over seeds is mean ± std with n stated; a comparison holds when the ±1 std intervals over seeds "
             "separate (`scalelong/reproduction/claims.py`).", "", *([note, ""] if note else []),
             *prose("finetune_setup.md"), "## Verdicts", "",
             markdown_table(["claim", "verdict", "why"], [[t, f"**{v[0]}**", v[1]] for t, v in verdicts.items()]),
             ""]
    for title, cs in claims.items():
        lines += [f"### {title}", "", *(f"- {c}" for c in cs), ""]
    lines += ["## Per arm", "", "Trainable parameters, checkpoint size (the fine-tune run's `last.ckpt`, against the "
              f"base's {_fmt(base.checkpoint_bytes / 1e3, ',.0f')} kB, a full training checkpoint) and time per step "
              "from each run's `summary.json` and `train.log`; FID of the EMA weights at the last and the best "
              "measurement:", "", arm_table(study), ""]
    timed = [r.minutes for r in [base, *study.runs] if math.isfinite(r.minutes)]
    lines += [f"Budget: {len(timed)} runs (the base included), {sum(timed):.0f} run-minutes of wall time, each run on "
              "one core.", ""]
    resumed = [r for r in [base, *study.runs] if r.attempts > 1]
    if resumed:
        lines += ["Interrupted and resumed (their wall time sums the attempts' logged spans: the steps redone after "
                  "the resume count, the time between an attempt's last log line and its interruption does not): "
                  + ", ".join(f"`{r.path.name}` ({r.attempts} attempts)" for r in resumed) + ".", ""]
    lines += prose("finetune_reading.md")
    figure = fid_figure(study)
    if figure is not None:
        figure.savefig(assets / "fid.png", dpi=110)
        lines += ["![FID against steps and wall time](" + rel + "/fid.png)", "",
                  "FID against training steps (left) and wall minutes (right), mean ± 1 std over seeds.", ""]
    if (names := sample_row(study, assets, "samples.png")) is not None:
        lines += ["## Samples", "", f"Last grids of seed 0 (EMA weights), upscaled 4×: {names}, left to right.", "",
                  f"![samples]({rel}/samples.png)", ""]
    lines += ["## The base", "", f"`{study.base_dir}`: {base.status}, {base.steps} steps, "
              f"{_fmt(base.minutes, '.1f')} wall minutes, final FID "
              f"{_fmt(base.final_fid, '.2f')} on its own classes"
              + (f" (FID at the last two measurements {base.fid.values[-2]:.2f} and {base.fid.values[-1]:.2f})"
                 if base.fid is not None and len(base.fid.values) > 1 else "") + ".", ""]
    if base_row(study, assets, "base_samples.png"):
        lines += ["Real images of its classes, then its last sample grid:", "", f"![base]({rel}/base_samples.png)",
                  ""]
    lines += [*prose("finetune_presets.md"),
              "## Raw data", "", f"- `{rel}/runs.csv`: one row per run (arm, seed, outcome, final and best FID, "
              "steps, wall minutes, trainable/total parameters, checkpoint bytes).",
              f"- `{rel}/fid_curves.csv`: every FID measurement with its step and wall minute.",
              f"- `{rel}/verdicts.json`: the verdict and reason per claim.", ""]
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scalelong-finetune-report", description=__doc__.splitlines()[0])
    parser.add_argument("roots", type=Path, nargs="+", help="the study's runs, e.g. docs/results/finetune/runs")
    parser.add_argument("--base", type=Path, help="the base run (default: the first directory's base/)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/finetune.md"))
    parser.add_argument("--note", type=Path, help="a Markdown file whose text goes under the title (e.g. which "
                        "protocol the runs follow)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="scalelong-finetune-report: %(message)s")
    if args.note and not args.note.is_file():
        parser.exit(1, f"scalelong-finetune-report: --note {args.note} is not a file; pass a Markdown file\n")
    if missing := next((root for root in args.roots if not root.is_dir()), None):
        parser.exit(1, f"scalelong-finetune-report: {missing} is not a directory; pass the directory of a "
                       "transfer study's runs (sh scripts/finetune_study.sh writes docs/results/finetune/runs)\n")
    try:
        note = args.note.read_text().strip() if args.note else ""
        print(write_report(args.roots, args.out, args.base, note))
    except ScaleLongError as err:
        parser.exit(1, f"scalelong-finetune-report: {err}\n")


if __name__ == "__main__":
    main()
