"""Inception feature throughput of our FID pipeline vs torchmetrics' FrechetInceptionDistance used directly.

Ours: :func:`scalelong.eval.fid.extract_stats` on uint8 N×C×H×W batches (channel repeat, TF1 bilinear
resize to 299, Inception, float64 moments). Direct: ``FrechetInceptionDistance(feature=<the same
network>).update`` on inputs already in the network's format (for a TorchScript network: 299×299 in
(x − 128)/128, resized before the clock starts, run with TorchScript's unoptimised executor as our
wrapper does). The two alternate batch by batch so machine load hits both alike; throughput is the
median over batches of images/s.

    python scripts/bench_fid.py [--images 32] [--batch 16] [--size 32] [--channels 3] [--rounds 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from scalelong.eval.fid import extract_stats
from scalelong.eval.inception import INCEPTION_SIZE, InceptionFeatures, load_inception, resize_bilinear_tf1


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per round")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--weights", default=None, help="Inception weights file (default: first available)")
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


if __name__ == "__main__":
    main()
