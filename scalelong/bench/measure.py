"""How ``scalelong-bench`` measures: interleaved rounds and per-round ratios, the training step it times,
the matmul peak, peak memory, and the machine.

Absolute times on a shared machine are noise, so every figure is a ratio of two arms timed in the same process:
each round runs every arm in turn (the load at that moment hits all of them alike), and a ratio is the median over
rounds of the per-round ratio.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Precision:
    """The numeric regime of a benchmark: fp32 on a CPU; bf16 (or fp16 where bf16 is missing) autocast on a GPU."""

    device: torch.device
    dtype: torch.dtype

    @classmethod
    def for_device(cls, device: str | torch.device) -> Precision:
        device = torch.device(device)
        if device.type != "cuda":
            return cls(device, torch.float32)
        return cls(device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)

    @property
    def name(self) -> str:
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision on a GPU, nothing on a CPU (fp32 is the fastest there)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def interleaved(arms: Mapping[str, Callable[[], object]], rounds: int, precision: Precision, repeat: int = 1,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each arm, one value per round (the mean of ``repeat`` calls); every round calls the arms
    in turn, in the given order in even rounds and reversed in odd ones (so that no arm always follows the same
    one), after ``warmup`` untimed calls of each."""
    for fn in arms.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        for name, fn in (reversed(arms.items()) if r % 2 else arms.items()):  # ABBA: no arm always goes first
            precision.synchronize()
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            precision.synchronize()
            times[name].append((time.perf_counter() - start) / repeat)
    return times


def ms(times: list[float], unit: str = "step") -> str:
    """The median of per-round seconds as milliseconds per ``unit``, the context column of a row."""
    return f"{1000 * statistics.median(times):.1f} ms/{unit}"


def ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over rounds of numerator/denominator, each round's pair taken together."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def spread(numerator: list[float], denominator: list[float]) -> str:
    """``rounds 0.94–1.05``: the range of the per-round ratios, how far one round can be from the median."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return f"rounds {min(ratios):.2f}–{max(ratios):.2f}"


Inputs = tuple[Tensor, Tensor, Tensor | None]
"""(x [B,C,H,W], t [B], y [B] or None): what a backbone is called with."""


def backbone_inputs(model: nn.Module, batch: int, device: torch.device | str = "cpu", seed: int = 0) -> Inputs:
    """Random images, timesteps and (for a class-conditional backbone) labels of the backbone's geometry."""
    g = torch.Generator().manual_seed(seed)
    size, chans = model.img_size, model.in_chans
    x = torch.randn(batch, chans, size, size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    classes = getattr(model, "num_classes", 0)
    y = torch.randint(0, classes, (batch,), generator=g) if classes and classes > 0 else None
    return x.to(device), t.to(device), None if y is None else y.to(device)


def training_step(model: Callable[..., Tensor], optimizer: torch.optim.Optimizer, inputs: Inputs,
                  precision: Precision) -> Callable[[], None]:
    """One bare training step of ε-prediction: forward, MSE to a fixed target, backward, AdamW step. The same step
    times every backbone and its reference, so a ratio compares the networks alone."""
    x, t, y = inputs
    target = torch.randn_like(x)

    def step() -> None:
        with precision.autocast():
            eps = model(x, t, y) if y is not None else model(x, t)
            loss = (eps.float() - target).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def matmul_peak(precision: Precision, size: int | None = None, calls: int = 5) -> float:
    """FLOP/s of the fastest of ``calls`` square matmuls (2·n³ FLOPs each) in the benchmark's dtype: the peak a
    training step's efficiency is measured against."""
    n = size or (8192 if precision.device.type == "cuda" else 2048)
    dtype = precision.dtype if precision.device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=precision.device, dtype=dtype)
    b = torch.randn(n, n, device=precision.device, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(calls):
        precision.synchronize()
        start = time.perf_counter()
        a @ b
        precision.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def peak_memory(step: Callable[[], None], precision: Precision) -> tuple[int, str]:
    """(bytes, how): the most memory the tensors of one call of ``step`` held above what was allocated before it.

    On a GPU, ``torch.cuda.max_memory_allocated``; on a CPU, the running sum of the CPU allocator's events that
    ``torch.profiler`` records (``profile_memory``), which sees every tensor the step allocates and frees.
    """
    if precision.device.type == "cuda":
        torch.cuda.synchronize(precision.device)
        before = torch.cuda.memory_allocated(precision.device)
        torch.cuda.reset_peak_memory_stats(precision.device)
        step()
        torch.cuda.synchronize(precision.device)
        return torch.cuda.max_memory_allocated(precision.device) - before, "torch.cuda.max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    held = peak = 0
    for event in events:
        held += event.nbytes()
        peak = max(peak, held)
    return peak, "torch.profiler memory events"


def tensor_bytes(tensors: Iterator[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the parameters, buffers and optimiser state: what a step's peak adds to."""
    state = (v for s in optimizer.state.values() for v in s.values() if isinstance(v, Tensor))
    return tensor_bytes(model.parameters()) + tensor_bytes(model.buffers()) + tensor_bytes(state)


def init_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Allocate AdamW's moments with one zero-gradient step (they are created lazily by the first step)."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def machine(precision: Precision) -> dict[str, str]:
    """Date, machine, torch version, threads and precision: the header of a benchmark table."""
    if precision.device.type == "cuda":
        device = torch.cuda.get_device_name(precision.device)
    else:
        device = _cpu_model()
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{device}, {_cores()} cores, {platform.system()} {platform.machine()}",
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "precision": precision.name,
        "device": precision.device.type,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
