"""The benchmark suite ``scalelong-bench`` runs: which rows, in which order, with which settings.

Sections (``BenchOptions.sections``): ``backbone`` (each paper backbone against its reference), ``scaler`` (each
scaler against none), ``framework`` (``scalelong-train`` against a bare loop), ``efficiency`` (FLOP/s over the
matmul peak), ``sampling`` (samplers and the demo's evaluation against bare loops, Inception features against
torchmetrics), ``memory`` (peak memory of the paper presets), ``compile`` (compiled against eager, where compiling
applies: the training step, ``scalelong-train``, sampling; ``BenchOptions.compile_parts``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from scalelong.bench.framework import framework_rows
from scalelong.bench.measure import Precision, machine
from scalelong.bench.sampling import DEMO_EVAL, compiled_sampling_rows, evaluation_rows, inception_rows, sampler_rows
from scalelong.bench.table import SECTIONS, Row
from scalelong.bench.training import (
    PAPER_EXPERIMENTS,
    Timings,
    backbone_rows,
    compile_rows,
    efficiency_rows,
    memory_rows,
    scaler_rows,
)

log = logging.getLogger(__name__)

COMPILE_PARTS = ("step", "framework", "sampling")
"""What the compile section compiles: the backbones' training step, ``scalelong-train``, sampling."""


@dataclass
class BenchOptions:
    """What to measure and how long. The defaults are the table of ``docs/benchmarks/`` (about 15 minutes on a CPU
    of 2 cores): more rounds, batches, framework steps or compile parts measure more precisely, for longer."""

    device: str = "auto"
    sections: tuple[str, ...] = tuple(SECTIONS)
    rounds: int = 4
    batches: tuple[int, ...] = (4, 8)
    uvit_reference: str | None = None
    scaler_preset: str = "uvit_small"
    scaler_batch: int = 64
    train_overrides: tuple[str, ...] = ()
    framework_steps: int = 50
    framework_skip: int = 5
    framework_rounds: int = 2
    sample_overrides: tuple[str, ...] = ("experiment=fmnist_demo",)
    sample_batch: int = 64
    sample_steps: int = 10
    eval_overrides: tuple[str, ...] = DEMO_EVAL
    eval_rounds: int = 1
    inception_batch: int = 16
    memory_experiments: tuple[str, ...] = PAPER_EXPERIMENTS
    memory_batch: int = 8
    compile_cases: tuple[tuple[str, int], ...] = (("uvit_s2_cifar10", 8),)
    compile_parts: tuple[str, ...] = ("step", "sampling")
    extra_notes: list[str] = field(default_factory=list)

    def precision(self) -> Precision:
        device = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        return Precision.for_device(device)


def run_suite(options: BenchOptions, progress: Callable[[list[Row]], None] | None = None
              ) -> tuple[list[Row], dict[str, str]]:
    """Every row of the chosen sections, and the table's header (date, machine, torch, threads, precision).
    ``progress`` sees the rows of each part as soon as they are measured."""
    unknown = set(options.sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    precision = options.precision()
    timings = Timings()
    on = set(options.sections)
    compiling = "compile" in on
    parts: list[tuple[bool, Callable[[], list[Row]]]] = [
        ("backbone" in on or "efficiency" in on, lambda: backbone_rows(
            options.batches, options.rounds, precision, options.uvit_reference, timings)),
        ("scaler" in on, lambda: scaler_rows(options.scaler_preset, options.scaler_batch, options.rounds, precision)),
        ("framework" in on, lambda: framework_rows(
            options.train_overrides, options.framework_steps, options.framework_skip, options.framework_rounds,
            precision)),
        ("sampling" in on, lambda: sampler_rows(
            options.sample_overrides, options.sample_batch, options.sample_steps, options.rounds, precision)),
        ("sampling" in on, lambda: evaluation_rows(
            options.sample_overrides, options.eval_overrides, options.eval_rounds, precision)),
        ("sampling" in on and precision.device.type == "cpu", lambda: inception_rows(
            options.inception_batch, options.inception_batch, options.rounds, None)),
        ("memory" in on, lambda: memory_rows(options.memory_experiments, options.memory_batch, precision)),
        (compiling and "step" in options.compile_parts, lambda: compile_rows(
            options.compile_cases, options.rounds, precision, timings)),
        (compiling and "framework" in options.compile_parts, lambda: framework_rows(
            options.train_overrides, options.framework_steps, options.framework_skip, options.framework_rounds,
            precision, compiled=True)),
        (compiling and "sampling" in options.compile_parts, lambda: compiled_sampling_rows(
            options.sample_overrides, options.sample_batch, options.sample_steps, options.rounds, precision)),
        ("efficiency" in on, lambda: efficiency_rows(timings, precision)),
    ]
    rows: list[Row] = []
    for wanted, part in parts:
        if wanted:
            new = part()
            rows += new
            if progress is not None:
                progress(new)
    rows = [r for r in rows if r.section in on or (r.section == "compile" and compiling)]
    order = list(SECTIONS)
    rows.sort(key=lambda r: order.index(r.section))
    return rows, machine(precision)
