"""Framework overhead: ``scalelong-train``'s time per step against a bare PyTorch loop over the same model,
optimiser (AdamW with its parameter groups and warm-up schedule), data loader, batch and loss.

The Lightning arms are ``scalelong-train``'s trainer (:func:`scalelong.runs.trainer.build_trainer`: the config's
callbacks, the CSV logger, ``RunFiles``, atomic checkpoints) with the default callbacks (EMA, LR monitor, logging
every ``log_every_n_steps``) or ``callbacks=stability``. Validation, interval checkpoints and the end-of-run sample
grid are off in every arm: they are work a run asks for, which a bare loop would do at the same cost; the progress
bar is off. The clock runs from the start of step ``skip`` to the end of the last step, so it leaves out setup and
holds every periodic measurement due in between; the one-off work at train start (the noise-ratio histogram) is
reported apart.

A measurement whose interval is longer than a round (robustness, every 500 steps) runs once per round, at its last
step, and its time there counts as 1/interval of it per step (``amortised``), the time it adds to a long run.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from scalelong.bench.measure import Precision, ms, ratio
from scalelong.bench.table import Row
from scalelong.config import compose
from scalelong.lit import build_module
from scalelong.runs.trainer import build_trainer

log = logging.getLogger(__name__)

TARGETS = {"default": ("<=", 1.03), "stability": ("<=", 1.05)}
HOOKS = ("on_train_batch_start", "on_before_optimizer_step", "on_train_batch_end")


class StepClock(L.Callback):
    """Wall time from the start of step ``skip`` to the end of the last step, and of the train-start hooks."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.start = self.end = self.fit_start = self.train_start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == 0 and not self.train_start:
            self.train_start = time.perf_counter() - self.fit_start
        if trainer.global_step == self.skip:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.end = time.perf_counter()


def time_last_step(callback: L.Callback, last: int, spent: list[float]) -> None:
    """Wrap the step hooks ``callback`` defines so that their time at training step ``last`` adds up in ``spent``."""
    for hook in HOOKS:
        if getattr(type(callback), hook) is getattr(L.Callback, hook):
            continue
        original = getattr(callback, hook)

        def timed(trainer: L.Trainer, *args: Any, _original: Any = original, _hook: str = hook, **kwargs: Any) -> Any:
            step = trainer.global_step - (_hook == "on_train_batch_end")
            start = time.perf_counter()
            try:
                return _original(trainer, *args, **kwargs)
            finally:
                if step == last:
                    spent.append(time.perf_counter() - start)

        setattr(callback, hook, timed)


def arm_config(overrides: Sequence[str], bundle: str, steps: int, run_dir: Path, precision: Precision,
               compiled: bool) -> DictConfig:
    """``scalelong-train``'s config with ``overrides`` and ``callbacks=bundle``, for ``steps`` steps in ``run_dir``."""
    device = ["trainer=gpu", f"trainer.precision={'bf16' if precision.name == 'bf16' else '16'}-mixed"] \
        if precision.device.type == "cuda" else []
    return compose([
        *device, f"callbacks={bundle}", f"trainer.max_steps={steps}", "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "callbacks.checkpoint=null",
        "callbacks.samples=null", f"trainer.compile={str(compiled).lower()}", f"paths.root_dir={Path.cwd()}",
        f"paths.run_dir={run_dir}", "run_name=bench", *overrides,
    ])


def lightning_arm(cfg: DictConfig, steps: int, skip: int, run_dir: Path) -> tuple[float, float]:
    """(seconds per step, train-start seconds) of ``scalelong-train``'s trainer on ``cfg``, long measurements
    amortised (see the module doc)."""
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.shuffle_seed = cfg.seed
    clock = StepClock(skip)
    trainer = build_trainer(cfg, run_dir, extra_callbacks=[clock])
    window = steps - skip
    long_ones: list[tuple[int, list[float]]] = []  # (interval, hook seconds at the last step)
    for callback in trainer.callbacks:
        interval = getattr(callback, "every_n_steps", 0)
        if isinstance(interval, int) and interval > window:
            callback.every_n_steps = steps  # due once, at the last step
            long_ones.append((interval, []))
            time_last_step(callback, steps - 1, long_ones[-1][1])
    trainer.fit(module, datamodule=datamodule)
    total = clock.end - clock.start
    total += sum(sum(spent) * (window / interval - 1) for interval, spent in long_ones)
    return total / window, clock.train_start


def bare_arm(cfg: DictConfig, steps: int, skip: int, precision: Precision) -> float:
    """Seconds per step of the loop a researcher writes around the same model, optimiser, data and loss."""
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg).to(precision.device)
    datamodule = instantiate(cfg.data)
    datamodule.shuffle_seed = cfg.seed
    optimizers = module.configure_optimizers()
    optimizer, schedule = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    model, diffusion = module.model.train(), module.diffusion.to(precision.device)
    forward = model if module.compiled is None else module.compiled
    start = 0.0
    for step, (x0, y) in zip(range(steps), datamodule.train_dataloader()):
        if step == skip:
            precision.synchronize()
            start = time.perf_counter()
        x0, y = x0.to(precision.device), y.to(precision.device)
        t = torch.randint(0, diffusion.num_timesteps, (len(x0),), device=x0.device)
        with precision.autocast():
            loss = (diffusion.loss(forward, x0, y if model.num_classes else None, t=t) * diffusion.loss_weights(t))
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()
        schedule.step()
    precision.synchronize()
    return (time.perf_counter() - start) / (steps - skip)


def framework_rows(overrides: Sequence[str], steps: int, skip: int, rounds: int, precision: Precision,
                   compiled: bool = False) -> list[Row]:
    """Rows ``scalelong-train`` (default callbacks) and ``callbacks=stability`` against the bare loop; with
    ``compiled``, every arm compiles the backbone (``trainer.compile=true``)."""
    if not 0 <= skip < steps:
        raise ValueError(f"skip={skip} must be below steps={steps}")
    times: dict[str, list[float]] = {"bare": [], "default": [], "stability": []}
    starts: dict[str, list[float]] = {"default": [], "stability": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for arm in times:
                cfg = arm_config(overrides, "default" if arm == "bare" else arm, steps, Path(tmp) / f"{arm}{r}",
                                 precision, compiled)
                if arm == "bare":
                    times[arm].append(bare_arm(cfg, steps, skip, precision))
                else:
                    per_step, start = lightning_arm(cfg, steps, skip, Path(tmp) / f"{arm}{r}")
                    times[arm].append(per_step)
                    starts[arm].append(start)
                log.info("framework round %d %-9s %.4f s/step", r + 1, arm, times[arm][-1])
    label = " (compiled)" if compiled else ""
    what = " ".join(overrides) or "the defaults"
    return [Row("compile" if compiled else "framework", f"scalelong-train{label}, callbacks={arm}",
                ms(times[arm]), f"bare loop: {ms(times['bare'])}",
                ratio(times[arm], times["bare"]), TARGETS[arm],
                f"{what}; {steps} steps/round, clock from step {skip}; train start {max(starts[arm]):.1f} s")
            for arm in ("default", "stability")]
