"""Training-step rows: each paper backbone against its reference implementation, the scalers against ``none``,
compute efficiency, peak memory of the paper presets, and compiled against eager.

Every arm is the same bare step (:func:`scalelong.bench.measure.training_step`: forward, MSE, backward, AdamW) on
the same random batch, so a ratio compares networks, not training loops.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from scalelong.bench.measure import (
    Precision,
    backbone_inputs,
    init_optimizer_state,
    interleaved,
    matmul_peak,
    ms,
    peak_memory,
    ratio,
    spread,
    state_bytes,
    training_step,
)
from scalelong.bench.references import ReferenceMissing, diffusers_ddpm_unet, uvit_reference
from scalelong.bench.table import Row
from scalelong.compiling import INDUCTOR_OPTIONS
from scalelong.config import compose
from scalelong.paper_scale import DEVICES, model_flops_per_image
from scalelong.scalers import SCALERS

log = logging.getLogger(__name__)

UVIT_SCALERS = ("none", "cs", "ls")
"""The U-ViT-S/2 scalers timed against the reference (ScaleLong's file has each)."""
PAPER_EXPERIMENTS = ("cifar10_uvit_s2", "celeba64_uvit_s4", "imagenet64_uvit_m4", "imagenet64_uvit_l4",
                     "cifar10_unet_ddpm")
"""The paper presets whose peak memory is measured, by the experiment that trains each."""
FASTER = (">=", 1.0)
COMPILE_TARGET = (">=", 1.05)


@dataclass
class Timings:
    """Our per-round step times by (preset, batch, compiled): what the efficiency rows divide FLOPs by."""

    steps: dict[tuple[str, int, bool], list[float]] = field(default_factory=dict)
    models: dict[str, DictConfig] = field(default_factory=dict)


def model_config(preset: str, scaler: str = "none") -> DictConfig:
    """The model config of a ``conf/model`` preset with a scaler; ``preset`` may carry overrides after it
    (``"uvit_tiny model.depth=2 scaler=cs"``)."""
    name, *overrides = preset.split()
    return compose([f"model={name}", f"scaler={scaler}", *overrides]).model


def step_arm(build: Callable[[], nn.Module], batch: int, precision: Precision,
             compiled: bool = False) -> Callable[[], None]:
    """A training step of a fresh ``build()`` (seeded, so two arms of one network start equal)."""
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):  # reference files print at import and build
        model = build().to(precision.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model, options=INDUCTOR_OPTIONS) if compiled else model
    return training_step(forward, optimizer, backbone_inputs(model, batch, precision.device), precision)


def timed(arms: dict[str, Callable[[], None]], rounds: int, precision: Precision) -> dict[str, list[float]]:
    try:
        return interleaved(arms, rounds, precision)
    finally:
        arms.clear()
        gc.collect()


def backbone_rows(batches: Sequence[int], rounds: int, precision: Precision, uvit_file: str | None,
                  timings: Timings) -> list[Row]:
    """Our step against the reference's at each batch: the DDPM UNet against diffusers' ``UNet2DModel``, U-ViT-S/2
    (none; cs and ls at the largest batch) against the given model file. Without a reference, our U-ViT is still
    timed (with ``none``) for the efficiency rows, and the rows say why there is no ratio."""
    cases = [("unet_ddpm_cifar10", "none", "diffusers UNet2DModel", lambda s: diffusers_ddpm_unet())]
    cases += [("uvit_s2_cifar10", s, "U-ViT model file", lambda s: uvit_reference(uvit_file, s)) for s in UVIT_SCALERS]
    rows = []
    for batch in batches:
        for preset, scaler, what, reference in cases:
            if scaler != "none" and batch != max(batches):
                continue  # the scalers at the largest batch only
            name = f"{preset} ({scaler}), batch {batch}"
            cfg = model_config(preset, scaler)
            timings.models[preset] = model_config(preset)
            try:
                ref = reference(scaler)
            except ReferenceMissing as err:
                ours = ""
                if scaler == "none":  # timed all the same, for the efficiency rows
                    times = timed({"ours": step_arm(partial(instantiate, cfg), batch, precision)}, rounds,
                                  precision)
                    timings.steps[(preset, batch, False)] = times["ours"]
                    ours = ms(times["ours"])
                rows.append(Row("backbone", name, ours, what, note=str(err)))
                continue
            times = timed({"ours": step_arm(partial(instantiate, cfg), batch, precision),
                           "reference": step_arm(ref, batch, precision)}, rounds, precision)
            if scaler == "none":
                timings.steps[(preset, batch, False)] = times["ours"]
            rows.append(Row("backbone", name, ms(times["ours"]), f"{what}: {ms(times['reference'])}",
                            ratio(times["reference"], times["ours"]), FASTER,
                            f"same step, batch and init seed; {spread(times['reference'], times['ours'])}"))
    return rows


def scaler_rows(preset: str, batch: int, rounds: int, precision: Precision) -> list[Row]:
    """Each scaler of :data:`scalelong.scalers.SCALERS` against ``none`` on ``preset``: what the method costs."""
    arms = {s: step_arm(partial(instantiate, model_config(preset, s)), batch, precision) for s in SCALERS}
    times = timed(arms, rounds, precision)
    return [Row("scaler", f"{preset} {s}, batch {batch}", ms(times[s]), f"none: {ms(times['none'])}",
                ratio(times[s], times["none"]), note=spread(times[s], times["none"])) for s in times if s != "none"]


def efficiency_rows(timings: Timings, precision: Precision) -> list[Row]:
    """FLOPs of a step (forward and backward, ``FlopCounterMode``) over its median time, against the peak of a
    square matmul measured now."""
    peak = matmul_peak(precision)
    rows = []
    for (preset, batch, compiled), times in timings.steps.items():
        flops = batch * model_flops_per_image(timings.models[preset])
        achieved = flops / statistics.median(times)
        rows.append(Row("efficiency", f"{preset}, batch {batch}{' (compiled)' if compiled else ''}",
                        f"{flops / 1e9:.1f} GFLOP/step at {achieved / 1e9:.1f} GFLOP/s",
                        f"{precision.name} matmul peak {peak / 1e9:.1f} GFLOP/s", achieved / peak))
    return rows


def memory_rows(experiments: Sequence[str], batch: int, precision: Precision) -> list[Row]:
    """Peak memory of one training step of each paper preset (its experiment's model and scaler) at ``batch`` and,
    on a GPU, at the paper's per-GPU batch (the experiment's batch over the paper-scale commands' GPUs). The ratio
    is the peak over the parameters, buffers and AdamW state the step starts with."""
    rows = []
    for experiment in experiments:
        cfg = compose([f"experiment={experiment}"])
        batches = [batch]
        if precision.device.type == "cuda":
            batches.append(max(1, int(cfg.data.batch_size) // DEVICES))
        for b in batches:
            torch.manual_seed(0)
            model = instantiate(cfg.model).to(precision.device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            init_optimizer_state(model, optimizer)
            step = training_step(model, optimizer, backbone_inputs(model, b, precision.device), precision)
            start = state_bytes(model, optimizer)
            extra, how = peak_memory(step, precision)
            rows.append(Row("memory", f"{cfg.model._target_.rsplit('.', 1)[-1]} of {experiment}, batch {b}",
                            f"{(start + extra) / 2**20:,.0f} MiB peak", f"{start / 2**20:,.0f} MiB of weights and "
                            "AdamW state", (start + extra) / start, note=how))
            del model, optimizer, step
            gc.collect()
    return rows


def compile_rows(cases: Sequence[tuple[str, int]], rounds: int, precision: Precision, timings: Timings) -> list[Row]:
    """Our training step compiled (``torch.compile``, inductor, as ``trainer.compile``) against eager, per
    (preset, batch); the first call, which compiles, is left off the clock and reported."""
    rows = []
    for preset, batch in cases:
        cfg = model_config(preset)
        timings.models[preset] = cfg
        compiled = step_arm(partial(instantiate, cfg), batch, precision, compiled=True)
        start = time.perf_counter()
        compiled()
        compile_seconds = time.perf_counter() - start
        times = timed({"eager": step_arm(partial(instantiate, cfg), batch, precision), "compiled": compiled},
                      rounds, precision)
        timings.steps[(preset, batch, True)] = times["compiled"]
        target = COMPILE_TARGET if preset.startswith("uvit") else None
        rows.append(Row("compile", f"{preset} training step, batch {batch}", ms(times["compiled"]),
                        f"eager: {ms(times['eager'])}", ratio(times["eager"], times["compiled"]), target,
                        f"compile and first step {compile_seconds:.0f} s; {spread(times['eager'], times['compiled'])}"))
    return rows

