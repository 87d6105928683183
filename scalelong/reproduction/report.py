"""The reproduction report: read a study's runs, write the Markdown page with a verdict per claim, its figures, sample
grids, the measured budget and the raw per-run summaries (``runs.csv``, ``fid_curves.csv``, ``verdicts.json``).

What the claims are and how a verdict is reached is :mod:`scalelong.reproduction.claims`; the written prose (setup,
notes) is in ``docs/results/prose/``, named by the study (``conf/reproduction/<name>.yaml``).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from scalelong.errors import ScaleLongError
from scalelong.paper_scale import paper_scale_markdown
from scalelong.plots.reproduction import cell_label
from scalelong.reproduction.claims import METHODS, Section, sections, speedup_figure
from scalelong.reproduction.results import (
    RunResult,
    Sweep,
    load_results,
    read_results_csv,
    write_fid_csv,
    write_runs_csv,
)
from scalelong.reproduction.study import REPO_ROOT, Study, load_study, studies
from scalelong.runs.status import run_config
from scalelong.sampling import grid
from scalelong.stats import markdown_table, stat
from scalelong.sweeps import aggregate, find_runs, incomplete_jobs, to_markdown

log = logging.getLogger(__name__)

FLAT_CHANGE = 0.10  # a baseline's FID curve has flattened when its last two measurements are within 10%
BUDGET_FILE = "budget.json"  # wall and CPU minutes per sweep, written by scripts/cpu_reproduction.py
VERDICTS_FILE = "verdicts.json"


def baseline_flattening(sweep: Sweep) -> list[str]:
    """Whether the none baseline has stopped improving: per main cell, its FID at the last two measurements (mean
    ± std over seeds) and each seed's relative change between them."""
    rows = []
    for cell in sweep.cells:
        runs = [r for r in sweep.runs("none", *cell) if r.status == "completed" and r.fid is not None
                and len(r.fid.values) > 1]
        if not runs:
            continue
        changes = [abs(r.fid.values[-1] / r.fid.values[-2] - 1) for r in runs]
        rows.append([cell_label(cell), f"{int(runs[0].fid.steps[-2])} → {int(runs[0].fid.steps[-1])}",
                     stat(r.fid.values[-2] for r in runs), stat(r.fid.values[-1] for r in runs), stat(changes),
                     "yes" if max(changes) <= FLAT_CHANGE else "no"])
    if not rows:
        return []
    return [f"The none baseline's FID at its last two measurements (flattened: every seed within "
            f"{FLAT_CHANGE:.0%}):", "", markdown_table(["cell", "steps", "FID before", "FID last",
                                                        "relative change per seed (absolute)", "flattened"], rows), ""]


def real_tile(run_dir: Path, data_dir: Path = REPO_ROOT / "data") -> Image.Image | None:
    """As many training images of a run's dataset as its sample grids hold, read under ``data_dir`` (never the root
    the run stored), laid out like those grids; None, with a log line, when the data is not there."""
    config = run_config(run_dir)
    if config is None:
        return None
    count = OmegaConf.select(config, "callbacks.samples.num_samples", default=64)
    OmegaConf.update(config, "data.root", str(data_dir))
    try:
        datamodule = instantiate(config.data)
        datamodule.setup("fit")
    except ScaleLongError as err:
        log.info("no real-image tile in the sample grids: %s", err)
        return None
    images = torch.stack([datamodule.train_set[i][0] for i in range(min(count, len(datamodule.train_set)))])
    return Image.fromarray(grid(images)[0].mul(255).round().byte().numpy(), "L")


def tile_row(tiles: Sequence[Image.Image], scale: int = 4, gap: int = 4) -> Image.Image:
    """Grey-scale grids side by side on white, ``gap`` pixels apart, upscaled ``scale``× (8×8 images are too small
    to judge otherwise)."""
    canvas = Image.new("L", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), max(t.height for t in tiles)), 255)
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + gap
    return canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)


def last_grids(runs: Sequence[tuple[str, Path | None]], real: str = "real training images"
               ) -> tuple[list[Image.Image], list[str]]:
    """(tiles, their labels): the last sample grid of each ``(label, run directory)`` that has one, after a grid of
    real training images of the first such run's data."""
    tiles, names = [], []
    for label, run_dir in runs:
        grids = sorted((run_dir / "samples").glob("*.png")) if run_dir is not None else []
        if not grids:
            continue
        if not tiles and (real_images := real_tile(run_dir)) is not None:
            tiles.append(real_images)
            names.append(real)
        tiles.append(Image.open(grids[-1]).convert("L"))
        names.append(label)
    return tiles, names


def sample_grids(sweep: Sweep, out: Path, scale: int = 4) -> list[tuple[str, str]]:
    """Per cell (depth, batch), the last sample grid of seed 0 of each method, side by side after a grid of real
    training images and upscaled (8×8 images are too small to judge otherwise): ``[(caption, file name)]``."""
    written = []
    for n, b in sorted(sweep.cells):
        first = {m: next((r.path for r in sorted(sweep.runs(m, n, b), key=lambda r: r.seed)
                          if r.status == "completed"), None) for m in METHODS}
        tiles, names = last_grids(list(first.items()))
        if not tiles:
            continue
        name = f"samples_N{n}_b{b}.png"
        tile_row(tiles, scale).save(out / name)
        written.append((f"N={n} LSCs, batch {b}: {', '.join(names)}, left to right", name))
    return written


def budget(results: Sequence[RunResult], root: Path) -> str:
    """Measured wall minutes per run by cell (from train.log), and the CPU minutes of each sweep when the
    driver recorded them (``BUDGET_FILE``): wall time depends on what else shares the cores, CPU time does not."""
    groups: dict[tuple[int, int], list[float]] = defaultdict(list)
    for r in results:
        if r.status == "completed" and math.isfinite(r.minutes):
            groups[r.setting.cell].append(r.minutes)
    rows = [[f"N={n}, b={b}", len(v), f"{statistics.fmean(v):.2f}", f"{sum(v):.1f}"]
            for (n, b), v in sorted(groups.items())]
    total = sum(sum(v) for v in groups.values())
    text = (markdown_table(["cell", "runs", "wall minutes per run (mean)", "run-minutes"], rows)
            + f"\n\nSum over runs: {total:.0f} run-minutes of wall time (each run one thread); wall time depends on "
            "what else shares the cores.")
    records = json.loads((root / BUDGET_FILE).read_text()) if (root / BUDGET_FILE).is_file() else []
    if records:
        text += ("\n\nPer sweep, as `scripts/cpu_reproduction.py` measured it (CPU = its processes' user + system, "
                 "which does not depend on other jobs):\n\n")
        text += markdown_table(["sweep", "parallel jobs", "wall minutes", "CPU minutes", "exit"],
                               [[r["sweep"], r["jobs"], f"{r['wall_minutes']:.1f}",
                                 "–" if r.get("cpu_minutes") is None else f"{r['cpu_minutes']:.1f}",  # stopped by hand
                                 r["exit"]] for r in records])
    return text


def verdicts_of(secs: Sequence[Section]) -> dict[str, str]:
    """``{claim title: verdict}`` in report order."""
    return {s.title: s.verdict[0] for s in secs}


def other_verdicts(study: Study) -> dict[str, dict[str, str]]:
    """The verdicts of every other study, recomputed from its committed ``runs.csv`` and ``fid_curves.csv``."""
    found = {}
    for name in studies():
        other = load_study(name)
        assets = REPO_ROOT / other.report.parent / other.report.stem
        if name != study.name and (assets / "runs.csv").is_file() and (assets / "fid_curves.csv").is_file():
            runs = read_results_csv(assets / "runs.csv", assets / "fid_curves.csv")
            found[other.backbone] = verdicts_of(sections(Sweep(runs, other)))
    return found


def side_by_side(study: Study, secs: Sequence[Section]) -> list[str]:
    others = other_verdicts(study)
    if not others:
        return []
    columns = {study.backbone: verdicts_of(secs), **others}
    rows = [[title, *(columns[b].get(title, "–") for b in columns)] for title in verdicts_of(secs)]
    return ["## Both backbones", "", "The same claims, decision rule and seeds on each backbone (the other "
            "columns recomputed from their committed `runs.csv` and `fid_curves.csv`):", "",
            markdown_table(["claim", *columns], rows), ""]


def claim_lines(s: Section, assets: str) -> list[str]:
    lines = [f"## {s.title}", "", f"*Paper:* {s.claim}", "", s.body, ""]
    if s.figure is not None:
        lines += [f"![{s.key}]({assets}/{s.key}.png)", ""]
    if s.note:
        lines += [s.note, ""]
    if s.key == "fid_curves":
        lines += [f"![speedup]({assets}/speedup.png)", ""]
    v, why = s.verdict
    lines += [f"**Verdict: {v}.** {why}.", ""]
    lines += [f"- part *{part}*: {pv} ({pwhy})" for part, (pv, pwhy) in s.part_verdicts().items()]
    lines += ["", "Comparisons:", ""] if s.part_verdicts() else []
    return lines + [f"- {c}" for c in s.checks] + [""]


def missing_inputs(results: Sequence[RunResult], sweep: Sweep, root: Path) -> list[str]:
    """What the runs under ``root`` lack for the claims (no run at the study's recipe, runs without an FID curve),
    one line each, naming the fix: a sweep that is not a reproduction sweep gets the report of what there is."""
    study = sweep.study
    completed = [r for r in results if r.status == "completed"]
    lines = []
    if results and not sweep.cells:
        lines.append(f"none of the {len(results)} runs under {root} is at the {study.backbone} study's recipe "
                     f"(optim.lr={study.lr:g}, cs_kappa={study.kappa:g}): no claim can compare them; its sweeps: "
                     f"{study.command}")
    ran = [name for name in study.sweeps if (root / name).is_dir()]
    if ran and (not_run := [name for name in study.sweeps if name not in ran]):
        lines.append(f"the study's sweeps {', '.join(not_run)} were not run under {root}: the claims that need their "
                     f"cells are inconclusive, the others compare what was run (`{study.command} --sweeps "
                     f"{' '.join(not_run)}` runs them)")
    no_fid = [r for r in completed if r.fid is None]
    if no_fid:
        lines.append(f"{len(no_fid)} of the {len(completed)} completed runs under {root} logged no FID curve "
                     "(callbacks.fid, e.g. callbacks=repro): the claims on FID are inconclusive without them")
    return lines


def write_report(root: str | Path, out: str | Path, study: Study) -> Path:
    """Read every run under ``root`` and write the report ``out`` (Markdown), its figures and raw summaries
    (``runs.csv``, ``fid_curves.csv``, ``verdicts.json``) into ``out``'s directory under ``<stem>/``."""
    root, out = Path(root), Path(out)
    assets = out.parent / out.stem
    assets.mkdir(parents=True, exist_ok=True)
    results = load_results(root)
    sweep = Sweep(results, study)
    write_runs_csv(results, assets / "runs.csv")
    write_fid_csv(results, assets / "fid_curves.csv")
    secs = sections(sweep)
    missing = missing_inputs(results, sweep, root)
    for line in missing:
        log.warning("%s", line)
    (assets / VERDICTS_FILE).write_text(json.dumps({s.title: list(s.verdict) for s in secs}, indent=1) + "\n")
    figures = {s.key: s.figure for s in secs} | {"speedup": speedup_figure(sweep)}
    for name, fig in figures.items():
        if fig is not None:
            fig.savefig(assets / f"{name}.png", dpi=110)
    rel = assets.name
    statuses = Counter(r.status for r in results)
    lines = [f"# {study.title}", "",
             f"Generated by `scalelong-report` (`{study.command}` reruns the sweeps and writes this page). Every "
             "number is mean ± std over seeds with n stated; the decision rule is in "
             "`scalelong/reproduction/claims.py`: a comparison holds when the ±1 std intervals over seeds separate.",
             "", f"Runs read: {len(results)} ({', '.join(f'{v} {k}' for k, v in sorted(statuses.items()))}) "
             f"under `{root}`.", "", *(f"Missing: {line}." for line in missing), *([""] if missing else []),
             "## Verdicts", "",
             markdown_table(["claim", "verdict", "why", "parts"],
                            [[s.title, f"**{s.verdict[0]}**", s.verdict[1],
                              "; ".join(f"{p}: {v}" for p, (v, _) in s.part_verdicts().items()) or "–"]
                             for s in secs]), ""]
    lines += side_by_side(study, secs)
    lines += ["## Where the claims do not hold at this scale", ""]
    lines += [f"- {s.title}: {s.verdict[0]} — {s.verdict[1]}." for s in secs if s.verdict[0] != "reproduced"] or [
        "- every claim holds."]
    lines.append("")
    for title, path in study.notes:
        lines += [f"## {title}", "", study.prose(path), ""]
    lines += ["## Setup", "", study.prose(study.setup), ""]
    for s in secs:
        lines += claim_lines(s, rel)
    grids = sample_grids(sweep, assets)
    if grids:
        lines += ["## Samples", "", "Last sample grids (seed 0, EMA weights, DPM-Solver++ 25 steps), upscaled 4×:", ""]
        for caption, name in grids:
            lines += [f"{caption}:", "", f"![samples]({rel}/{name})", ""]
        lines += baseline_flattening(sweep)
    lines += ["## Measured budget", "", budget(results, root), ""]
    problems = incomplete_jobs([root])
    if problems:
        lines += ["## Runs that did not complete", "", *(f"- {p}" for p in problems), ""]
    lines += ["## Paper-scale counterpart (GPU cluster)", "", paper_scale_markdown(), ""]
    lines += ["## Raw per-run summaries", "", f"- `{rel}/runs.csv`: one row per run (setting, seed, outcome, final "
              "and best FID, LS fit, minutes, oscillation figures, last κ readout).", f"- `{rel}/fid_curves.csv`: "
              f"every FID measurement of every run.", f"- `{rel}/{VERDICTS_FILE}`: the verdict and reason per claim.",
              "", "`scalelong-aggregate` over each sweep (final values of summary.json, mean ± std over seeds):", ""]
    for sweep_dir in sorted({p.parent for p in root.rglob("multirun.yaml")}):
        runs = find_runs([sweep_dir])
        if runs:
            rows = [{k: v for k, v in row.items() if k in ("group", "n", "val/loss") or k.startswith("fid_")}
                    for row in aggregate(runs)]
            lines += [f"### {sweep_dir.name}", "", to_markdown(rows), ""]
    out.write_text("\n".join(lines) + "\n")
    return out
