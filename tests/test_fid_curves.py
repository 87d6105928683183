"""scalelong.fid_curves: a finished experiment is skipped; an interrupted one resumes, not scored as done."""

import json

import pytest

from scalelong import fid_curves
from scalelong.fid_curves import CurveRun, Scoring
from scalelong.runs.status import write_status


@pytest.fixture
def launches(tmp_path, monkeypatch):
    """The training commands launched; each stands in for scalelong-train and leaves what a finished run leaves."""
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        run_dir = tmp_path / "outputs" / "runs" / next(a for a in cmd if a.startswith("run_name=")).split("=", 1)[1]
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints" / "last.ckpt").write_text("")
        write_status(run_dir, "completed", step=4)

    monkeypatch.setattr(fid_curves.subprocess, "run", run)
    return calls


def test_an_experiment_runs_in_its_own_directory_under_its_name():
    run = CurveRun("/r", "presets/uvit_deep_10k")
    assert str(run.dir) == "/r/outputs/runs/fid_curves-presets-uvit_deep_10k"
    assert CurveRun("/r", "fmnist_uvit_deep", ("debug=tiny", "optim.betas=[0.9,0.99]")).name == \
        "fmnist_uvit_deep__debug-tiny__optim.betas-0.9-0.99-"
    assert Scoring(guidance=2).suffix == "_cfg2" and Scoring().suffix == ""
    assert Scoring(64, steps=10, guidance=2).overrides() == [
        "n_samples=64", "kid_subset_size=32", "save_samples=true", "steps=10", "guidance_scale=2"]


def test_a_new_experiment_starts_over_and_a_finished_one_is_skipped(tmp_path, launches):
    run = CurveRun(tmp_path, "presets/uvit_deep")
    run.train()
    assert "experiment=presets/uvit_deep" in launches[-1]
    assert launches[-1][-2:] == ["run_name=fid_curves-presets-uvit_deep", "ckpt_path=null"]
    record = json.loads((run.dir / "launch.json").read_text())
    assert "launched" in record and "resumed" not in record
    run.train()
    assert len(launches) == 1


@pytest.mark.parametrize("status", [None, "running", "interrupted"])  # killed, SIGKILLed, SIGTERMed
def test_an_interrupted_experiment_resumes_from_its_last_checkpoint(tmp_path, launches, status):
    run = CurveRun(tmp_path, "fmnist_uvit_deep")
    (run.dir / "checkpoints").mkdir(parents=True)
    (run.dir / "checkpoints" / "last.ckpt").write_text("")
    (run.dir / "launch.json").write_text(json.dumps({"launched": 1.0}))
    if status:
        write_status(run.dir, status)
    run.train()
    assert len(launches) == 1 and launches[-1][-1] == "ckpt_path=auto"
    record = json.loads((run.dir / "launch.json").read_text())
    assert record["launched"] == 1.0 and len(record["resumed"]) == 1
