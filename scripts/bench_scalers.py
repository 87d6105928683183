"""Step time of each LSC scaler relative to ``none`` at the CPU presets, measured side by side.

Every scaler gets a model with the same preset; rounds interleave the scalers so machine load
hits all of them alike, and the reported ratio is median(step time of scaler) / median(none).

    python scripts/bench_scalers.py [--presets uvit_small uvit_deep unet_small] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scalelong.config import build_model

SCALERS = ["none", "uniform", "cs", "learnable_scalar", "ls", "skip_norm"]


def step_time(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, t: torch.Tensor) -> float:
    start = time.perf_counter()
    loss = (model(x, t) - x).square().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def bench(preset: str, batch: int, rounds: int, steps: int) -> dict[str, float]:
    models = {}
    for name in SCALERS:
        torch.manual_seed(0)
        model = build_model(preset, name)
        models[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    x = torch.randn(batch, models["none"][0].in_chans, 28, 28)
    t = torch.randint(0, 1000, (batch,))
    times: dict[str, list[float]] = {name: [] for name in SCALERS}
    for name in SCALERS:  # warm-up
        step_time(*models[name], x, t)
    for _ in range(rounds):
        for name in SCALERS:
            times[name].extend(step_time(*models[name], x, t) for _ in range(steps))
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["uvit_small", "uvit_deep", "unet_small"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=2, help="steps per scaler per round")
    args = parser.parse_args()
    print(f"batch {args.batch}, {args.rounds} rounds x {args.steps} steps, {torch.get_num_threads()} threads")
    print(f"{'preset':<12} {'scaler':<17} {'ms/step':>8} {'ratio to none':>14}")
    for preset in args.presets:
        medians = bench(preset, args.batch, args.rounds, args.steps)
        for name, sec in medians.items():
            print(f"{preset:<12} {name:<17} {1000 * sec:8.1f} {sec / medians['none']:14.3f}")


if __name__ == "__main__":
    main()
