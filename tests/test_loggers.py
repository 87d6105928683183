"""The resumable CSV logger: a failed append keeps every row already on disk."""

from __future__ import annotations

import pytest

from scalelong.errors import OutputError
from scalelong.loggers import ResumableCSVLogger


def test_a_metrics_append_on_a_full_disk_keeps_every_previous_row(full_disk):
    disk, fill = full_disk
    logger = ResumableCSVLogger(disk, name="csv", version="")
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.save()
    metrics = disk / "csv" / "metrics.csv"
    before = metrics.read_text()
    fill()
    logger.experiment.metrics = [{"train/loss": 0.5, "step": s} for s in range(1, 1000)]  # more than a page
    with pytest.raises(OutputError, match=f"cannot write {metrics}: the disk is full"):
        logger.save()
    assert metrics.read_text() == before
    logger.experiment.metrics = [{"train/loss": 0.5, "val/loss": 0.4, "step": 1}]  # a new column: a rewrite
    with pytest.raises(OutputError, match=f"cannot write {metrics}: the disk is full"):
        logger.save()
    assert metrics.read_text() == before and not list(metrics.parent.glob(".*"))
