"""A CSV logger that survives resuming: the same run keeps one ``metrics.csv``."""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; this one keeps it and appends."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose resumed runs append to the run's metrics.csv instead of replacing it.

    Rows of steps after the last checkpoint of an interrupted run stay in the file; readers take
    the last row per (step, key), which is the resumed run's.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
