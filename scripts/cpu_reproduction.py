"""A whole CPU reproduction in one command: a study's sweeps, then its report.

    python scripts/cpu_reproduction.py                      # conv UNet: 84 runs, then docs/results/cpu_reproduction.md
    python scripts/cpu_reproduction.py --study uvit --jobs 1   # U-ViT: docs/results/cpu_reproduction_uvit.md
    python scripts/cpu_reproduction.py --report-only        # rewrite the report from the runs on disk
    python scripts/cpu_reproduction.py --jobs 1 -- trainer.max_steps=100   # extra overrides for every sweep

A study (``conf/reproduction/<name>.yaml``) names its sweeps, ``conf/experiment/<recipe>_<sweep>.yaml``. Each
sweep writes to ``<out>/<sweep>/`` (a fixed directory, so running the command again skips finished
runs and resumes interrupted ones). Sweeps run one after the other, each with ``--jobs`` parallel jobs
(Hydra's joblib launcher when more than one, one thread per job); the wall and CPU minutes of each sweep
are appended to ``<out>/budget.json``. The report is ``scalelong-report`` over ``<out>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from scalelong.reproduction import BUDGET_FILE, load_study, studies, write_report

log = logging.getLogger("cpu_reproduction")


def children_cpu_seconds() -> float:
    """CPU time of every finished child process (the sweep and its joblib workers), user + system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def append_budget(path: Path, record: dict) -> None:
    """Add one sweep's measured wall and CPU minutes to the list the report's budget section reads."""
    records = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps([*records, record], indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="conv_unet", choices=studies(), help="conf/reproduction/<study>.yaml")
    parser.add_argument("--out", type=Path, help="sweep directories go here (default: the study's)")
    parser.add_argument("--report", type=Path, help="default: the study's report path")
    parser.add_argument("--jobs", type=int, default=2, help="parallel runs (one CPU thread each)")
    parser.add_argument("--sweeps", nargs="*", help="some of the study's sweeps (default: all, in its order)")
    parser.add_argument("--report-only", action="store_true", help="do not train; only write the report")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every sweep (after --)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    study = load_study(args.study)
    args.out, args.report = args.out or study.out, args.report or study.report
    unknown = sorted(set(args.sweeps or ()) - set(study.sweeps))
    if unknown:
        parser.error(f"--sweeps {' '.join(unknown)}: not a sweep of study {study.name}; "
                     f"choose from {' '.join(study.sweeps)}")
    if not args.report_only:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for name in args.sweeps or study.sweeps:
            start, cpu = time.perf_counter(), children_cpu_seconds()
            parallel = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"] if args.jobs > 1 else []
            command = [sys.executable, "-m", "scalelong.train", "-m", f"experiment={study.sweep_experiment(name)}",
                       *parallel, f"hydra.sweep.dir={args.out / name}", *args.overrides]
            log.info("sweep %s: %s", name, " ".join(command))
            done = subprocess.run(command, env=env, check=False)
            record = {"sweep": name, "jobs": args.jobs, "exit": done.returncode,
                      "wall_minutes": (time.perf_counter() - start) / 60,
                      "cpu_minutes": (children_cpu_seconds() - cpu) / 60}
            log.info("sweep %s: %s", name, record)
            append_budget(args.out / BUDGET_FILE, record)
    write_report(args.out, args.report, study)
    log.info("wrote %s", args.report)


if __name__ == "__main__":
    main()
