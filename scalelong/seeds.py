"""The seeds derived from a run's seed, in one place (STYLE: "seeds, offsets and magic constants are named once").

A derived seed is ``seed · stride + index``, where the index is a step, an epoch or a held-out batch.
Each stride is a prime larger than any index it is used with, so different (seed, index) pairs give
different seeds: runs with seeds 0 and 1 never share a step's draws.
"""

from __future__ import annotations

STEP_STRIDE = 1_000_003  # indices: optimizer steps and epochs (training draws, data order, timestep-loss draws)
VALIDATION_STRIDE = 7919  # indices: held-out batches (the fixed validation draws t, ε, δ)


def derived_seed(seed: int, index: int, stride: int = STEP_STRIDE) -> int:
    """``seed · stride + index``: the seed of draw number ``index`` of a run seeded with ``seed``."""
    return seed * stride + index
