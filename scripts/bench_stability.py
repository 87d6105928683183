"""Overhead of the ``stability`` callbacks: N training steps with ``callbacks=default`` vs ``callbacks=stability``.

Both arms train the same CPU preset (default: uvit_small on Fashion-MNIST, batch 64, the
defaults of ``conf/train.yaml``) from the same seed in this one process; rounds alternate the two
so machine load hits both alike. Validation, checkpoints and end-of-run samples are off in both,
since they cost the same with or without the bundle. The clock runs from the end of the start
hooks of step ``--skip`` to the end of the last step's hooks, so it holds every periodic
measurement; the one-off work at train start (the noise-ratio histogram) is reported apart.
Keep N a multiple of the longest interval (robustness, 500 steps) for a fair share of it.

On a shared machine the load drifts between runs by more than the bundle costs, so the stability
arm also times every hook of the stability callbacks (those ``callbacks=stability`` adds to
``callbacks=default``) inside the run: h = that time per step, and h / (step time − h) is the
overhead measured within one run, free of the drift between runs.

    python scripts/bench_stability.py [--steps 500] [--rounds 2] [--skip 5] [OVERRIDE ...]

Prints the median time per step of each arm, their ratio (stability / default) and the in-run
overhead of the hooks.
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


HOOKS = ("on_train_start", "on_train_batch_start", "on_before_optimizer_step", "on_train_batch_end")


def time_hooks(callback: L.Callback, spent: dict[str, float]) -> None:
    """Wrap the training hooks ``callback`` defines so their wall time adds up in ``spent[hook]``."""
    for hook in HOOKS:
        if getattr(type(callback), hook) is getattr(L.Callback, hook):
            continue
        original = getattr(callback, hook)

        def timed(*args, _original=original, _hook=hook, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_hook] = spent.get(_hook, 0.0) + time.perf_counter() - start

        setattr(callback, hook, timed)


def run(bundle: str, steps: int, skip: int, overrides: list[str], out: Path) -> tuple[StepClock, dict[str, float]]:
    """Train ``steps`` steps with ``callbacks=bundle``; the clock and the stability callbacks' hook times."""
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
    default_names = set(compose(["callbacks=default"]).callbacks)
    spent: dict[str, float] = {}
    callbacks = []
    for name, c in cfg.callbacks.items():
        if c is not None:
            callbacks.append(instantiate(c))
            if name not in default_names:
                time_hooks(callbacks[-1], spent)
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=[*callbacks, clock], logger=loggers or False)
    trainer.fit(module, datamodule=datamodule)
    return clock, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs per arm, alternating")
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left off the clock")
    parser.add_argument("overrides", nargs="*", help="scalelong-train overrides for both arms")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("lightning").setLevel(logging.WARNING)

    times: dict[str, list[float]] = {"default": [], "stability": []}
    starts: dict[str, list[float]] = {"default": [], "stability": []}
    in_hooks: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for bundle in times:
                clock, spent = run(bundle, args.steps, args.skip, args.overrides, Path(tmp) / f"round{r}")
                times[bundle].append(clock.per_step(args.steps))
                starts[bundle].append(clock.train_start)
                log.info("round %d %-9s %.4f s/step, train start %.2f s", r + 1, bundle, times[bundle][-1],
                         clock.train_start)
                if bundle == "stability":
                    periodic = sum(v for k, v in spent.items() if k != "on_train_start") / args.steps
                    in_hooks.append(periodic / (times[bundle][-1] - periodic))
                    log.info("  stability hooks: %s; %.2f%% of the rest of the step", ", ".join(
                        f"{k} {v:.2f} s" for k, v in spent.items()), 100 * in_hooks[-1])
    base, stab = statistics.median(times["default"]), statistics.median(times["stability"])
    print(f"steps {args.steps} (clock over {args.steps - args.skip}), rounds {args.rounds}, "
          f"overrides {args.overrides or 'none'}")
    print(f"default   {base:.4f} s/step   (train start {statistics.median(starts['default']):.2f} s)")
    print(f"stability {stab:.4f} s/step   (train start {statistics.median(starts['stability']):.2f} s)")
    print(f"ratio stability/default: {stab / base:.4f}  (overhead {100 * (stab / base - 1):+.2f}%)")
    print(f"in-run overhead of the stability hooks: {100 * statistics.median(in_hooks):.2f}% "
          f"(rounds: {', '.join(f'{100 * h:.2f}%' for h in in_hooks)})")


if __name__ == "__main__":
    main()
