"""The stability callbacks (docs/metrics.md) on short CPU runs: keys, values, probe batch, hooks, wandb."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY
from scalelong.callbacks.common import draw_probe_batch, due
from scalelong.callbacks.features import FeatureOscillation
from scalelong.callbacks.gradients import GradientOscillation, block_grad_norms
from scalelong.callbacks.kappa import fit_geometric
from scalelong.callbacks.robustness import Robustness, level_maps
from scalelong.config import compose
from scalelong.data import DigitsDataModule
from scalelong.lit import build_module
from scalelong.models.common import timestep_embedding
from scalelong.plots.metrics import read_metrics

SKIPS = (1, 2)  # TINY U-ViT: depth 4 -> 2 LSCs
BLOCKS = ("in_block_1", "in_block_2", "mid_block", "out_block_1", "out_block_2")


def expected_keys(scaler: str) -> set[str]:
    """docs/metrics.md's keys for the TINY U-ViT (N = 2)."""
    feats = [f"{kind}_{i}" for i in SKIPS for kind in ("skip", "level")] + [f"skip_{i}_scaled" for i in SKIPS]
    keys = {f"feat/{f}" for f in feats} | {f"osc/feat/{f}/{s}" for f in [*feats, "mean"] for s in ("rstd", "mrc")}
    keys |= {f"grad/{b}" for b in [*BLOCKS, "total"]} | {"loss/spikes"}
    keys |= {f"osc/grad/{b}/{s}" for b in [*BLOCKS, "mean"] for s in ("rstd", "mrc")}
    keys |= {f"kappa/skip_{i}" for i in SKIPS}
    keys |= {f"noise_ratio/{k}" for k in ("mean", "q97", "xt_energy", "kappa_low", "kappa_high")}
    keys |= {f"robust/ratio/delta_{s}" for s in ("0.001", "0.01", "0.1")}
    keys |= {"robust/jacobian", "robust/m0"} | {f"robust/m0/level_{i}" for i in SKIPS}
    keys |= {f"loss_t/q{q}" for q in range(1, 5)}
    if scaler == "ls":
        keys |= {f"ls/gate/t_{t}/skip_{i}" for t in (100, 500, 900) for i in SKIPS}
        keys |= {"ls/fit_kappa", "ls/fit_scale", "ls/fit_r2"}
    return keys


@pytest.mark.slow
def test_stability_bundle_writes_every_documented_key_with_finite_values(stability_runs):
    # The ls run (conf/debug/stability.yaml) clips gradients to 1e-4, which must not show in the logged
    # norms: they are read before clipping.
    run_dir = stability_runs["ls"].run_dir
    series = read_metrics(run_dir / "csv" / "metrics.csv")
    stability = {k for k in series if k.split("/")[0] in
                 ("feat", "osc", "grad", "loss", "kappa", "ls", "noise_ratio", "robust", "loss_t")}
    assert stability == expected_keys("ls")
    for key in stability:
        assert all(math.isfinite(v) for v in series[key].values()), key

    # Logging steps: k with (k + 1) % n == 0, in the row of that step's train/loss.
    assert sorted(series["feat/level_1"]) == [1, 3, 5, 7]
    assert sorted(series["osc/feat/level_1/mrc"]) == [3, 5, 7]  # windows of 2 are full from the 2nd value
    assert sorted(series["grad/total"]) == [1, 3, 5, 7] and sorted(series["loss_t/q1"]) == [1, 3, 5, 7]
    assert sorted(series["robust/m0"]) == [3, 7] and sorted(series["kappa/skip_1"]) == [3, 7]
    assert sorted(series["noise_ratio/mean"]) == [0]
    assert min(series["grad/total"].values()) > 1e-3

    # LS gates lie in (0, 1); the LS κ readout is their mean over the timesteps.
    for step in (3, 7):
        gates = [series[f"ls/gate/t_{t}/skip_1"][step] for t in (100, 500, 900)]
        assert all(0 < g < 1 for g in gates)
        assert series["kappa/skip_1"][step] == pytest.approx(np.mean(gates))
    # Energies after the gate are smaller than before it.
    assert all(series["feat/skip_1_scaled"][s] < series["feat/skip_1"][s] for s in series["feat/skip_1"])
    # M0 is the max over the levels.
    assert series["robust/m0"][7] == max(series[f"robust/m0/level_{i}"][7] for i in SKIPS)

    # The r_t histogram is saved and matches the logged statistics.
    hist = np.load(run_dir / "noise_ratio" / "histogram.npz")
    assert hist["counts"].sum() == 64 * 8
    assert float(hist["mean"]) == pytest.approx(series["noise_ratio/mean"][0])
    assert (run_dir / "noise_ratio" / "histogram.png").stat().st_size > 1000


@pytest.mark.slow
def test_cs_readout_and_scaled_skip_energy_follow_kappa(stability_runs):
    run_dir = stability_runs["cs"].run_dir  # cs_kappa=0.5
    series = read_metrics(run_dir / "csv" / "metrics.csv")
    assert [series[f"kappa/skip_{i}"][7] for i in SKIPS] == [1.0, 0.5]
    for step, before in series["feat/skip_2"].items():  # F(κ s) = κ² F(s)
        assert series["feat/skip_2_scaled"][step] == pytest.approx(0.25 * before, rel=1e-5)
    assert "ls/fit_kappa" not in series


@pytest.mark.slow
def test_offline_wandb_run_receives_the_stability_keys(stability_runs):
    run = stability_runs["none"]  # logger=wandb, WANDB_MODE=offline
    run_dir, summary = run.run_dir, run.wandb_summary  # the run's last logged value of every key
    assert len(list(Path(run_dir, "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    for key in ("feat/level_2", "osc/feat/mean/mrc", "grad/out_block_1", "kappa/skip_2", "noise_ratio/q97",
                "robust/ratio/delta_0.01", "robust/m0/level_1", "loss_t/q4", "loss/spikes"):
        assert math.isfinite(summary[key]), key
    assert summary["noise_ratio/hist"]["_type"] == "histogram"
    assert summary["kappa/table"]["_type"] == "table-file"


def tiny_module(scaler: str = "none"):
    cfg = compose([*TINY["uvit"], f"scaler={scaler}", "run_name=test", "paths.root_dir=.", "paths.run_dir=."])
    torch.manual_seed(0)
    return build_module(cfg).eval()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> DigitsDataModule:
    data = DigitsDataModule(root=str(tmp_path_factory.mktemp("data")))
    data.setup("fit")
    return data


def test_probe_batch_is_the_same_for_the_same_seed_and_leaves_the_global_rng_alone(digits):
    module = tiny_module()
    state = torch.get_rng_state()
    a = draw_probe_batch(digits.val_set, module, 16, seed=3)
    b = draw_probe_batch(digits.val_set, module, 16, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for name in ("x0", "t", "noise", "x_t"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = draw_probe_batch(digits.val_set, module, 16, seed=4)
    assert not torch.equal(a.x0, c.x0) and not torch.equal(a.noise, c.noise)
    assert a.x0.shape == (16, 1, 28, 28) and a.y is None and a.x0.abs().max() <= 1


def test_feature_probe_matches_a_direct_forward_and_removes_its_hooks(digits):
    module = tiny_module("cs")
    callback = FeatureOscillation(probe_size=8)
    callback.probe = draw_probe_batch(digits.val_set, module, 8, seed=0)
    module.train()
    energies = callback.measure(module)
    assert module.training  # the training mode is restored
    assert all(not m._forward_hooks for m in module.modules())
    p = callback.probe
    model = module.model.eval()
    with torch.no_grad():
        x = model.patch_embed(p.x_t).flatten(2).transpose(1, 2)
        x = torch.cat([timestep_embedding(p.t, model.embed_dim).unsqueeze(1), x], dim=1) + model.pos_embed
        s1 = model.in_blocks[0](x)
    assert energies["skip_1"] == pytest.approx(float(s1.pow(2).mean()), rel=1e-5)
    assert list(energies) == ["level_1", "level_2", "skip_1", "skip_1_scaled", "skip_2", "skip_2_scaled"]


def test_level_map_at_the_probe_input_reproduces_the_decoder_output(digits):
    module = tiny_module("none")  # κ = 1, so leaving κ out changes nothing
    model = module.model
    p = draw_probe_batch(digits.val_set, module, 4, seed=0)
    outputs = {}
    handles = [blk.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o))
               for k, blk in model.decoder_levels().items()]
    with torch.no_grad():
        model(p.x_t, p.t)
    for h in handles:
        h.remove()
    maps = level_maps(model, p.x_t, p.t, None)
    assert sorted(maps) == list(SKIPS)
    for i, (fn, z) in maps.items():
        with torch.no_grad():
            assert torch.allclose(fn(z), outputs[i], atol=1e-6), i
    assert all("forward" not in vars(m) and not m._forward_hooks for m in model.modules())


def test_small_delta_ratio_is_bounded_by_the_jacobian_norm(digits):
    module = tiny_module("none")
    callback = Robustness(sigmas=(1e-3,), num_jacobian=8, iters=30, rtol=1e-5, probe_size=8)
    callback.probe = draw_probe_batch(digits.val_set, module, 8, seed=0)
    metrics = callback.measure(module.model)
    assert 0 < metrics["robust/ratio/delta_0.001"] <= metrics["robust/jacobian"] * 1.001


def test_block_grad_norms_are_the_l2_norms_of_each_blocks_gradient():
    model = tiny_module().model.train()
    x = torch.randn(4, 1, 28, 28)
    model(x, torch.tensor([1, 10, 100, 999])).pow(2).mean().backward()
    norms = block_grad_norms(model)
    out1 = torch.cat([p.grad.flatten() for p in model.out_blocks[0].parameters()])
    assert norms["out_block_1"] == pytest.approx(float(out1.norm()), rel=1e-5)
    total = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert norms["total"] == pytest.approx(float(total.norm()), rel=1e-5)
    assert set(norms) == {*BLOCKS, "total"}


def test_loss_spikes_are_read_only_on_logged_steps_and_count_every_step():
    """GradientOscillation keeps each step's loss on the device and reads them on the logged step: the same
    count as reading every step, without a device sync on the others."""
    from types import SimpleNamespace

    from scalelong.oscillation import SpikeCounter

    model = tiny_module().model
    trainer = SimpleNamespace(global_step=0, is_global_zero=True, loggers=[])
    callback = GradientOscillation(every_n_steps=5, spike_window=20)
    reference = SpikeCounter(2.0, 20)
    losses = [1.0] * 12 + [5.0, 1.0, 1.0, 9.0] + [1.0] * 4
    counted = 0  # losses read so far: those of the steps before the last logged step
    for step, loss in enumerate(losses):
        trainer.global_step = step
        callback.on_before_optimizer_step(trainer, SimpleNamespace(model=model), None)
        callback.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, step)
        reference.update(loss)
        counted = step if (step + 1) % 5 == 0 else counted
        assert len(callback.pending) == step + 1 - counted  # nothing read in between
    assert callback.state_dict()["spikes"] == reference.state_dict() and reference.count == 2
    assert callback.pending == []


def test_geometric_fit_recovers_kappa_and_scale():
    kappa, scale, r2 = fit_geometric([0.4 * 0.7 ** k for k in range(6)])
    assert (kappa, scale, r2) == (pytest.approx(0.7), pytest.approx(0.4), pytest.approx(1.0))


@pytest.mark.parametrize("step, n, expected", [(0, 2, False), (1, 2, True), (49, 50, True), (50, 50, False),
                                               (9, 0, False)])
def test_due_marks_every_nth_step(step, n, expected):
    assert due(step, n) is expected
