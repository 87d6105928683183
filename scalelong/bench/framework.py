"""Framework overhead: ``scalelong-train``'s time per step against a bare PyTorch loop over the same model,
optimiser (AdamW with its parameter groups and warm-up schedule), data, batch and loss.

The Lightning arms are ``scalelong-train``'s trainer (:func:`scalelong.runs.trainer.build_trainer`: the config's
callbacks, the CSV logger, ``RunFiles``, atomic checkpoints) with the default callbacks (EMA, LR monitor, logging
every ``log_every_n_steps``) or ``callbacks=stability``. Validation, interval checkpoints and the end-of-run sample
grid are off in every arm: they are work a run asks for, which a bare loop would do at the same cost; the progress
bar is off.

Pairing. The load of a shared machine drifts by more than the overhead within a minute, so the bare loop runs in
the same process, step for step: after each step of ``scalelong-train``, :class:`PairedBareLoop` takes one step of
the bare loop on a twin of the model (same initial weights, same batches) and times both. The overhead of a round is
the sum of the Lightning steps over the sum of the bare steps, from step ``skip`` on, so every periodic measurement
due in between counts at its share; the one-off work at train start (the noise-ratio histogram) is reported apart.
A measurement whose interval is longer than a round (robustness, every 500 steps) runs once per round, at its last
step, and its time there counts as 1/interval of it per step, the time it adds to a long run.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
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


class PairedBareLoop(L.Callback):
    """After every training step, one step of the bare loop on a twin of the module; both timed (see the module doc).

    Must be the last callback, so that a Lightning step is timed from the end of the previous bare step to the
    start of this one: data, hooks, training step, backward, optimiser, every callback and the logging between.
    """

    def __init__(self, cfg: DictConfig, skip: int, precision: Precision) -> None:
        L.seed_everything(cfg.seed, verbose=False)
        twin = build_module(cfg).to(precision.device)
        datamodule = instantiate(cfg.data)
        datamodule.shuffle_seed = cfg.seed
        optimizers = twin.configure_optimizers()
        self.optimizer, self.schedule = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
        self.model, self.diffusion = twin.model.train(), twin.diffusion
        self.forward = twin.model if twin.compiled is None else twin.compiled
        self.batches: Iterator = iter(datamodule.train_dataloader())
        self.skip, self.precision = skip, precision
        self.lightning: list[float] = []
        self.bare: list[float] = []
        self.mark: float | None = None
        self.fit_start = self.train_start = 0.0

    def bare_step(self) -> None:
        """The loop a researcher writes: draw t, ε-prediction loss, backward, AdamW, warm-up schedule."""
        x0, y = (b.to(self.precision.device) for b in next(self.batches))
        t = torch.randint(0, self.diffusion.num_timesteps, (len(x0),), device=x0.device)
        with self.precision.autocast():
            loss = self.diffusion.loss(self.forward, x0, y if self.model.num_classes else None, t=t)
            loss = (loss * self.diffusion.loss_weights(t)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == 0 and not self.train_start:
            self.train_start = time.perf_counter() - self.fit_start

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step - 1
        self.precision.synchronize()
        now = time.perf_counter()
        if self.mark is not None and step >= self.skip:
            self.lightning.append(now - self.mark)
        self.bare_step()
        self.precision.synchronize()
        self.mark = time.perf_counter()
        if step >= self.skip:
            self.bare.append(self.mark - now)


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
        "callbacks.samples=null", f"paths.root_dir={Path.cwd()}", f"paths.run_dir={run_dir}", "run_name=bench",
        *overrides, f"trainer.compile={str(compiled).lower()}",  # last: the row's label says which it is
    ])


def paired_round(cfg: DictConfig, steps: int, skip: int, run_dir: Path, precision: Precision
                 ) -> tuple[float, float, float]:
    """(Lightning seconds per step, bare seconds per step, train-start seconds) of one run of ``steps`` steps with
    the bare loop paired step by step, long measurements amortised (see the module doc)."""
    paired = PairedBareLoop(cfg, skip, precision)
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.shuffle_seed = cfg.seed
    trainer = build_trainer(cfg, run_dir, extra_callbacks=[paired])
    window = steps - skip
    long_ones: list[tuple[int, list[float]]] = []  # (interval, hook seconds at the last step)
    for callback in trainer.callbacks:
        interval = getattr(callback, "every_n_steps", 0)
        if isinstance(interval, int) and interval > window:
            callback.every_n_steps = steps  # due once, at the last step
            long_ones.append((interval, []))
            time_last_step(callback, steps - 1, long_ones[-1][1])
    trainer.fit(module, datamodule=datamodule)
    total = sum(paired.lightning) + sum(sum(spent) * (window / interval - 1) for interval, spent in long_ones)
    return total / len(paired.lightning), sum(paired.bare) / len(paired.bare), paired.train_start


def framework_rows(overrides: Sequence[str], steps: int, skip: int, rounds: int, precision: Precision,
                   compiled: bool = False) -> list[Row]:
    """Rows ``scalelong-train`` (default callbacks) and ``callbacks=stability`` against the bare loop, each round a
    run of ``steps`` steps; with ``compiled``, both compile the backbone (``trainer.compile=true``)."""
    if not 0 < skip < steps - 1:
        raise ValueError(f"skip={skip} must be between 1 and steps - 2 = {steps - 2}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arm in ("default", "stability"):
            lightning, bare, starts = [], [], []
            for r in range(rounds):
                cfg = arm_config(overrides, arm, steps, Path(tmp) / f"{arm}{r}", precision, compiled)
                per_step, bare_step, start = paired_round(cfg, steps, skip, Path(tmp) / f"{arm}{r}", precision)
                lightning.append(per_step)
                bare.append(bare_step)
                starts.append(start)
                log.info("framework %s round %d: %.4f s/step, bare %.4f", arm, r + 1, per_step, bare_step)
            rows.append(Row(
                "compile" if compiled else "framework",
                f"scalelong-train{' (compiled)' if compiled else ''}, callbacks={arm}", ms(lightning),
                f"bare loop: {ms(bare)}", ratio(lightning, bare), TARGETS[arm],
                f"{' '.join(overrides) or 'the defaults'}; {rounds} × {steps} steps, paired step by step from step "
                f"{skip}; train start {max(starts):.1f} s"))
    return rows
