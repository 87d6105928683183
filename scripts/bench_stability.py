"""Overhead of the ``stability`` callbacks: N training steps with ``callbacks=default`` vs ``callbacks=stability``.

Both arms train the same CPU preset (default: uvit_small on Fashion-MNIST, batch 64, the
defaults of ``conf/train.yaml``) from the same seed in this one process; rounds alternate the two
so machine load hits both alike. Validation, checkpoints and end-of-run samples are off in both,
since they cost the same with or without the bundle. The clock runs from the end of the start
hooks of step ``--skip`` to the end of the last step's hooks, so it holds every periodic
measurement; the one-off work at train start (the noise-ratio histogram) is reported apart.
Keep N a multiple of the longest interval (robustness, 200 steps) for a fair share of it.

    python scripts/bench_stability.py [--steps 400] [--rounds 2] [--skip 5] [OVERRIDE ...]

Prints the median time per step of each arm and their ratio (stability / default).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate

from scalelong.config import CONF_DIR, compose
from scalelong.lit import build_module

log = logging.getLogger("bench_stability")


class StepClock(L.Callback):
    """Wall time from step ``skip``'s start to the last step's end, and of the train-start hooks."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.start = self.end = self.fit_start = self.train_start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == 0 and not self.train_start:
            self.train_start = time.perf_counter() - self.fit_start
        if trainer.global_step == self.skip:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.end = time.perf_counter()

    def per_step(self, steps: int) -> float:
        return (self.end - self.start) / (steps - self.skip)


def run(bundle: str, steps: int, skip: int, overrides: list[str], out: Path) -> StepClock:
    """Train ``steps`` steps with ``callbacks=bundle``; the clock (last in the callback list)."""
    cfg = compose([
        f"callbacks={bundle}", f"trainer.max_steps={steps}", "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "callbacks.checkpoint=null",
        "callbacks.samples=null", f"paths.root_dir={CONF_DIR.parent}", f"paths.run_dir={out / bundle}",
        f"run_name=bench_{bundle}", *overrides,
    ])
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    clock = StepClock(skip)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None] + [clock]
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.fit(module, datamodule=datamodule)
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs per arm, alternating")
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left off the clock")
    parser.add_argument("overrides", nargs="*", help="scalelong-train overrides for both arms")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("lightning").setLevel(logging.WARNING)

    times: dict[str, list[float]] = {"default": [], "stability": []}
    starts: dict[str, list[float]] = {"default": [], "stability": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for bundle in times:
                clock = run(bundle, args.steps, args.skip, args.overrides, Path(tmp) / f"round{r}")
                times[bundle].append(clock.per_step(args.steps))
                starts[bundle].append(clock.train_start)
                log.info("round %d %-9s %.4f s/step, train start %.2f s", r + 1, bundle, times[bundle][-1],
                         clock.train_start)
    base, stab = statistics.median(times["default"]), statistics.median(times["stability"])
    print(f"steps {args.steps} (clock over {args.steps - args.skip}), rounds {args.rounds}, "
          f"overrides {args.overrides or 'none'}")
    print(f"default   {base:.4f} s/step   (train start {statistics.median(starts['default']):.2f} s)")
    print(f"stability {stab:.4f} s/step   (train start {statistics.median(starts['stability']):.2f} s)")
    print(f"ratio stability/default: {stab / base:.4f}  (overhead {100 * (stab / base - 1):+.2f}%)")


if __name__ == "__main__":
    main()
