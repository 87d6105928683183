"""The CPU reproductions: their sweeps compose, the decision rule, the committed conv UNet verdicts recomputed
from its raw CSVs, and a miniature of the whole pipeline — ``scripts/cpu_reproduction.py --study uvit`` trains a
2-setting × 2-seed sweep (conftest ``miniature``) and writes the report with every section (the notebooks run on it
in tests/test_notebooks.py)."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scalelong.config import compose
from scalelong.eval.speedup import Curve
from scalelong.kappa_range import num_skips_of
from scalelong.reproduction import load_study
from scalelong.reproduction.claims import Check, bracket, frontier, sections, trains_up_to, verdict
from scalelong.reproduction.results import RunResult, Setting, Sweep, read_results_csv, wall_minutes
from scalelong.stats import Stat, compare, stat
from scalelong.sweeps import sweep_size

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ["## Verdicts", "## Setup", "## Claim 1", "## Claim 2", "## Claim 3", "## Claim 4", "## Claim 5",
            "## Claim 6", "## Stability frontier", "## Samples", "## Measured budget", "## Raw per-run summaries"]
CONV = ROOT / "docs" / "results" / "cpu_reproduction"
SWEEP_SIZES = {  # the run counts stated in conf/experiment/<recipe>_<sweep>.yaml
    "conv_unet": {"main": 60, "kappa": 6, "lr": 18},
    "uvit": {"frontier": 90, "frontier_edge": 9, "speed": 9, "shallow": 9, "kappa": 12, "ablations": 24},
}

SEEDS_INNERMOST = {("uvit", "kappa"), ("uvit", "ablations")}


def sweep_params(experiment: str, tmp_path: Path) -> tuple[dict, int]:
    cfg = compose([f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    multirun = tmp_path / "multirun.yaml"
    multirun.write_text(json.dumps({"hydra": {"overrides": {"task": [f"{k}={v}" for k, v in params.items()]}}}))
    return params, sweep_size(multirun)


@pytest.mark.parametrize(("study", "sweep"), [(s, w) for s, sizes in SWEEP_SIZES.items() for w in sizes])
def test_every_repro_sweep_composes_with_its_documented_size(study: str, sweep: str, tmp_path: Path) -> None:
    assert list(load_study(study).sweeps) == list(SWEEP_SIZES[study])
    params, size = sweep_params(load_study(study).sweep_experiment(sweep), tmp_path)
    assert size == SWEEP_SIZES[study][sweep]
    assert params.seed == "0,1,2"  # every cell has 3 seeds
    # Seeds outermost (an interrupted sweep holds every setting for its finished seeds), except in the U-ViT sweeps
    # the budget may cut, where seeds vary fastest: an interrupted sweep holds whole cells (drop cells, not seeds).
    assert list(params).index("seed") == (len(params) - 1 if (study, sweep) in SEEDS_INNERMOST else 0)


def test_the_recipes_of_both_studies() -> None:
    conv = compose(["experiment=repro_cpu"])
    assert (conv.data.image_size, conv.model.img_size, conv.model.ch, conv.trainer.max_steps) == (8, 8, 16, 600)
    assert conv.callbacks.fid.every_n_steps == 75 and conv.callbacks.features.every_n_steps == 10
    uvit = compose(["experiment=repro_uvit"])
    assert uvit.model._target_.endswith(".UViT") and "ch" not in uvit.model  # no conv UNet key leaks into it
    assert (uvit.data.image_size, uvit.model.img_size, uvit.model.patch_size, uvit.model.num_classes) == (8, 8, 2, 0)
    assert [num_skips_of(compose(["experiment=repro_uvit", f"model.depth={d}"]).model) for d in (12, 24)] == [6, 12]


def test_the_uvit_frontier_grid_doubles_the_lr_from_the_recipe_s() -> None:
    lrs = [float(v) for v in str(compose(["experiment=repro_uvit_frontier"], return_hydra_config=True)
                                 .hydra.sweeper.params["optim.lr"]).split(",")]
    assert len(lrs) >= 4 and lrs[0] == load_study("uvit").lr
    assert all(b == pytest.approx(2 * a) for a, b in zip(lrs, lrs[1:]))


def test_the_frontier_table_says_whether_the_grid_spans_from_every_method_training_to_every_method_failing() -> None:
    lrs = [2e-3, 4e-3, 8e-3]
    good, collapsed = Stat(8.5, 0.1, 3), Stat(15.9, 0.0, 3)
    fids = {"none": [good, collapsed, collapsed], "ls": [good, good, Stat(8.3, 0.2, 3)]}
    assert [trains_up_to(lrs, f) for f in fids.values()] == [4e-3 / 2, 8e-3]
    assert bracket(lrs, fids) == ("Every method trains at lr 0.002; no lr where every method fails (the grid stops "
                                  "before the last method fails).")
    fids["ls"][2] = Stat(math.nan, math.nan, 0, diverged=3)
    assert bracket(lrs, fids).endswith("every method fails at lr 0.008.")


def test_the_frontier_compares_where_none_fails_and_another_method_trains_not_where_every_method_fails() -> None:
    """Grid 2e-3 … 8e-3 (3 seeds each): none collapses (FID 16) from 4e-3, cs trains up to 4e-3 and loses one seed of
    three at 2e-3, every method fails at 8e-3. Only lr 4e-3 is a comparison; 8e-3 bounds the grid; cs's lost seed
    where none trains is counted in the text, not in the verdict."""
    study = load_study("uvit")
    lrs = [study.lr, 2 * study.lr, 4 * study.lr]
    final = {"none": [[8.0, 8.2, 8.1], [16.0, 15.9, 16.1], [16.0, 16.2, 15.8]],
             "cs": [[8.1, 8.0, 15.9], [8.2, 8.3, 8.1], [15.9, 16.0, 16.1]]}
    runs = [RunResult(Path(f"{m}-{lr}-{seed}"), Setting(12, 16, m, study.kappa if m == "cs" else None, lr), seed,
                      "completed", Curve(np.array([1000, 3000]), np.array([12.0, fid])))
            for m, grid in final.items() for lr, fids in zip(lrs, grid) for seed, fid in enumerate(fids)]
    section = frontier(Sweep(runs, study))
    assert [c.text for c in section.checks] == [f"N=12, b=16, lr {lrs[1]:g} (none fails): FID of cs < FID of none"]
    assert section.verdict[0] == "reproduced"
    assert f"every method fails at lr {lrs[2]:g}." in section.body
    assert "| cs | 1/3 | 0/3 | 3/3 |" in section.body and "| none | 0/3 | 3/3 | 3/3 |" in section.body
    assert f"At the lrs where none trains (≤ {lrs[0]:g}), seeds lost: cs 1/3" in section.body
    final["cs"][1] = [16.1, 16.0, 15.9]  # now every method fails above none's frontier: nothing to compare
    runs = [r for r in runs if not (r.setting.scaler == "cs" and r.setting.lr == lrs[1])] + [
        RunResult(Path(f"cs-{lrs[1]}-{s}"), Setting(12, 16, "cs", study.kappa, lrs[1]), s, "completed",
                  Curve(np.array([1000, 3000]), np.array([12.0, f]))) for s, f in enumerate(final["cs"][1])]
    assert frontier(Sweep(runs, study)).verdict == (
        "inconclusive at this scale", "no lr of the grid where none fails and another method still trains (or the "
                                      "grid was not run), so there is no lr at which to compare")


def test_the_shallow_and_deep_unets_have_6_and_12_lscs() -> None:
    for blocks, skips in ((1, 6), (3, 12)):
        cfg = compose(["experiment=repro_cpu", f"model.num_res_blocks={blocks}"])
        assert num_skips_of(cfg.model) == skips


def test_a_comparison_holds_only_when_the_seed_intervals_separate() -> None:
    assert stat([1.0, 2.0, 3.0]) == Stat(2.0, 1.0, 3, 0)
    assert stat([1.0, math.inf, 3.0]) == Stat(2.0, math.sqrt(2), 2, 1)
    assert compare(Stat(1.0, 0.2, 3), Stat(2.0, 0.3, 3)) == "<"
    assert compare(Stat(1.0, 0.6, 3), Stat(2.0, 0.5, 3)) == "?"  # 1.6 > 1.5: the intervals overlap
    assert compare(Stat(1.0, 0.0, 1), Stat(2.0, 0.0, 3)) == "?"  # one seed decides nothing
    assert compare(Stat(math.nan, math.nan, 0, diverged=3), Stat(5.0, 1.0, 3)) == ">"  # all diverged: worst
    holds = Check("a < b", Stat(1.0, 0.1, 3), Stat(2.0, 0.1, 3), "<")
    opposite = Check("b < a", Stat(2.0, 0.1, 3), Stat(1.0, 0.1, 3), "<")
    unclear = Check("a < b", Stat(1.0, 1.0, 3), Stat(2.0, 1.0, 3), "<")
    threshold = Check("speed-up > 1.5", Stat(2.0, 0.2, 3), 1.5, ">")
    assert [c.outcome for c in (holds, opposite, unclear, threshold)] == ["holds", "opposite", "unclear", "holds"]
    assert verdict([holds, threshold])[0] == "reproduced"
    assert verdict([opposite, unclear])[0] == "not reproduced"
    assert verdict([holds, opposite])[0] == "inconclusive at this scale"
    assert verdict([Check("x", Stat(math.nan, math.nan, 0), 1.0, "<")]) == (
        "inconclusive at this scale", "the runs it needs are missing")


def test_the_committed_conv_unet_verdicts_and_speedups_follow_from_its_raw_csvs() -> None:
    """The report's numbers come from the one speed-up and one statistics definition: recomputed from the committed
    runs.csv and fid_curves.csv, every verdict and the ls speed-up table match docs/results/cpu_reproduction.md."""
    sweep = Sweep(read_results_csv(CONV / "runs.csv", CONV / "fid_curves.csv"), load_study("conv_unet"))
    text = (CONV.parent / "cpu_reproduction.md").read_text()
    for section in sections(sweep)[:6]:  # the six claims (the frontier became a claim after this report was written)
        assert f"| {section.title} | **{section.verdict[0]}** | {section.verdict[1]} |" in text
    ls = [str(stat(sweep.speedups("ls", *cell, at=0.5))) for cell in sweep.cells]
    assert f"| ls | {' | '.join(ls)} |" in text
    assert ls[-1] == "1.28 ± 0.15 (n=3)"  # the best speed-up the README quotes


def test_the_committed_uvit_report_rests_on_three_seeds_and_follows_from_its_raw_csvs() -> None:
    """docs/results/cpu_reproduction_uvit.md: recomputed from its runs.csv and fid_curves.csv, every verdict (six
    claims and the frontier) matches; every number a verdict compares has 3 seeds; the frontier spans ≥ 4 lrs at both
    depths; the none baseline has flattened in every cell; the figures exist; the README states both backbones'
    verdicts side by side."""
    import re

    uvit = ROOT / "docs" / "results" / "cpu_reproduction_uvit"
    sweep = Sweep(read_results_csv(uvit / "runs.csv", uvit / "fid_curves.csv"), load_study("uvit"))
    text = (uvit.parent / "cpu_reproduction_uvit.md").read_text()
    secs = sections(sweep)
    for section in secs:
        assert f"| {section.title} | **{section.verdict[0]}** | {section.verdict[1]} |" in text
        for check in section.checks:
            for s in (check.a, check.b):
                assert not isinstance(s, Stat) or s.n + s.diverged in (0, 3), check  # 3 seeds, or not run at all
    assert all(len(sweep.lrs((n, 16))) >= 4 for n in (6, 12))
    flat = [line for line in text.split("## Samples")[1].split("## Measured budget")[0].splitlines()
            if line.startswith("| N=")]
    assert len(flat) == len(sweep.cells) == 4 and all(line.endswith("| yes |") for line in flat)
    figures = re.findall(r"!\[\w+\]\((cpu_reproduction_uvit/\w+\.png)\)", text)
    assert len(figures) >= 8 and all((uvit.parent / f).stat().st_size > 5000 for f in figures)
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.split("| claim | conv UNet")[1].splitlines()[2:] if line.startswith("|")]
    assert len(rows) == len(secs)
    conv = sections(Sweep(read_results_csv(CONV / "runs.csv", CONV / "fid_curves.csv"), load_study("conv_unet")))
    for row, section, conv_section in zip(rows, secs, conv):
        for column, verdict_of in ((1, conv_section), (2, section)):
            assert row.split(" | ")[column].startswith(verdict_of.verdict[0].replace(" at this scale", "")), row


def test_a_study_that_dropped_uniform_compares_oscillation_with_none_alone() -> None:
    """The U-ViT study may drop its ablations sweep (uniform, cs_reversed) for the budget, as its issue orders: claim
    1 then compares with none only instead of counting every comparison with uniform as unclear."""
    from scalelong.reproduction.claims import direction, oscillation

    results = read_results_csv(CONV / "runs.csv", CONV / "fid_curves.csv")
    kept = [r for r in results if r.setting.scaler not in ("uniform", "cs_reversed")]
    study = load_study("conv_unet")
    full, dropped = oscillation(Sweep(results, study)), oscillation(Sweep(kept, study))
    assert (len(full.checks), len(dropped.checks)) == (24, 12)  # 2 metrics × 2 batches × (1 + 2 scalers) × references
    assert all("uniform" not in c.text for c in dropped.checks)
    assert [c.text for c in dropped.checks] == [c.text for c in full.checks if "uniform" not in c.text]
    assert direction(Sweep(kept, study)).verdict == (
        "inconclusive at this scale", "the runs it needs are missing")
    # cells dropped one by one (the U-ViT ablations sweep runs cs_reversed's deep cells first): the cells run are
    # compared, the others named; uniform is a reference only where it ran
    deep = [r for r in results if r.setting.scaler not in ("uniform", "cs_reversed") or r.setting.skips == 12]
    partial = direction(Sweep(deep, study))
    assert [c.text for c in partial.checks] == [c.text for c in direction(Sweep(results, study)).checks
                                                if c.text.startswith("N=12")] and len(partial.checks) == 2
    assert "cs_reversed was not run (dropped for the budget) at N=6, b=16; N=6, b=64" in partial.body
    assert [c.text for c in oscillation(Sweep(deep, study)).checks] == [  # uniform's growth with N needs both depths
        c.text for c in full.checks if not ("uniform" in c.text and "grows with N" in c.part)]


@pytest.mark.slow
def test_the_miniature_sweep_runs_end_to_end_and_the_report_has_every_section(miniature) -> None:
    root, report = miniature
    text = report.read_text()
    positions = [text.find(heading) for heading in SECTIONS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), dict(zip(SECTIONS, positions))
    assert text.count("**Verdict: ") == 7  # six claims and the stability frontier
    with open(report.parent / "cpu_reproduction_uvit" / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["scaler"], r["seed"]) for r in rows) == [("ls", "0"), ("ls", "1"), ("none", "0"), ("none", "1")]
    assert all(r["status"] == "completed" and 0 < float(r["final_fid"]) < 500 for r in rows)
    assert all(float(r["feat_level_mrc"]) > 0 and float(r["grad_mrc"]) > 0 for r in rows)
    ls = [r for r in rows if r["scaler"] == "ls"]
    assert all(0 < float(r["ls_fit_kappa"]) < 2 for r in ls)
    with open(report.parent / "cpu_reproduction_uvit" / "fid_curves.csv", newline="") as f:
        curves = list(csv.DictReader(f))
    assert len(curves) == 4 * 4  # FID at steps 24, 49, 74, 99 of each run
    none = [r["run"] for r in rows if r["scaler"] == "none"]
    change = [abs(float(last["fid"]) / float(before["fid"]) - 1) for run in none for before, last in
              [[c for c in curves if c["run"] == run and c["step"] in ("74", "99")]]]
    flattened = "yes" if max(change) <= 0.10 else "no"  # whether the none baseline stopped improving, per seed
    before = stat(float(c["fid"]) for c in curves if c["run"] in none and c["step"] == "74")
    row = text.split("| N=6, b=16 | 74 → 99 | ")[1].split("\n")[0]
    assert row.startswith(f"{before} |") and row.endswith(f"| {flattened} |")
    from scalelong.reproduction.results import elapsed_minutes
    from scalelong.transfer import FID_LINE

    for run in (root.glob(f"*/{r['run']}") for r in rows):  # the FID callback's log lines, as the transfer
        minutes = elapsed_minutes(next(run), FID_LINE)                # report times them
        assert len(minutes) == 4 and minutes == sorted(minutes) and 0 < minutes[0] < minutes[-1] < 30
    assert "(n=2)" in text  # every number carries its seeds
    assert "Missing: the study's sweeps frontier_edge, speed, shallow, kappa, ablations were not run under " in text
    (record,) = json.loads((root / "budget.json").read_text())
    assert record["sweep"] == "frontier" and record["exit"] == 0 and 0 < record["cpu_minutes"] < 30
    assert "| frontier | 1 |" in text  # the budget table reports the sweep's measured minutes
    for figure in ("oscillation", "fid_curves", "speedup", "fid_gain", "ls_kappa"):
        assert (report.parent / "cpu_reproduction_uvit" / f"{figure}.png").stat().st_size > 5000, figure
    assert "N=6 LSCs, batch 16: real training images, none, ls, left to right" in text
    tiles = Image.open(report.parent / "cpu_reproduction_uvit" / "samples_N6_b16.png")
    assert tiles.size == (4 * (3 * 42 + 2 * 4), 4 * 42)  # three grids of 16 8×8 images (2-pixel borders), 4×


@pytest.mark.parametrize(("scaler", "cancels"), [(["uniform"], True), (["cs", "cs_kappa=1.2"], True),
                                                 (["cs", "cs_kappa=0.5"], False)])
def test_the_report_s_groupnorm_note_the_innermost_merge_normalises_kappa_away(scaler, cancels) -> None:
    """The report's GroupNorm note: in the deep repro UNet the first decoder GroupNorm sees the same input up to the
    scale of the skip's groups, so its output is κ-free unless κ²·F(s) falls below GroupNorm's eps (cs, κ = 0.5)."""
    import torch
    from hydra.utils import instantiate

    torch.manual_seed(0)
    overrides = ["experiment=repro_cpu", "model.num_res_blocks=3"]
    none = instantiate(compose([*overrides, "scaler=none"]).model)
    scaled = instantiate(compose([*overrides, f"scaler={scaler[0]}", *scaler[1:]]).model)
    scaled.load_state_dict(none.state_dict(), strict=False)  # the same weights (cs/uniform have no parameters)
    x, t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([10, 200, 500, 900])
    outputs = []
    for model in (none, scaled):
        model.output_blocks[0][0].norm1.register_forward_hook(lambda m, i, o: outputs.append(o))
        with torch.no_grad():
            model(x, t)
    difference = float((outputs[0] - outputs[1]).abs().max())
    assert (difference < 0.01) if cancels else (difference > 1.0), difference


@pytest.mark.parametrize("scaler", [["uniform"], ["cs", "cs_kappa=0.5"], ["cs", "cs_kappa=1.2"]])
def test_the_uvit_merge_keeps_kappa_where_the_conv_unet_s_groupnorm_cancels_it(scaler) -> None:
    """The U-ViT counterpart of the GroupNorm note: every out-block merges Linear(cat[h, κ_i·s_i]) with no
    normalisation in between, so the merge's input carries κ_i·s_i exactly and its output moves with κ_i."""
    import torch
    from hydra.utils import instantiate

    torch.manual_seed(0)
    none = instantiate(compose(["experiment=repro_uvit", "model.depth=24", "scaler=none"]).model)
    scaled = instantiate(compose(["experiment=repro_uvit", "model.depth=24", f"scaler={scaler[0]}", *scaler[1:]]).model)
    scaled.load_state_dict(none.state_dict())  # the same weights (uniform and cs have no parameters)
    kappas = scaled.kappas()
    x, t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([10, 200, 500, 900])
    merged, skips = {}, {}

    def keep(store: dict, key: tuple):
        return lambda module, inputs, output: store.update({key: (inputs[0], output)})  # returns None: output kept

    for name, model in (("none", none), ("scaled", scaled)):
        n = len(model.out_blocks)
        for k, block in enumerate(model.in_blocks):  # in-block k pushes skip i = k + 1
            block.register_forward_hook(keep(skips, (name, k + 1)))
        for k, block in enumerate(model.out_blocks):  # out-block k pops skip i = N − k
            block.skip_linear.register_forward_hook(keep(merged, (name, n - k)))
        with torch.no_grad():
            model(x, t)
    d = none.embed_dim
    for i, kappa in enumerate(kappas, start=1):
        inputs, output = merged[("scaled", i)]
        torch.testing.assert_close(inputs[..., d:], kappa * skips[("scaled", i)][1])  # κ_i·s_i enters the Linear
        if not math.isclose(kappa, 1.0):
            shift = float((output - merged[("none", i)][1]).abs().max())
            assert shift > 1e-3, (i, kappa, shift)  # the merge's output moves with κ_i: nothing normalises it away
    assert not all(math.isclose(k, 1.0) for k in kappas)


@pytest.mark.parametrize("name", ["conv_unet", "uvit"])
def test_each_study_s_prose_exists_and_its_placeholders_are_recipe_keys(name: str) -> None:
    from scalelong.errors import ConfigError
    from scalelong.reproduction.study import Study

    study = load_study(name)
    setup = study.prose(study.setup)
    assert "{" not in setup and f"lr {study.lr:g}" in setup
    assert all(study.prose(path) for _, path in study.notes)
    broken = Study(**{**study.__dict__, "recipe": compose(["experiment=repro_cpu"]).model})
    with pytest.raises(ConfigError, match="is not a key of"):
        broken.prose(study.setup)


def write_lossonly_run(run_dir: Path, overrides: list[str]) -> None:
    """A completed run directory as scalelong-train leaves it, with its losses logged and nothing else (no FID
    callback, no stability callbacks): what a sweep that is not a reproduction sweep holds."""
    from omegaconf import OmegaConf

    from scalelong.runs.status import write_status

    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose(overrides), run_dir / ".hydra" / "config.yaml")
    (run_dir / "csv").mkdir()
    rows = "".join(f"{step},0,{1.0 - 0.01 * step}\n" for step in range(10))
    (run_dir / "csv" / "metrics.csv").write_text("step,epoch,train/loss\n" + rows)
    write_status(run_dir, "completed", step=10)


def test_a_report_of_sweeps_without_fid_curves_is_written_and_names_what_is_missing(tmp_path, capsys, caplog) -> None:
    """An lr sweep of U-ViT runs at and off the recipe's lr that logged no FID: the report of what there is, and
    one line naming what is missing, instead of a traceback from the FID claims or a log-scaled empty figure."""
    from scalelong.report import main

    root = tmp_path / "sweep"
    for scaler in ("none", "cs"):
        for lr in ("2e-3", "4e-3"):
            write_lossonly_run(root / f"{scaler}_{lr}", ["experiment=repro_uvit", f"scaler={scaler}", f"optim.lr={lr}"])
    out = tmp_path / "report.md"
    main([str(root), "--out", str(out)])
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"4 of the 4 completed runs under {root} logged no FID curve (callbacks.fid, e.g. callbacks=repro): the "
        "claims on FID are inconclusive without them"]
    text = out.read_text()
    assert text.count("**Verdict: ") == 7 and "logged no FID curve" in text
    assert not (tmp_path / "report" / "frontier.png").exists()


def test_a_run_s_wall_minutes_sum_its_attempts_and_leave_out_the_time_between_sittings(tmp_path: Path) -> None:
    """A run interrupted at 10:12 and resumed at 15:00 took 12 + 5 minutes, not 5 hours; its train.log is as
    scalelong.train writes it (an attempt starts with the "run <dir>: <model> with ..." line)."""
    def line(time: str, message: str, logger: str = "scalelong.train") -> str:
        return f"[2026-12-07 {time},000][{logger}][INFO] {message}"

    start = "run /runs/my run: UViT with NoScaling, 12 LSCs, 1.35M parameters, 1350000 trainable"
    (tmp_path / "train.log").write_text("\n".join([
        line("10:00:00", start),
        line("10:06:00", "fid_digits-256/dpm_solver-10 = 12.0", "scalelong.callbacks.fid"),
        "a traceback line without a time stamp",
        line("10:12:00", "stopped by SIGTERM after step 900"),
        line("15:00:00", f"{start}, resuming last.ckpt"),
        line("15:05:00", "run /runs/my run completed"),
    ]) + "\n")
    assert wall_minutes(tmp_path) == pytest.approx(17.0)
    (tmp_path / "train.log").write_text(line("10:00:00", "one line") + "\n")
    assert math.isnan(wall_minutes(tmp_path))
    assert math.isnan(wall_minutes(tmp_path / "missing"))
