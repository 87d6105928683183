"""The transfer study's report (scalelong/transfer.py, docs/results/finetune.md): arms read from run directories as
scalelong-train leaves them, the per-arm accounting, FID against steps and wall time, and DiffFit's claims judged
by the reproduction reports' decision rule."""

from __future__ import annotations

import csv
import functools
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from scalelong.config import compose
from scalelong.errors import ScaleLongError
from scalelong.runs.status import write_status
from scalelong.transfer import Study, main

METRIC = "fid_digits_classes5-6-7-8-9-256/dpm_solver-10"
STEPS = (250, 500, 750, 1000)
FULL = [40.0, 20.0, 12.0, 10.0]
BASE_BYTES = 8_000_000


@functools.cache
def composed(overrides: tuple[str, ...]) -> str:
    return OmegaConf.to_yaml(compose(list(overrides)))


def write_run(run_dir: Path, overrides: list[str], fids: list[float], seconds_per_step: float,
              trainable: int, checkpoint_bytes: int, total: int = 700_000, seed: int = 0) -> None:
    """A completed run directory as scalelong-train writes it: the composed config, metrics.csv with the FID
    callback's column, train.log with the callback's lines at the times ``seconds_per_step`` gives, summary.json,
    status.json."""
    (run_dir / ".hydra").mkdir(parents=True)
    config = OmegaConf.create(composed(tuple(overrides)))
    config.seed = seed
    OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    (run_dir / "csv").mkdir()
    rows = "".join(f"{step},0,{fid}\n" for step, fid in zip(STEPS, fids))
    (run_dir / "csv" / "metrics.csv").write_text(f"step,epoch,{METRIC}\n{rows}")
    start = datetime(2026, 12, 7, 10, 0, 0)

    def line(step: int, logger: str, message: str) -> str:
        stamp = (start + timedelta(seconds=step * seconds_per_step)).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        return f"[{stamp}][{logger}][INFO] {message}"

    log = [line(0, "scalelong.train", f"run {run_dir}: UViT with ConstantScaling, 6 LSCs, 0.70M parameters, "
                                      f"{trainable} trainable")]
    log += [line(step, "scalelong.callbacks.fid", f"{METRIC} = {fid:.4f} (1.5 s)") for step, fid in zip(STEPS, fids)]
    (run_dir / "train.log").write_text("\n".join(log) + "\n")
    summary = {"step": STEPS[-1], "trainable_params": trainable, "total_params": total,
               "checkpoint_bytes": checkpoint_bytes}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    write_status(run_dir, "completed", step=STEPS[-1])


def scaled(values: list[float], factor: float) -> list[float]:
    return [v * factor for v in values]


# arm: (sweep, overrides, FID curve per seed, seconds per step, trainable parameters, checkpoint bytes)
ARMS = {
    "scratch": ("scratch", ["experiment=finetune_digits_scratch"], [scaled(FULL, 3.0), scaled(FULL, 3.2)], 0.10,
                700_000, 8_000_000),
    "full": ("tune", ["experiment=finetune_digits_tune", "finetune=full"], [FULL, scaled(FULL, 1.04)], 0.10,
             700_000, 8_000_000),
    "difffit": ("few", ["experiment=finetune_digits_few", "finetune=difffit"],
                [[38.0, 19.0, 12.0, 10.5], [38.0, 19.5, 12.5, 10.7]], 0.07, 7_000, 320_000),
    "bitfit": ("few", ["experiment=finetune_digits_few", "finetune=bitfit"], [scaled(FULL, 1.4), scaled(FULL, 1.5)],
               0.06, 3_500, 160_000),
    "lsc": ("ls", ["experiment=finetune_digits_ls", "finetune=lsc"], [scaled(FULL, 2.0), scaled(FULL, 2.1)], 0.06,
            2_100, 100_000),
    "difffit + ls": ("ls", ["experiment=finetune_digits_ls", "finetune=difffit"],
                     [[38.0, 19.0, 12.0, 10.4], [38.0, 19.5, 12.5, 10.6]], 0.07, 7_200, 330_000),
}


@pytest.fixture(scope="module")
def written_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study") / "runs"
    write_run(root / "base", ["experiment=finetune_base"], [50.0, 30.0, 20.0, 18.0], 0.06, 700_000, BASE_BYTES)
    for arm, (sweep, overrides, curves, per_step, trainable, size) in ARMS.items():
        for seed, fids in enumerate(curves):
            write_run(root / sweep / f"{arm.replace(' + ', '_')}_{seed}", overrides, fids, per_step, trainable, size,
                      seed=seed)
    return root


@pytest.fixture
def study_root(written_study: Path, tmp_path: Path) -> Path:
    """A copy of the study each test may change."""
    return Path(shutil.copytree(written_study, tmp_path / "runs"))


def test_runs_are_grouped_into_arms_by_method_and_switched_scaler(study_root: Path) -> None:
    study = Study(study_root)
    assert study.arms == list(ARMS)
    assert study.base_scaler == "cs" and study.base.checkpoint_bytes == BASE_BYTES
    assert [(r.seed, r.final_fid) for r in study.of("difffit")] == [(0, 10.5), (1, 10.7)]
    run = study.of("full")[0]
    assert run.seconds_per_step == pytest.approx((100 - 4 * 1.5) / 1000)  # 100 s to step 1000, less 4 FIDs of 1.5 s
    assert list(run.fid_minutes) == pytest.approx([s * 0.10 / 60 for s in STEPS])


def test_the_report_judges_difffit_s_claims_by_the_decision_rule_and_writes_its_data(study_root: Path,
                                                                                     tmp_path: Path, capsys) -> None:
    out = tmp_path / "docs" / "finetune.md"
    main([str(study_root), "--out", str(out)])
    assert capsys.readouterr().out.strip() == str(out)
    verdicts = json.loads((out.parent / "finetune" / "verdicts.json").read_text())
    assert {k: v[0] for k, v in verdicts.items()} == {
        # difffit/full = 1.05, 1.03 < 1.10, and 10.6 vs scratch's 31
        "DiffFit's FID is close to a full fine-tune's": "reproduced",
        # 0.064 vs 0.094 s/step; the FID both reach (difffit's final 10.5, 10.7): difffit at its last measurement
        # (1.17 min), full between its last two (1.56, 1.61 min)
        "DiffFit trains faster than a full fine-tune": "reproduced",
        "DiffFit trains far fewer parameters, in a far smaller checkpoint": "reproduced",  # 1%, 0.5%, 0.3%; 4%
        # lsc 20.5 is worse than bitfit 14.5; difffit + ls 10.5 ± 0.14 overlaps difffit 10.6 ± 0.14
        "Letting the long-skip scalers adapt helps (this study's question)": "not reproduced",
    }
    text = out.read_text()
    assert "| difffit | 2 of 2 | 7,000 | 1.00% | 320 kB | 4.0% | 10.6 ± 0.14 (n=2) |" in text
    assert "wall-time speed-up to the FID both reach (the worse final FID of the pair) > 1: 1.36 ± 0.027 (n=2)" in text
    assert (out.parent / "finetune" / "fid.png").stat().st_size > 10_000
    with open(out.parent / "finetune" / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["arm"] for r in rows].count("difffit + ls") == 2 and rows[0]["arm"] == "base"
    assert rows[0]["path"] == "../runs/base" and float(rows[0]["checkpoint_bytes"]) == BASE_BYTES
    with open(out.parent / "finetune" / "fid_curves.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4 * (1 + 2 * len(ARMS))


def test_difffit_far_from_the_full_fine_tune_is_not_close_nor_faster(study_root: Path, tmp_path: Path) -> None:
    """The same study with DiffFit ending at FID 25, 2.5× the full fine-tune's final FID: the first claim goes the
    other way, and DiffFit is slower to the FID both reach (25: full passes it at 0.73 and 0.75 min, DiffFit at its
    end, 1.17 min)."""
    for seed in (0, 1):
        run = study_root / "few" / f"difffit_{seed}"
        run.rename(run.with_name("moved"))
        write_run(run, ARMS["difffit"][1], [45.0, 35.0, 28.0, 25.0], 0.07, 7_000, 320_000, seed=seed)
        shutil.rmtree(run.with_name("moved"))
    out = tmp_path / "finetune.md"
    main([str(study_root), "--out", str(out)])
    verdicts = json.loads((tmp_path / "finetune" / "verdicts.json").read_text())
    assert verdicts["DiffFit's FID is close to a full fine-tune's"][0] == "inconclusive at this scale"
    assert "1 of 2 comparisons hold, 1 go the other way" in verdicts["DiffFit's FID is close to a full fine-tune's"][1]
    speed = "speed-up to the FID both reach (the worse final FID of the pair) > 1: 0.634 ± 0.012 (n=2) vs 1.0"
    assert f"{speed} → opposite" in out.read_text()


def test_runs_of_several_directories_share_the_base_given(study_root: Path, tmp_path: Path) -> None:
    """An earlier protocol's runs kept apart (docs/results/finetune/first_protocol) reported with the study's base."""
    elsewhere = tmp_path / "first_protocol"
    elsewhere.mkdir()
    (study_root / "few").rename(elsewhere / "few")
    assert "difffit" not in Study(study_root).arms
    study = Study(study_root / "tune", elsewhere, base=study_root / "base")
    assert study.arms == ["full", "difffit", "bitfit"] and study.base.checkpoint_bytes == BASE_BYTES
    out = tmp_path / "first.md"
    (tmp_path / "note.md").write_text("The first protocol.\n")
    main([str(study_root / "tune"), str(elsewhere), "--base", str(study_root / "base"), "--out", str(out),
          "--note", str(tmp_path / "note.md")])
    text = out.read_text()
    assert "| difffit | 2 of 2 | 7,000 | 1.00% |" in text and "\n\nThe first protocol.\n\n" in text


def test_a_study_without_its_base_or_directory_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as missing:
        main([str(tmp_path / "nowhere")])
    assert missing.value.code == 1
    assert capsys.readouterr().err.strip() == (
        f"scalelong-finetune-report: {tmp_path / 'nowhere'} is not a directory; pass the directory of a transfer "
        "study's runs (sh scripts/finetune_study.sh writes docs/results/finetune/runs)")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty")])
    assert capsys.readouterr().err.strip() == (
        f"scalelong-finetune-report: {tmp_path / 'empty' / 'base'} holds no run; a transfer study keeps its base run "
        "there (sh scripts/finetune_study.sh trains it)")


def test_a_resumed_run_times_each_measurement_by_its_last_log_line(study_root: Path, tmp_path: Path) -> None:
    """full seed 0 interrupted after its step-750 FID (at 1.25 min) and resumed: the new attempt measures step 750
    again 30 s in and step 1000 at 60 s. Minutes count the attempts' spans, a measurement its last line."""
    run = study_root / "tune" / "full_0"
    lines = (run / "train.log").read_text().splitlines()

    def line(time: str, logger: str, message: str) -> str:
        return f"[2026-12-07 {time},000][{logger}][INFO] {message}"

    (run / "train.log").write_text("\n".join([
        *lines[:4],  # the start and the FIDs of steps 250, 500, 750
        line("11:00:00", "scalelong.train", f"run {run}: UViT with ConstantScaling, 6 LSCs, 0.70M parameters, "
                                            "700000 trainable, resuming last.ckpt"),
        line("11:00:30", "scalelong.callbacks.fid", f"{METRIC} = 12.0000 (1.5 s)"),
        line("11:01:00", "scalelong.callbacks.fid", f"{METRIC} = 10.0000 (1.5 s)"),
    ]) + "\n")
    study = Study(study_root)
    full = study.of("full")[0]
    assert full.attempts == 2 and list(full.fid_minutes) == pytest.approx([25 / 60, 50 / 60, 1.75, 2.25])
    out = tmp_path / "finetune.md"
    main([str(study_root), "--out", str(out)])
    assert "Interrupted and resumed" in out.read_text() and "`full_0` (2 attempts)" in out.read_text()


def test_two_runs_of_one_arm_and_seed_are_one_error(study_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_protocol"
    shutil.copytree(study_root / "few" / "difffit_0", other / "difffit_0")
    with pytest.raises(ScaleLongError, match=r"two runs of arm 'difffit' with seed 0: .*difffit_0 and .*difffit_0"):
        Study(study_root, other)
