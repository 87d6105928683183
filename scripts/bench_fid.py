"""Inception feature throughput of our FID pipeline vs torchmetrics' FrechetInceptionDistance used directly.

Ours: :func:`scalelong.eval.fid.extract_stats` on uint8 N×C×H×W batches (channel repeat, TF1 bilinear
resize to 299, Inception, float64 moments). Direct: ``FrechetInceptionDistance(feature=<the same
network>).update`` on inputs already in the network's format (for a TorchScript network: 299×299 in
(x − 128)/128, resized before the clock starts, run with TorchScript's unoptimised executor as our
wrapper does). The two alternate batch by batch so machine load hits both alike; throughput is the
median over batches of images/s.

In the same run, the cost of the samples an FID needs: wall time per sample of every sampler in
``scalelong.samplers.SAMPLERS`` at its default steps on the CPU preset U-ViT (``uvit_small``, random
weights: the cost does not depend on them), drawing ``--sample-batch`` images at a time, median over
``--sample-rounds`` rounds in which the samplers alternate.

    python scripts/bench_fid.py [--images 32] [--batch 16] [--size 32] [--channels 3] [--rounds 4]
                                [--sample-batch 8] [--sample-rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from hydra.utils import instantiate
from torchmetrics.image.fid import FrechetInceptionDistance

from scalelong.config import build_model, compose
from scalelong.eval.fid import extract_stats
from scalelong.eval.inception import INCEPTION_SIZE, InceptionFeatures, load_inception, resize_bilinear_tf1
from scalelong.lit import DiffusionModule
from scalelong.samplers import SAMPLERS


def direct_inputs(extractor: InceptionFeatures, images: torch.Tensor) -> torch.Tensor:
    """The batch as the bare network takes it."""
    images = images.expand(-1, 3, -1, -1)
    if not extractor.preprocess:
        return images
    return (resize_bilinear_tf1(images.float(), INCEPTION_SIZE) - 128.0) / 128.0


def seconds(fn: Callable[[torch.Tensor], object], batch: torch.Tensor) -> float:
    """Wall time of ``fn(batch)`` (TorchScript's unoptimised executor, as in our wrapper)."""
    start = time.perf_counter()
    with torch.jit.optimized_execution(False), torch.inference_mode():
        fn(batch)
    return time.perf_counter() - start


def sampler_seconds_per_sample(batch: int, rounds: int) -> dict[str, float]:
    """Median wall time per sample of each sampler at its default steps on the CPU preset U-ViT; the
    samplers alternate within each round so that machine load hits them alike."""
    module = DiffusionModule(build_model("uvit_small"), instantiate(compose().diffusion))
    module.sample(batch, sampler="ddim", steps=2)  # warm-up
    times: dict[str, list[float]] = {sampler: [] for sampler in SAMPLERS}
    for r in range(rounds):
        for sampler in SAMPLERS:
            generator = torch.Generator().manual_seed(r)
            start = time.perf_counter()
            module.sample(batch, sampler=sampler, steps=SAMPLERS[sampler].default_steps, generator=generator)
            times[sampler].append((time.perf_counter() - start) / batch)
    return {sampler: statistics.median(v) for sampler, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per round")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--weights", default=None, help="Inception weights file (default: first available)")
    parser.add_argument("--sample-batch", type=int, default=8, help="images per sampling call")
    parser.add_argument("--sample-rounds", type=int, default=3, help="sampling calls per sampler")
    args = parser.parse_args()

    extractor = load_inception(args.weights)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, args.channels, args.size, args.size), generator=g, dtype=torch.uint8)
    ours_batches = list(images.split(args.batch))
    direct_batches = [direct_inputs(extractor, b) for b in ours_batches]
    # normalize=True only makes torchmetrics probe a TorchScript network with a float dummy image.
    metric = FrechetInceptionDistance(
        feature=extractor.network, normalize=extractor.preprocess, input_img_size=tuple(direct_batches[0].shape[1:])
    )
    pipelines = {
        "ours": (lambda b: extract_stats(extractor, [b]), ours_batches),
        "direct": (lambda b: metric.update(b, real=False), direct_batches),
    }
    for fn, batches in pipelines.values():  # warm-up
        seconds(fn, batches[0])
    batch_rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.rounds):
        for i in range(len(ours_batches)):
            for name, (fn, batches) in pipelines.items():
                batch_rates[name].append(len(batches[i]) / seconds(fn, batches[i]))
    rates = {name: statistics.median(v) for name, v in batch_rates.items()}
    ratio = rates["ours"] / rates["direct"]

    print(f"weights {extractor.extractor_id}; {args.images} images {args.channels}x{args.size}x{args.size} uint8, "
          f"batch {args.batch}, {args.rounds} rounds, {torch.get_num_threads()} threads")
    print(f"{'pipeline':<58} {'images/s':>9}")
    print(f"{'ours: extract_stats(InceptionFeatures) on uint8 images':<58} {rates['ours']:9.2f}")
    print(f"{'torchmetrics FrechetInceptionDistance(feature=network)':<58} {rates['direct']:9.2f}")
    print(f"ratio ours/direct {ratio:.3f} ({'within' if abs(ratio - 1) <= 0.1 else 'OUTSIDE'} 10%)")

    per_sample = sampler_seconds_per_sample(args.sample_batch, args.sample_rounds)
    print(f"\nsampling: uvit_small (random weights), batch {args.sample_batch}, {args.sample_rounds} round(s)")
    print(f"{'sampler':<12} {'steps':>6} {'s/sample':>9} {'ms/sample/step':>15}")
    for sampler, seconds_each in per_sample.items():
        steps = SAMPLERS[sampler].default_steps
        print(f"{sampler:<12} {steps:>6} {seconds_each:9.4f} {1000 * seconds_each / steps:15.3f}")


if __name__ == "__main__":
    main()
