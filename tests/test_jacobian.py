"""The Jacobian tools: power iteration equals the exact spectral norm (whole input, per sample, through
attention)."""

from __future__ import annotations

import math

import pytest
import torch

from scalelong.jacobian import input_sensitivity, spectral_norm_jacobian


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(30,), (5, 6)])
def test_power_iteration_equals_the_exact_spectral_norm(shape):
    matrix = torch.randn(40, 30, generator=seeded(0), dtype=torch.float64)
    exact = torch.linalg.matrix_norm(matrix, ord=2)
    estimate = spectral_norm_jacobian(
        lambda x: matrix @ x.reshape(-1), torch.randn(shape, dtype=torch.float64), iters=500, generator=seeded(1)
    )
    assert estimate.shape == ()
    torch.testing.assert_close(estimate, exact, rtol=1e-3, atol=0)


def test_power_iteration_per_sample():
    matrices = torch.randn(3, 20, 12, generator=seeded(0), dtype=torch.float64)
    exact = torch.linalg.matrix_norm(matrices, ord=2)
    estimate = spectral_norm_jacobian(
        lambda x: torch.einsum("bij,bj->bi", matrices, x),
        torch.randn(3, 12, dtype=torch.float64),
        iters=500,
        per_sample=True,
        generator=seeded(1),
    )
    assert estimate.shape == (3,)
    torch.testing.assert_close(estimate, exact, rtol=1e-3, atol=0)


def test_power_iteration_through_attention_matches_the_full_jacobian():
    # The fused CPU attention kernel has no forward-mode derivative; the math backend is used.
    weight = torch.randn(8, 8, generator=seeded(0), dtype=torch.float64) / math.sqrt(8)

    def attend(x: torch.Tensor) -> torch.Tensor:
        q = (x @ weight).view(1, 2, 5, 4)
        return torch.nn.functional.scaled_dot_product_attention(q, q, q).reshape(5, 8)

    x = torch.randn(5, 8, generator=seeded(1), dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(attend, x).reshape(40, 40)
    estimate = spectral_norm_jacobian(attend, x, iters=1000, rtol=1e-10, generator=seeded(2))
    torch.testing.assert_close(estimate, torch.linalg.matrix_norm(jacobian, ord=2), rtol=1e-3, atol=0)


def test_per_sample_power_iteration_needs_a_batch_axis():
    with pytest.raises(ValueError, match="batch axis"):
        spectral_norm_jacobian(lambda x: 2 * x, torch.ones(3), per_sample=True)


def test_input_sensitivity_of_a_linear_map_lies_within_its_singular_values():
    matrix = torch.randn(20, 12, generator=seeded(0), dtype=torch.float64)
    singular = torch.linalg.svdvals(matrix)
    ratio = input_sensitivity(lambda x: x @ matrix.T, torch.randn(8, 12, dtype=torch.float64), 1e-2, seeded(1))
    assert singular[-1] <= ratio <= singular[0]
    assert input_sensitivity(lambda x: 3 * x, torch.randn(4, 5), 0.1, seeded(2)) == pytest.approx(3.0)
