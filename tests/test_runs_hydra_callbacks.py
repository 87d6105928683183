"""Hydra callbacks of scalelong-train: an unwritable output directory is one line."""

from __future__ import annotations

import pytest

from scalelong.config import compose
from scalelong.runs.hydra_callbacks import OutputDirCheck


def test_an_unwritable_output_directory_is_one_line_before_hydra_creates_the_run(tmp_path):
    (tmp_path / "a_file").write_text("")
    output_dir = tmp_path / "a_file" / "outputs"
    cfg = compose(["data=digits", f"paths.output_dir={output_dir}"], return_hydra_config=True)
    with pytest.raises(SystemExit) as exit_:
        OutputDirCheck().on_run_start(config=cfg)
    assert exit_.value.code == (
        f"scalelong-train: cannot create or write the run directory {output_dir}/runs/data-digits (Not a directory); "
        f"set paths.output_dir to a writable directory (paths.output_dir={output_dir})")
    OutputDirCheck().on_run_start(config=compose([f"paths.output_dir={tmp_path}/ok"], return_hydra_config=True))
    assert (tmp_path / "ok" / "runs" / "default").is_dir()
