"""The paper-scale commands and their expected wall time (scalelong/paper_scale.py)."""

from __future__ import annotations

import pytest

from scalelong.config import compose
from scalelong.paper_scale import PAPER_IMAGES_PER_SECOND, TABLES, paper_rate, runs_of, training_flops_per_image


def test_the_throughput_anchor_gives_back_the_papers_15_6_hours() -> None:
    """U-ViT-S/2 at batch 32 for 500k steps at the paper's rate is the paper's 15.6 h, whatever the FLOP count."""
    hours = 32 * 500_000 * training_flops_per_image("cifar10_uvit_s2") / paper_rate() / 3600
    assert hours == pytest.approx(15.6, rel=1e-9)
    assert PAPER_IMAGES_PER_SECOND == pytest.approx(284.9, abs=0.1)


def test_training_flops_grow_with_the_model_as_the_parameter_counts_do() -> None:
    s2, m4, l4 = (training_flops_per_image(e) for e in ("cifar10_uvit_s2", "imagenet64_uvit_m4", "imagenet64_uvit_l4"))
    # fwd + bwd ≈ 3 × 2 × params × tokens for a transformer: U-ViT-S/2 44.3M params, 258 tokens -> ~69 GFLOP + attention
    assert 68e9 < s2 < 80e9
    assert 2.5 < m4 / s2 < 3.2 and 2.0 < l4 / m4 < 2.4  # 130.9M/44.3M = 2.95, 286.8M/130.9M = 2.19


def test_every_command_composes_and_counts_its_runs() -> None:
    runs = {}
    for key, (_, overrides) in TABLES.items():
        cfg = compose([f"experiment={key.split()[0]}"], return_hydra_config=True)
        assert cfg.trainer.max_steps >= 300_000
        runs[key] = runs_of(cfg, overrides)
    assert runs["table1_cifar10"] == 12 and runs["table1_cifar10 data.batch_size=32,64"] == 24  # 4 scalers × 3 seeds
    assert (runs["table2_ls_ratio"], runs["fig13_kappa"], runs["imagenet64_uvit_m4"]) == (12, 18, 3)
