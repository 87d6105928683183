"""The runs of a reproduction, read back from their directories and grouped into cells of seeds.

A run directory (``.hydra/config.yaml`` or the config ``status.json`` stores, ``status.json``,
``csv/metrics.csv``, ``train.log``) becomes a :class:`RunResult`: its :class:`Setting` (scaler, κ, number of
LSCs, batch, lr), seed, outcome, FID curve (the FID callback during training), oscillation
(:func:`scalelong.plots.page.summary`) over steps ≥ twice the warm-up (after the warm-up and the first fast
growth of the features), loss spikes and last κ readout. Runs that agree on the setting are the seeds of one
cell.
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from scalelong.eval.speedup import Curve, speedup
from scalelong.kappa_range import num_skips_of
from scalelong.plots.metrics import Run, load_run
from scalelong.plots.page import summary
from scalelong.reproduction.study import Study
from scalelong.runs.status import find_run_dirs, read_status, run_config
from scalelong.scalers import SCALERS
from scalelong.stats import Stat, stat

_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")
# scalelong.train logs "run <dir>: <model> with <scaler>, <N> LSCs, ..." as an attempt (the first or a resume) begins
_ATTEMPT_START = re.compile(r"\]\[scalelong\.train\]\[INFO\] run .+: \w+ with \w+, \d+ LSCs")
ENDED = ("completed", "diverged")  # outcomes a claim reads; failed and running runs are reported, not used


@dataclass(frozen=True, order=True)
class Setting:
    """What a run computes, apart from its seed."""

    skips: int
    batch: int
    scaler: str
    kappa: float | None  # κ of cs / cs_reversed, None for the other scalers
    lr: float

    @property
    def cell(self) -> tuple[int, int]:
        """The architecture and batch: (N, b)."""
        return self.skips, self.batch


@dataclass
class RunResult:
    """One run of a sweep, read back from its directory."""

    path: Path
    setting: Setting
    seed: int
    status: str  # completed | diverged (non-finite loss) | failed | running
    fid: Curve | None
    oscillation: dict[str, float] = field(default_factory=dict)
    kappas: list[float] = field(default_factory=list)
    ls_fit: dict[str, float] = field(default_factory=dict)
    spikes: float = math.nan  # loss spikes counted by callbacks.gradients over the run
    minutes: float = math.nan

    @property
    def final_fid(self) -> float:
        """FID at the last measurement of a completed run; inf for a run that diverged."""
        if self.status == "diverged":
            return math.inf
        return float(self.fid.values[-1]) if self.status == "completed" and self.fid is not None else math.nan


def scaler_name(config: DictConfig) -> str:
    """The ``conf/scaler`` option of a run's composed config (the class name if it is none of them)."""
    cls = config.scaler._target_.rsplit(".", 1)[-1]
    return next((n for n, c in SCALERS.items() if c.__name__ == cls), cls)


def fid_curve(run: Run | None) -> Curve | None:
    """The FID callback's curve of a run's metrics (its first ``fid_*`` series), None without one."""
    key = next((k for k in run.series if k.startswith("fid_")), None) if run is not None else None
    if key is None:
        return None
    steps = sorted(run.get(key))
    return Curve(np.array(steps), np.array([run.get(key)[s] for s in steps]))


def setting_of(config: DictConfig) -> Setting:
    """The :class:`Setting` of a run's composed config."""
    scaler = scaler_name(config)
    kappa = config.scaler.get("kappa") if scaler in ("cs", "cs_reversed") else None
    return Setting(num_skips_of(config.model), int(config.data.batch_size), scaler,
                   None if kappa is None else float(kappa), float(config.optim.lr))


def _attempts(run_dir: Path) -> list[list[tuple[datetime, str]]]:
    """The timestamped lines of the run's ``train.log`` per attempt (a line ``run <dir>: <model> ...`` starts one,
    the first or a resume)."""
    try:
        lines = (run_dir / "train.log").read_text().splitlines()
    except OSError:
        return []
    attempts: list[list[tuple[datetime, str]]] = []
    for line in lines:
        if not (m := _LOG_TIME.match(line)):
            continue
        if _ATTEMPT_START.search(line) or not attempts:
            attempts.append([])
        attempts[-1].append((datetime.strptime(f"{m.group(1)}.{m.group(2)}", "%Y-%m-%d %H:%M:%S.%f"), line))
    return attempts


def wall_minutes(run_dir: Path) -> float:
    """Minutes the run's attempts took, from its ``train.log``: each attempt from its first timestamped line to its
    last, summed, so that the time between an interrupted attempt and its resume, a sitting later, is not
    counted."""
    attempts = _attempts(run_dir)
    spans = [(a[-1][0] - a[0][0]).total_seconds() / 60 for a in attempts]
    return sum(spans) if sum(len(a) for a in attempts) > 1 else math.nan


def log_matches(run_dir: Path, pattern: str | re.Pattern) -> list[tuple[float, re.Match]]:
    """(the run's wall minutes, counted as :func:`wall_minutes` counts them, and the match) of each ``train.log``
    line that ``pattern`` matches, e.g. each FID measurement."""
    found, done = [], 0.0
    for attempt in _attempts(run_dir):
        start = attempt[0][0]
        found += [(done + (t - start).total_seconds() / 60, m)
                  for t, line in attempt if (m := re.search(pattern, line))]
        done += (attempt[-1][0] - start).total_seconds() / 60
    return found


def elapsed_minutes(run_dir: Path, pattern: str | re.Pattern) -> list[float]:
    """The run's wall minutes at each ``train.log`` line that matches ``pattern`` (:func:`log_matches`)."""
    return [minutes for minutes, _ in log_matches(run_dir, pattern)]


def attempt_count(run_dir: Path) -> int:
    """How many attempts (the first and each resume) the run's ``train.log`` records."""
    return len(_attempts(run_dir))


def load_result(run_dir: Path) -> RunResult:
    """A run directory of a sweep as a :class:`RunResult` (metrics that are missing stay empty)."""
    config = run_config(run_dir)
    status = read_status(run_dir) or {"status": "running"}
    outcome = status["status"]
    if outcome == "failed" and "NonFiniteLoss" in status.get("error", ""):
        outcome = "diverged"
    run = load_run(run_dir) if (run_dir / "csv" / "metrics.csv").is_file() else None
    fid = fid_curve(run)
    result = RunResult(run_dir, setting_of(config), int(config.seed), outcome, fid, minutes=wall_minutes(run_dir))
    if run is not None and outcome == "completed":
        result.oscillation = summary(run, start=2 * int(config.optim.warmup_steps))
        result.kappas = [run.last(f"kappa/skip_{i}") for i in run.indices(r"kappa/skip_(\d+)")]
        result.ls_fit = {k: run.last(f"ls/{k}") for k in ("fit_kappa", "fit_r2") if run.get(f"ls/{k}")}
    if run is not None and run.get("loss/spikes"):
        result.spikes = float(run.last("loss/spikes"))
    return result


def load_results(root: str | Path) -> list[RunResult]:
    """Every run directory with a config and a sweep's outputs at or below ``root``
    (:func:`scalelong.runs.status.find_run_dirs`: not the earlier attempts archived under ``previous/``)."""
    dirs = [d for d in find_run_dirs(Path(root))[0] if run_config(d) is not None]
    return [load_result(d) for d in dirs if (d / "csv").is_dir() or (d / "status.json").is_file()]


def model_targets(root: str | Path) -> set[str]:
    """The model classes of the runs at or below ``root`` (which study a directory holds)."""
    return {str(OmegaConf.load(p).model._target_) for p in Path(root).rglob(".hydra/config.yaml")}


class Sweep:
    """The runs of a reproduction grouped by setting, with the lookups every claim uses. The *main* cells are
    the runs at the study's recipe lr and κ; other lrs are the stability frontier's, other κs claim 6's."""

    def __init__(self, results: Sequence[RunResult], study: Study) -> None:
        self.results, self.study = list(results), study
        groups: dict[Setting, list[RunResult]] = defaultdict(list)
        for r in self.results:
            groups[r.setting].append(r)
        self.groups = dict(sorted(groups.items()))
        main = [s for s in self.groups if study.is_recipe_lr(s.lr) and (s.kappa is None or
                                                                          math.isclose(s.kappa, study.kappa))]
        self.cells = sorted({s.cell for s in main})

    def method(self, setting: Setting) -> str:
        """The scaler's name, with κ when it is not the main cells'."""
        if setting.kappa is not None and not math.isclose(setting.kappa, self.study.kappa):
            return f"{setting.scaler}(κ={setting.kappa:g})"
        return setting.scaler

    def runs(self, scaler: str, skips: int, batch: int, lr: float | None = None, kappa: float | None = None
             ) -> list[RunResult]:
        if kappa is None and scaler in ("cs", "cs_reversed"):
            kappa = self.study.kappa
        return self.groups.get(Setting(skips, batch, scaler, kappa, self.study.lr if lr is None else lr), [])

    def stat(self, metric: Callable[[RunResult], float], scaler: str, skips: int, batch: int, **kw) -> Stat:
        """``metric`` over the ended seeds of one setting (a diverged run's FID is +∞: it counts as diverged)."""
        return stat(metric(r) for r in self.runs(scaler, skips, batch, **kw) if r.status in ENDED)

    def paired(self, scaler: str, skips: int, batch: int, **kw) -> list[tuple[RunResult, RunResult]]:
        """(none run, ``scaler`` run) pairs of the same seed, both completed."""
        return pairs(self.runs("none", skips, batch), self.runs(scaler, skips, batch, **kw), ("completed",))

    def speedups(self, scaler: str, skips: int, batch: int, at: float) -> list[float]:
        """Per seed: the speed-up (:func:`scalelong.eval.speedup.speedup`) of ``scaler`` over none to the FID
        none logged at fraction ``at`` of training; 0 when ``scaler`` never reaches it. Pairs of which a run
        logged no FID curve have no speed-up."""
        out = []
        for base, run in self.paired(scaler, skips, batch):
            if base.fid is None or run.fid is None:
                continue
            k = int(np.abs(base.fid.steps - at * base.fid.steps[-1]).argmin())
            out.append(speedup(base.fid, run.fid, float(base.fid.values[k])) or 0.0)
        return out

    def fid_gains(self, scaler: str, skips: int, batch: int) -> list[float]:
        """Per seed: final FID of none / final FID of ``scaler`` (> 1: the scaler is better)."""
        return [base.final_fid / run.final_fid for base, run in self.paired(scaler, skips, batch)]

    def lrs(self, cell: tuple[int, int]) -> list[float]:
        """The learning rates run in a cell."""
        return sorted({s.lr for s in self.groups if s.cell == cell})


def pairs(base: Iterable[RunResult], runs: Iterable[RunResult], outcomes: Sequence[str] = ENDED
          ) -> list[tuple[RunResult, RunResult]]:
    """(base run, run) of the same seed: the base run completed, the other one ended in ``outcomes``."""
    by_seed = {r.seed: r for r in base if r.status == "completed"}
    return [(by_seed[r.seed], r) for r in runs if r.seed in by_seed and r.status in outcomes]


# ---- the raw per-run summaries a report commits, and reading them back ---------------------------------------

RUN_COLUMNS = ("run", "scaler", "kappa", "skips", "batch", "lr", "seed", "status", "final_fid", "best_fid",
               "ls_fit_kappa", "ls_fit_r2", "minutes")


def write_runs_csv(results: Sequence[RunResult], path: Path) -> None:
    """One row per run: setting, seed, outcome, final and best FID, LS fit, minutes, oscillation figures and
    the last κ readout (``kappa_1`` … ``kappa_N``); :func:`read_results_csv` reads it back."""
    keys = sorted({k for r in results for k in r.oscillation})
    skips = max((len(r.kappas) for r in results), default=0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*RUN_COLUMNS, *keys, *(f"kappa_{i}" for i in range(1, skips + 1))])
        for r in results:
            s = r.setting
            best = float(r.fid.values.min()) if r.fid is not None and len(r.fid.values) else math.nan
            writer.writerow([r.path.name, s.scaler, "" if s.kappa is None else s.kappa, s.skips, s.batch, s.lr,
                             r.seed, r.status, r.final_fid, best, r.ls_fit.get("fit_kappa", ""),
                             r.ls_fit.get("fit_r2", ""), f"{r.minutes:.2f}", *(r.oscillation.get(k, "") for k in keys),
                             *(r.kappas + [""] * (skips - len(r.kappas)))])


def write_fid_csv(results: Sequence[RunResult], path: Path) -> None:
    """One row per run and FID measurement."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", "fid"])
        for r in results:
            if r.fid is not None:
                writer.writerows([r.path.name, int(s), float(v)] for s, v in zip(r.fid.steps, r.fid.values))


def read_results_csv(runs_csv: Path, fid_csv: Path) -> list[RunResult]:
    """The runs of a committed report from its ``runs.csv`` and ``fid_curves.csv``, so that its verdicts can be
    recomputed without the run directories (sample grids and train.log wall times are not in them)."""
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(fid_csv, newline="") as f:
        for row in csv.DictReader(f):
            curves[row["run"]].append((int(row["step"]), float(row["fid"])))
    results = []
    with open(runs_csv, newline="") as f:
        for row in csv.DictReader(f):
            points = sorted(curves.get(row["run"], []))
            fid = Curve(np.array([s for s, _ in points]), np.array([v for _, v in points])) if points else None
            setting = Setting(int(row["skips"]), int(row["batch"]), row["scaler"],
                              float(row["kappa"]) if row["kappa"] else None, float(row["lr"]))
            extra = {k: float(v) for k, v in row.items() if k not in RUN_COLUMNS and v not in ("", None)}
            kappas = [extra.pop(k) for k in sorted((k for k in extra if k.startswith("kappa_")),
                                                   key=lambda k: int(k.split("_")[1]))]
            ls_fit = {k: float(row[f"ls_{k}"]) for k in ("fit_kappa", "fit_r2") if row[f"ls_{k}"]}
            result = RunResult(Path(row["run"]), setting, int(row["seed"]), row["status"], fid, extra, kappas, ls_fit,
                               extra.get("loss_spikes", math.nan), float(row["minutes"]))
            results.append(result)
    return results
