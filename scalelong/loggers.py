"""A CSV logger that survives resuming and failures: the same run keeps one ``metrics.csv``, each
row written once, and no write can leave the file shorter than it was."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from scalelong.atomic import write_atomic, write_error_message
from scalelong.errors import OutputError


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv and rewrites it in place when a new
    column appears; this one keeps the file, appends, and rewrites through a temporary file."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])

    def save(self) -> None:
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        new_keys = self._record_new_keys()
        if new_keys or not path.is_file():  # a new column: the whole file, atomically
            old = list(csv.DictReader(path.open(newline=""))) if path.is_file() else []
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(old + self.metrics)
            write_atomic(path, text.getvalue())
        else:  # append; on failure cut the file back to its previous length
            size = path.stat().st_size
            try:
                with path.open("a", newline="") as f:
                    csv.DictWriter(f, fieldnames=self.metrics_keys).writerows(self.metrics)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as err:
                os.truncate(path, size)
                raise OutputError(write_error_message(path, err)) from err
        self.metrics = []

    def rows_on_disk(self) -> int:
        """Data rows in metrics.csv after the pending ones are saved."""
        self.save()
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return 0
        with path.open(newline="") as f:
            return max(0, sum(1 for _ in csv.reader(f)) - 1)

    def keep_rows(self, n: int) -> None:
        """Drop the rows after the first ``n`` (those a resumed run computes again)."""
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], list(reader)
        if len(rows) <= n:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows[:n])
        write_atomic(path, text.getvalue())


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose resumed runs append to the run's metrics.csv instead of replacing it.

    Every checkpoint records how many rows the file held when it was written (``RunFiles``); a run
    resumed from it first drops the rows after those, so each step's rows appear exactly once.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
