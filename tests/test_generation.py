"""A trained model must generate (issue "Trained models must generate").

One short run of a small conv UNet with cs on scikit-learn's digits at their native 8×8 is trained once
per module. Its EMA denoiser must beat the best linear denoiser (at t = T/10 and T/4), and its samples must beat every
degenerate reference set (noise, pixel-shuffled real digits, a single class) on the digits'
domain FID. At t = T/2 the digits leave less than 2% to gain over the linear estimate to any denoiser
(``tests/test_eval_denoise.py``), so the T/2 check trains a second short run on Fashion-MNIST
(``tests/test_generation_fashion_mnist.py``, a file of its own so that the two test workers share the work).
A broken schedule, sampler, timestep mapping or EMA swap fails here.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hydra.utils import instantiate

from conftest import run_config
from scalelong.diffusion import Diffusion
from scalelong.eval.denoise import WienerDenoiser, denoising_mse
from scalelong.eval.reference import FIDReference
from scalelong.lit import load_checkpoint
from scalelong.sample import draw
from scalelong.samplers import SAMPLERS
from scalelong.train import train

# The demo's training recipe (without class labels), shared by both runs.
TRAINING = [
    "scaler=cs", "optim.lr=2e-3", "optim.betas=[0.9,0.999]", "optim.warmup_steps=50", "optim.decay=cosine",
    "diffusion.loss_weighting=min_snr", "callbacks.ema.decay=0.995", "callbacks.samples.num_samples=16",
]


def steps(n: int) -> list[str]:
    """Train n steps, validate and checkpoint once at the end."""
    return [f"trainer.max_steps={n}", f"trainer.val_check_interval={n}",
            f"callbacks.checkpoint.every_n_train_steps={n}"]


STEPS = 800
RECIPE = [
    "data=digits", "data.image_size=8", "data.batch_size=32",
    "model=unet_small", "model.img_size=8", "model.ch=16", "model.attn_resolutions=[]", "model.dropout=0.0",
    *TRAINING, *steps(STEPS),
]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory):
    """(EMA module, data module, cache dir) of one short digits run."""
    tmp = tmp_path_factory.mktemp("generation")
    cfg, run_dir = run_config(tmp, RECIPE)
    train(cfg, run_dir)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt"), datamodule, tmp / "fid_stats"


def stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))  # digits are never flipped
    return torch.stack(images), torch.stack(labels)


@pytest.mark.slow
def test_the_trained_denoiser_beats_the_wiener_filter(digits_run) -> None:
    module, datamodule, _ = digits_run
    train_x, _ = stack(datamodule.train_set)
    val_x, _ = stack(datamodule.val_set)
    wiener = WienerDenoiser(train_x)
    # t = T/10 and T/4. At t = T/2 no denoiser can show much here: the class-Gaussian posterior mean is within
    # 0.8% of the filter (test_eval_denoise.py); this run gets 0.297 against 0.263 (0.276 after 1,600 steps).
    for t in (100, 250):
        mse, x_t = denoising_mse(module.model, module.diffusion, val_x, t, torch.Generator().manual_seed(0))
        linear = float((wiener(x_t, float(module.diffusion.alphas_cumprod[t])) - val_x).pow(2).mean())
        assert mse < linear, f"t={t}: model x0 MSE {mse:.4f} is not below the Wiener filter's {linear:.4f}"


@pytest.mark.slow
def test_samples_beat_noise_shuffled_pixels_and_a_single_class_on_domain_fid(digits_run) -> None:
    module, datamodule, cache = digits_run
    ref = FIDReference.build(datamodule, "domain", "train", cache, domain={"epochs": 5})
    n = 500
    samples, _ = draw(module, n, 250, seed=0, sampler="dpm_solver", steps=25)
    real, labels = stack(datamodule.train_set)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((n, 1, 8, 8), generator=g).clamp(-1, 1)
    shuffled = real[:n].flatten(1)[:, torch.randperm(64, generator=g)].view(n, 1, 8, 8)
    single = real[labels == 3][:n]
    fid = {name: ref.fid(ref.features(x)) for name, x in
           [("model", samples), ("noise", noise), ("shuffled", shuffled), ("single_class", single),
            ("real", real[-n:])]}
    worst_reference = min(fid["noise"], fid["shuffled"], fid["single_class"])
    assert fid["real"] < 0.25 * worst_reference, fid  # the metric separates real from degenerate sets
    assert fid["model"] < 0.5 * worst_reference, fid


# Every registered sampler, the two anchors, and the FID callbacks' setting. Deterministic (ODE) samplers are
# compared with DDIM-250, the probability-flow ODE integrated finely on the trained timesteps (within 1.5% of
# DDIM-1000's FID here); stochastic (SDE) samplers with DDPM-250, the ancestral sampler the model was trained for on
# 250 of its 1,000 timesteps. The two families legitimately differ for an imperfect model (the SDE's noise corrects
# part of the model's error), so each is held to its own anchor, and every sampler runs min(default, 250) steps:
# the SDE samplers' FID moves with their step count (DDPM-1000 2.31, DDPM-250 2.67), so a sampler is compared with
# its anchor at the same count (Euler–Maruyama-250 2.59, 3% from DDPM-250). 1,000-step runs on 500 samples cost
# 100 s each on one core. Measured FIDs: docs/generation.md, "Tests that fail when generation breaks".
ANCHORS = {False: ("ddim", 250), True: ("ddpm", 250)}  # by Sampler.stochastic
RUNS = sorted({(name, min(s.default_steps, 250)) for name, s in SAMPLERS.items()}
              | set(ANCHORS.values()) | {("dpm_solver", 25)})
SAMPLER_TOLERANCE = 0.25  # relative FID difference allowed within a family


@pytest.mark.slow
def test_samplers_agree_by_fid_on_a_trained_checkpoint_and_a_wrong_schedule_does_not(digits_run) -> None:
    """From the same weights, every registered ODE sampler scores within SAMPLER_TOLERANCE of DDIM-250's
    domain FID and every SDE sampler within it of DDPM-250's (the U-ViT protocol samplers, DPM-Solver
    fast and Euler–Maruyama, against diffusers' DDIM and DDPM). Sampling the same weights under the
    cosine schedule they were not trained with (every ᾱ_t wrong) lands outside both bands."""
    module, datamodule, cache = digits_run
    ref = FIDReference.build(datamodule, "domain", "train", cache, domain={"epochs": 5})
    n = 500

    def fid_of(m, sampler: str, steps: int) -> float:
        return ref.fid(ref.features(draw(m, n, n, seed=1, sampler=sampler, steps=steps)[0]))

    fid = {f"{s}-{k}": fid_of(module, s, k) for s, k in RUNS}
    print("sampler FIDs:", {k: round(v, 2) for k, v in fid.items()})
    for s, k in RUNS:
        anchor = fid["{}-{}".format(*ANCHORS[SAMPLERS[s].stochastic])]
        assert abs(fid[f"{s}-{k}"] - anchor) <= SAMPLER_TOLERANCE * anchor, (f"{s}-{k}", fid)
    wrong = copy.deepcopy(module)
    wrong.diffusion = Diffusion(schedule="cosine")
    bad = fid_of(wrong, "dpm_solver", 25)
    print("cosine-schedule FID:", round(bad, 2))
    assert bad > (1 + SAMPLER_TOLERANCE) * max(fid["{}-{}".format(*a)] for a in ANCHORS.values()), (bad, fid)
