"""``scalelong-report``: a CPU reproduction's report from its sweeps.

    scalelong-report outputs/repro_cpu                    # conv UNet study: docs/results/cpu_reproduction.md
    scalelong-report outputs/repro_uvit --study uvit      # U-ViT study: docs/results/cpu_reproduction_uvit.md

Reads every run under the directory (the sweeps of ``scripts/cpu_reproduction.py``), writes the report with a
verdict per claim, its figures and the raw per-run summaries. The study (``conf/reproduction/<name>.yaml``) is
inferred from the runs' backbone unless given; the analysis is :mod:`scalelong.reproduction`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from scalelong.errors import ScaleLongError
from scalelong.reproduction import load_study, studies, write_report
from scalelong.reproduction.results import model_targets
from scalelong.reproduction.study import study_of_runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scalelong-report", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="directory holding the sweeps (e.g. outputs/repro_cpu)")
    parser.add_argument("--study", choices=studies(), help="default: inferred from the runs' backbone")
    parser.add_argument("--out", type=Path, help="default: the study's report path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="scalelong-report: %(message)s")  # what the runs lack
    if not args.root.is_dir():
        parser.exit(1, f"scalelong-report: {args.root} is not a directory; pass the directory of a reproduction's "
                       "sweeps, e.g. outputs/repro_cpu (python scripts/cpu_reproduction.py writes it)\n")
    try:
        study = load_study(args.study or study_of_runs(model_targets(args.root)))
        print(write_report(args.root, args.out or study.report, study))
    except ScaleLongError as err:  # a bad --study, mixed backbones, an unreadable summary.json
        parser.exit(1, f"scalelong-report: {err}\n")


if __name__ == "__main__":
    main()
