"""scalelong-aggregate: grouping runs by overrides without the seed, mean ± std per metric."""

import json
from pathlib import Path

import pytest

from scalelong.aggregate import main
from scalelong.stats import Stat
from scalelong.sweeps import aggregate, find_runs


def fake_run(root: Path, name: str, overrides: list[str] | None, val: float, config: dict | None = None) -> Path:
    """A completed run directory; without ``overrides``, one without ``.hydra/`` (its config in status.json)."""
    run = root / name
    run.mkdir(parents=True)
    if overrides is not None:
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / "summary.json").write_text(json.dumps({"val/loss": val, "step": 10}))
    (run / "status.json").write_text(json.dumps({"status": "completed", "step": 10, "config": config or {}}))
    return run


def test_groups_over_seeds_and_reports_mean_and_std(tmp_path, capsys):
    for seed, (a, b) in enumerate([(1.0, 0.5), (3.0, 0.7)]):
        fake_run(tmp_path, f"none{seed}", ["scaler=none", f"seed={seed}", "trainer.max_steps=10"], a)
        fake_run(tmp_path, f"cs{seed}", ["scaler=cs", f"seed={seed}"], b)
    rows = aggregate(find_runs([tmp_path]))
    by_group = {r["group"]: r for r in rows}
    assert set(by_group) == {"scaler=cs", "scaler=none"}
    assert by_group["scaler=none"]["n"] == 2
    assert by_group["scaler=none"]["val/loss"] == Stat(2.0, pytest.approx(2 ** 0.5), 2)
    assert by_group["scaler=cs"]["val/loss"].mean == pytest.approx(0.6)
    main([str(tmp_path), "--out", str(tmp_path / "t.md")])
    out = capsys.readouterr().out
    assert "| scaler=none | 2 | 2 ± 1.4 (n=2) |" in out
    assert (tmp_path / "t.md").read_text().strip() == out.strip()


def test_no_runs_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 1
    assert "no run with summary.json" in capsys.readouterr().err


def test_failed_and_missing_jobs_are_listed_under_the_table(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_run(sweep, "scaler-cs", ["scaler=cs"], 0.5)
    failed = sweep / "scaler-none"
    (failed / ".hydra").mkdir(parents=True)
    (failed / "status.json").write_text(json.dumps({"status": "failed", "error": "NonFiniteLossError: nan"}))
    (sweep / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - scaler=none,cs,ls\n")
    main([str(sweep)])
    out = capsys.readouterr().out
    assert "| scaler=cs | 1 | 0.5 (n=1) |" in out
    assert f"- {failed}: failed: NonFiniteLossError: nan" in out
    assert f"- {sweep}: 1 of 3 jobs missing (never started)" in out


@pytest.mark.parametrize("summary,message", [
    ('{"val/loss": 0.', "summary.json cannot be read (JSONDecodeError: "),
    ('{"val/loss": null, "step": 10}', "summary.json: val/loss=None is not a number; "),
    ('{"val/loss": "abc", "step": 10}', "summary.json: val/loss='abc' is not a number; "),
    # json reads NaN: not measured (an infinite value is a divergence, counted as "diverged 1")
    ('{"val/loss": NaN, "step": 10}', "summary.json: val/loss=nan is not a number; "),
])
def test_an_unreadable_summary_or_a_metric_that_is_not_a_number_is_one_line_naming_it(tmp_path, capsys, summary,
                                                                                        message):
    fake_run(tmp_path, "a", ["seed=0"], 0.5)
    fake_run(tmp_path, "b", ["seed=1"], 0.5)
    (tmp_path / "b" / "summary.json").write_text(summary)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"scalelong-aggregate: {tmp_path / 'b'}/{message}"), err


def test_only_completed_runs_count_and_what_was_skipped_is_one_line(tmp_path, capsys):
    """An attempt archived by ckpt_path=null (previous/<time>/) and a directory whose status.json does not say
    completed are not runs of the table; runs without .hydra/ are told apart by their stored configs."""
    cs = fake_run(tmp_path, "scaler-cs", ["scaler=cs"], 0.5)
    fake_run(cs / "previous", "20261207-040000", None, 9.0)  # the attempt before ckpt_path=null
    cs_config = {"scaler": {"_target_": "scalelong.scalers.ConstantScaling", "kappa": 0.5}, "seed": 0}
    fake_run(tmp_path, "copied-cs", None, 0.25, config=cs_config)
    fake_run(tmp_path, "copied-none", None, 0.75, config={"scaler": {"_target_": "scalelong.scalers.NoScaling"},
                                                          "seed": 0})
    unfinished = fake_run(tmp_path, "no-status", ["scaler=ls"], 0.1)
    (unfinished / "status.json").unlink()
    rows = {r["group"]: r for r in aggregate(find_runs([tmp_path]))}
    assert {g: r["n"] for g, r in rows.items()} == {
        "scaler=cs": 1, "scaler._target_=scalelong.scalers.ConstantScaling scaler.kappa=0.5": 1,
        "scaler._target_=scalelong.scalers.NoScaling": 1}
    assert rows["scaler=cs"]["val/loss"].mean == 0.5
    main([str(tmp_path)])
    out = capsys.readouterr().out
    (skipped,) = [line for line in out.splitlines() if line.startswith("Skipped")]
    assert skipped == (f"Skipped 2 directories that are not completed runs: {cs / 'previous' / '20261207-040000'} "
                       f"(an earlier attempt archived by ckpt_path=null); {unfinished} (no status.json)")
