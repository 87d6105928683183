"""scalelong-sample's arguments: refused with one line before the checkpoint is loaded."""

from __future__ import annotations

import pytest

from scalelong.config import compose
from scalelong.errors import ConfigError
from scalelong.sample import run


@pytest.mark.parametrize("overrides,message", [
    ([], "ckpt is not set; pass the checkpoint to sample from, e.g. "
         "scalelong-sample ckpt=outputs/runs/default/checkpoints/last.ckpt"),
    (["ckpt=missing.ckpt", "num_samples=0"], "num_samples=0 must be a whole number of at least 1, e.g. num_samples=64"),
    (["ckpt=missing.ckpt", "batch_size=0"], "batch_size=0 must be a whole number of at least 1, e.g. batch_size=64"),
    (["ckpt=missing.ckpt", "sampler=euler", "steps=10"],
     "sampler=euler is unknown; use one of ddpm, ddim, dpm_solver, dpm_solver_fast, euler_maruyama"),
])
def test_bad_arguments_are_one_config_error_before_the_checkpoint_is_read(overrides, message):
    with pytest.raises(ConfigError) as err:
        run(compose(overrides, config_name="sample"))
    assert str(err.value) == message
