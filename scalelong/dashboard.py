"""``scalelong-dashboard``: plots and one HTML page comparing runs' stability measurements.

    scalelong-dashboard RUN_DIR [RUN_DIR ...] [--out DIR] [--start STEP] [--stop STEP]
    scalelong-dashboard --wandb ENTITY/PROJECT [--num-skips N]   # a saved wandb workspace

Reads each run's ``csv/metrics.csv`` (keys of docs/metrics.md, written by the stability
callbacks), ``noise_ratio/histogram.npz`` and ``.hydra/config.yaml`` (the run's label: its scaler
and float options, e.g. ``cs(kappa=0.5)``), and writes into ``--out`` (default
``dashboard/``):

* ``feature_energy.png`` — F of each decoder level h_i vs step, one panel per skip i (Thm 3.1).
* ``skip_energy.png`` — F of each skip tensor s_i before scaling vs step.
* ``oscillation_heatmap.png`` — ``osc/feat/level_{i}/mrc``, skip i × step, one panel per run,
  one colour scale (paper Fig. 1 as a map).
* ``grad_norms.png`` — gradient norm per block vs step (Thm 3.3).
* ``kappa.png`` — last κ_i vs i per run, with the CS curves κ^(i−1) at the ends of the Sec. 4.1
  range (shaded, as in Fig. 7) and the LS fit a·κ^(i−1).
* ``noise_ratio.png`` — histogram of r_t (Fig. 3b).
* ``robustness.png`` — ‖net(x_t + δ) − net(x_t)‖/‖δ‖ and M0 vs step (Thm 3.4).
* ``loss.png`` — val/loss and the loss by timestep quartile vs step.
* ``summary.csv`` and ``index.html`` — the run-level oscillation figures over the steps
  ``--start`` … ``--stop`` (:func:`scalelong.oscillation.range_oscillation`) and the pictures;
  ``oscillation_series.csv`` — the same figures per feature and gradient series.

Runs share every axis, so their curves compare directly. Matplotlib runs with the Agg canvas.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from scalelong.errors import ScaleLongError
from scalelong.plots.metrics import load_run
from scalelong.plots.page import build_dashboard
from scalelong.plots.workspace import build_workspace

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``scalelong-dashboard``)."""
    parser = argparse.ArgumentParser(prog="scalelong-dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run directories of scalelong-train")
    parser.add_argument("--out", default="dashboard", help="output directory of the PNGs and index.html")
    parser.add_argument("--start", type=int, default=None, help="first step of the run-level oscillation figures")
    parser.add_argument("--stop", type=int, default=None, help="last step of the run-level oscillation figures")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="save a wandb workspace with these panels")
    parser.add_argument("--num-skips", type=int, default=None,
                        help="LSC count for the workspace panels (default: from the first run, else 6)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.runs and not args.wandb:
        parser.error("pass run directories, --wandb ENTITY/PROJECT, or both")
    try:
        if args.runs:
            page = build_dashboard(args.runs, args.out, args.start, args.stop)
            print(page)
        if args.wandb:
            entity, _, project = args.wandb.partition("/")
            if not entity or not project:
                raise ScaleLongError(f"--wandb {args.wandb!r} must be ENTITY/PROJECT")
            num_skips = args.num_skips or (
                max(load_run(args.runs[0]).indices(r"feat/level_(\d+)"), default=6) if args.runs else 6
            )
            workspace = build_workspace(entity, project, num_skips).save()
            print(workspace.url)
    except ScaleLongError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
