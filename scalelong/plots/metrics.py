"""A run's logged series, read back from its ``csv/metrics.csv`` (the keys of docs/metrics.md), and its label.

What the dashboard's figures (:mod:`scalelong.plots.figures`) and page (:mod:`scalelong.plots.page`) read.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from scalelong.errors import ScaleLongError
from scalelong.scalers import SCALERS

Series = dict[int, float]


@dataclass
class Run:
    """One run directory: its label and every logged series (key -> {step: value})."""

    path: Path
    label: str
    series: dict[str, Series] = field(default_factory=dict)

    def get(self, key: str) -> Series:
        return self.series.get(key, {})

    def last(self, key: str) -> float:
        s = self.get(key)
        return s[max(s)] if s else math.nan

    def indices(self, pattern: str) -> list[int]:
        """Sorted i of the keys matching ``pattern`` with one ``(\\d+)`` group, e.g. ``feat/level_(\\d+)``."""
        found = {int(m.group(1)) for k in self.series if (m := re.fullmatch(pattern, k))}
        return sorted(found)


def read_metrics(path: Path) -> dict[str, Series]:
    """key -> {step: value} from a Lightning metrics.csv; the last row wins per (key, step)."""
    series: dict[str, Series] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if not step:
                continue
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series.setdefault(key, {})[int(float(step))] = float(value)
    return series


def run_label(run_dir: Path) -> str:
    """The scaler name and its float options from ``.hydra/config.yaml``, else the directory name."""
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        return run_dir.name
    cfg = OmegaConf.load(config)
    scaler = OmegaConf.to_container(cfg.scaler, resolve=True)
    cls = scaler.pop("_target_").rsplit(".", 1)[-1]
    name = next((n for n, c in SCALERS.items() if c.__name__ == cls), cls)
    options = ", ".join(f"{k}={v:.4g}" for k, v in scaler.items() if isinstance(v, float))
    return f"{name}({options})" if options else name


def load_run(run_dir: str | Path) -> Run:
    """A run from its directory; ScaleLongError naming the directory if it has no metrics.csv."""
    run_dir = Path(run_dir)
    metrics = run_dir / "csv" / "metrics.csv"
    if not metrics.is_file():
        raise ScaleLongError(f"{metrics} does not exist; pass the directory of a scalelong-train run "
                             "(the one holding csv/ and .hydra/)")
    return Run(run_dir, run_label(run_dir), read_metrics(metrics))


def unique_labels(runs: Sequence[Run]) -> None:
    """Append the directory name to labels that several runs share."""
    for run in runs:
        if sum(r.label == run.label for r in runs) > 1:
            run.label = f"{run.label} [{run.path.name}]"


def block_order(name: str) -> tuple[int, int]:
    """Sort key of a block name of ``model.blocks()``: encoder blocks, middle, decoder blocks, ``total``."""
    kind = {"in": 0, "mid": 1, "out": 2, "total": 3}.get(name.split("_")[0], 4)
    digits = re.findall(r"\d+", name)
    return kind, int(digits[0]) if digits else 0
