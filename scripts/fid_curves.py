"""FID against training steps and wall time of named experiments (conf/experiment/), with a table and a plot.

    python scripts/fid_curves.py fmnist_uvit_deep presets/uvit_deep_10k --guidance 2 --steps 10
    python scripts/fid_curves.py --out docs/results/demo demo/unet16_msnr demo/unet16_msnr_cos
    python scripts/fid_curves.py --report-only                    # rebuild docs/results/presets/README.md
    python scripts/fid_curves.py presets/uvit_deep --out outputs/check --samples 64 --steps 3 -- debug=tiny

Each experiment is trained once in ``outputs/runs/fid_curves-<experiment>`` (an interrupted run resumes),
each of its checkpoints scored by ``scalelong-eval``, and ``--out`` gets one JSON per experiment, the best
checkpoint's sample grid, ``README.md`` and ``fid_curves.png`` (:mod:`scalelong.fid_curves`). Overrides after
``--`` apply to every experiment and name its run and results.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from scalelong.config import CONF_DIR
from scalelong.fid_curves import CurveRun, Scoring, write_report

ROOT = Path(__file__).resolve().parent.parent


def rerun_command(parser: argparse.ArgumentParser, args: argparse.Namespace, experiment: str,
                  overrides: list[str]) -> str:
    """The command that scores ``experiment`` as ``args`` do (options at their default left out), for the report."""
    defaults = vars(parser.parse_args([]))
    flags = []
    for key, value in vars(args).items():
        if key not in ("experiments", "report_only") and value != defaults[key]:
            value = value.relative_to(ROOT) if isinstance(value, Path) and value.is_relative_to(ROOT) else value
            flags += [f"--{key.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    extra = ["--", *overrides] if overrides else []
    return shlex.join(["python", "scripts/fid_curves.py", experiment, *flags, *extra])


def main() -> None:
    split = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)
    argv, overrides = sys.argv[1:split], sys.argv[split + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiments", nargs="*", help="names under conf/experiment/, e.g. presets/uvit_deep")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "presets", help="results folder")
    parser.add_argument("--samples", type=int, default=1000, help="samples per FID")
    parser.add_argument("--sampler", default=None, help="override the sampler (default: scalelong-eval's)")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps")
    parser.add_argument("--guidance", type=float, default=1.0,
                        help="classifier-free guidance scale (class-conditional experiments); results get _cfg<s>")
    parser.add_argument("--report-only", action="store_true", help="rebuild the table and plot from the JSONs")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.experiments and not args.report_only:
        parser.error("name at least one experiment of conf/experiment/, or pass --report-only")
    for name in args.experiments:
        if not (CONF_DIR / "experiment" / f"{name}.yaml").is_file():
            parser.error(f"experiment {name!r} is not a file of conf/experiment/; name one as experiment= takes it, "
                         "e.g. fmnist_uvit_deep or presets/uvit_deep_10k")
    scoring = Scoring(args.samples, args.sampler, args.steps, args.guidance)
    args.out.mkdir(parents=True, exist_ok=True)
    for experiment in [] if args.report_only else args.experiments:
        run = CurveRun(ROOT, experiment, tuple(overrides))
        run.train()
        rows = run.score(scoring)
        run.write_result(args.out, scoring, rows, rerun_command(parser, args, experiment, overrides))
        for r in rows:
            logging.info("%s step %d wall %.0fs %s %.1f", run.name, r["step"], r["wall_s"], r["metric"], r["fid"])
    logging.info("wrote %s", write_report(args.out))


if __name__ == "__main__":
    main()
