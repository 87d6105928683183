"""status.json: written whole, read back, None when missing or unreadable."""

from __future__ import annotations

from scalelong.runs.status import read_status, write_status


def test_status_round_trips_and_a_missing_or_torn_file_reads_as_none(tmp_path):
    assert read_status(tmp_path) is None
    write_status(tmp_path, "failed", error="ConfigError: optim.lr=-1", step=3)
    assert read_status(tmp_path) == {"status": "failed", "error": "ConfigError: optim.lr=-1", "step": 3}
    (tmp_path / "status.json").write_text('{"status": "runn')
    assert read_status(tmp_path) is None
