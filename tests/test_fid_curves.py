"""scripts/fid_curves.py: a finished recipe is skipped, an interrupted one resumes instead of being scored as done."""

import json

import pytest


@pytest.fixture
def fid_curves(fid_curves_script, tmp_path, monkeypatch):
    module = fid_curves_script
    monkeypatch.setattr(module, "ROOT", tmp_path)
    calls = []

    def run(cmd, **kwargs):  # stands in for scalelong-train: writes the checkpoint a run leaves
        calls.append(cmd)
        (tmp_path / "outputs" / "runs" / "fid_curves-s-r" / "checkpoints").mkdir(parents=True, exist_ok=True)
        (tmp_path / "outputs" / "runs" / "fid_curves-s-r" / "checkpoints" / "last.ckpt").write_text("")

    monkeypatch.setattr(module.subprocess, "run", run)
    return module, calls


def test_a_new_recipe_starts_over_and_a_finished_one_is_skipped(fid_curves):
    module, calls = fid_curves
    module.train("s", "r", ["optim.lr=1e-3"], every=100)
    assert calls[-1][-1] == "ckpt_path=null" and "callbacks.checkpoint.every_n_train_steps=100" in calls[-1]
    meta = json.loads((module.run_dir("s", "r") / "launch.json").read_text())
    assert meta["finished"] >= meta["launched"] and "resumed" not in meta
    module.train("s", "r", ["optim.lr=1e-3"], every=100)
    assert len(calls) == 1


def test_an_interrupted_recipe_resumes_from_its_last_checkpoint(fid_curves):
    module, calls = fid_curves
    out = module.run_dir("s", "r")
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_text("")
    (out / "launch.json").write_text(json.dumps({"launched": 1.0, "overrides": []}))  # killed: no "finished"
    module.train("s", "r", [], every=100)
    assert calls[-1][-1] == "ckpt_path=auto"
    meta = json.loads((out / "launch.json").read_text())
    assert meta["launched"] == 1.0 and len(meta["resumed"]) == 1 and "finished" in meta
