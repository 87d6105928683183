"""``scalelong-aggregate DIR [DIR ...]``: one table over the runs of a sweep, averaged over seeds.

Completed runs (``status.json``, ``summary.json``) whose overrides agree except for ``seed`` form one
group; each metric is reported as mean ± standard deviation over the group's seeds, with the number of
seeds (``scalelong.sweeps``). Jobs that failed, were interrupted or never ran are listed under the table,
and the directories that are not completed runs (attempts archived under ``previous/``) in one line.

    scalelong-train -m scaler=none,cs,ls seed=0,1,2 trainer.max_steps=2000
    scalelong-aggregate outputs/multirun/2026-11-24_17-00-00 --metrics val/loss
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scalelong.errors import ScaleLongError
from scalelong.sweeps import aggregate, completed_runs, incomplete_jobs, to_markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scalelong-aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--metrics", nargs="*", help="metric names (default: all in summary.json)")
    parser.add_argument("--out", type=Path, help="also write the table to this .md file")
    args = parser.parse_args(argv)
    runs, skipped = completed_runs(args.paths)
    problems = incomplete_jobs(args.paths)
    if not runs and not problems:
        parser.exit(1, f"scalelong-aggregate: no run with summary.json and a completed status.json under "
                       f"{', '.join(map(str, args.paths))}{'; skipped: ' if skipped else ''}{'; '.join(skipped)}\n")
    try:
        table = to_markdown(aggregate(runs, args.metrics))
    except ScaleLongError as err:  # an unreadable summary.json, a metric that is not a number
        parser.exit(1, f"scalelong-aggregate: {err}\n")
    if problems:
        table += "\n\nNot in the table (did not complete):\n" + "\n".join(f"- {line}" for line in problems)
    if skipped:
        what = ("directory that is not a completed run" if len(skipped) == 1
                else "directories that are not completed runs")
        table += f"\n\nSkipped {len(skipped)} {what}: {'; '.join(skipped)}"
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
