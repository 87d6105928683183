"""scalelong-dashboard: PNGs, summary and HTML from two short runs; the wandb workspace spec offline."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest

from scalelong.dashboard import main
from scalelong.plots.metrics import load_run, read_metrics
from scalelong.plots.page import summary
from scalelong.plots.workspace import build_workspace

PICTURES = ("feature_energy", "skip_energy", "oscillation_heatmap", "grad_norms", "kappa", "noise_ratio",
            "robustness", "loss")


@pytest.fixture
def two_runs(stability_runs) -> list[Path]:
    """The ``none`` and ``cs`` runs of conf/debug/stability.yaml, with their composed config saved as Hydra does."""
    return [stability_runs["none"].run_dir, stability_runs["cs"].run_dir]


@pytest.mark.slow
def test_dashboard_writes_every_picture_the_summary_and_the_page(two_runs, tmp_path):
    out = tmp_path / "dash"
    assert main([*map(str, two_runs), "--out", str(out), "--start", "2"]) == 0
    for name in PICTURES:
        assert (out / f"{name}.png").stat().st_size > 5000, name
    page = (out / "index.html").read_text()
    assert all(f'src="{name}.png"' in page for name in PICTURES)
    assert "steps 2 to last" in page
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["none", "cs(kappa=0.5)"]
    assert all(float(r["feat_level_mrc"]) >= 0 and float(r["grad_mrc"]) > 0 for r in rows)
    with open(out / "oscillation_series.csv") as f:
        per_series = list(csv.DictReader(f))
    assert len(per_series) == 2 * (2 + 2 + 6)  # per run: 2 levels, 2 skips, 5 blocks + total
    assert {r["n"] for r in per_series if r["series"] == "feat/level_1"} == {"3.0"}  # steps 3, 5, 7 of 1, 3, 5, 7

    # The run-level figure averages the per-series figures.
    run = load_run(two_runs[1])
    level_mrc = [float(r["mrc"]) for r in per_series
                 if r["run"] == "cs(kappa=0.5)" and r["series"].startswith("feat/level_")]
    assert summary(run, start=2)["feat_level_mrc"] == pytest.approx(sum(level_mrc) / 2)

    # The workspace asks only for keys the runs log (plus wandb-only and ls-only keys).
    import wandb_workspaces  # noqa: F401  (installed by the test extra)
    logged = set(read_metrics(two_runs[0] / "csv" / "metrics.csv"))
    workspace = build_workspace("my-entity", "scalelong", num_skips=2)
    wanted = {key for section in workspace.sections for panel in section.panels for key in _keys(panel)}
    assert {"feat/level_1", "osc/feat/mean/mrc", "grad/out_block_2", "robust/m0", "loss_t/q1"} <= wanted
    assert {k for k in wanted - logged if not k.startswith("ls/")} == {"noise_ratio/hist"}


def _keys(panel) -> list[str]:
    keys = list(getattr(panel, "y", None) or [])
    keys += [panel.metric] if getattr(panel, "metric", None) else []
    return keys + list(getattr(panel, "media_keys", None) or [])


def test_workspace_spec_is_built_offline_with_one_panel_per_skip():
    import wandb_workspaces  # noqa: F401  (installed by the test extra)
    workspace = build_workspace("my-entity", "scalelong", num_skips=10)
    assert (workspace.entity, workspace.project) == ("my-entity", "scalelong")
    sections = {s.name: s for s in workspace.sections}
    assert len(sections["Feature energy per decoder level (Thm 3.1)"].panels) == 10
    assert len(sections["Gradient norms (Thm 3.3)"].panels) == 1 + 21  # total + 10 in, mid, 10 out
    assert workspace._to_model() is not None  # the saved form is built without a connection


def test_missing_run_directory_is_one_clear_error(tmp_path, caplog):
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 1
    assert "csv/metrics.csv does not exist" in caplog.text


def test_a_run_without_stability_series_gets_its_page_and_is_told_what_is_absent(tiny_run, tmp_path, caplog):
    """debug=tiny logs losses only (as the demo run): the page, the loss picture and both CSVs are written, and
    one line names the pictures without data and the callbacks that log them."""
    out = tmp_path / "dash"
    with caplog.at_level(logging.INFO):
        assert main([str(tiny_run), "--out", str(out)]) == 0
    assert (out / "loss.png").stat().st_size > 5000
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "loss.png", "oscillation_series.csv",
                                                     "summary.csv"]
    with open(out / "summary.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["feat_level_mrc"] == "nan" and float(row["train_loss_mean"]) > 0 and row["last_step"] == "1.0"
    assert (out / "oscillation_series.csv").read_text().strip() == "run,series,rstd,mrc,n"
    absent = [r.getMessage() for r in caplog.records if "no data" in r.getMessage()]
    assert len(absent) == 1 and "feature_energy" in absent[0] and "callbacks=stability" in absent[0], absent
    page = (out / "index.html").read_text()
    assert 'src="loss.png"' in page and "feature_energy" in page and "callbacks.features" in page
