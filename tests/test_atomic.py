"""Files written whole or not at all."""

from __future__ import annotations

import pytest

from scalelong.atomic import write_atomic
from scalelong.errors import OutputError


def test_a_full_disk_keeps_the_previous_file_and_names_the_path(full_disk):
    disk, fill = full_disk
    target = disk / "summary.json"
    write_atomic(target, "old")
    fill()
    with pytest.raises(OutputError, match=f"cannot write {target}: the disk is full; the previous version"):
        write_atomic(target, "new" * 10_000)
    assert target.read_text() == "old"
    assert sorted(p.name for p in disk.iterdir()) in (["ballast", "summary.json"], ["summary.json"])  # no temporary
