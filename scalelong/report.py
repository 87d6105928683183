"""``scalelong-report``: the CPU reproduction report from the ``repro_cpu_*`` sweeps (issue 10).

    scalelong-report outputs/repro_cpu --out docs/results/cpu_reproduction.md

Reads every run under the directory (the sweeps ``main``, ``kappa``, ``lr`` of ``scripts/cpu_reproduction.py``),
writes the report with a verdict per claim, its figures and the raw per-run summaries
(``<out stem>/runs.csv``, ``<out stem>/fid_curves.csv``). The analysis is :mod:`scalelong.reproduction`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scalelong.reproduction import write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scalelong-report", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="directory holding the sweeps (e.g. outputs/repro_cpu)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/cpu_reproduction.md"))
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.exit(1, f"scalelong-report: {args.root} is not a directory; pass the directory of the repro_cpu "
                       "sweeps, e.g. outputs/repro_cpu (python scripts/cpu_reproduction.py writes it)\n")
    print(write_report(args.root, args.out))


if __name__ == "__main__":
    main()
