from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from scalelong.diffusion import Diffusion
from scalelong.errors import ConfigError
from scalelong.samplers import SAMPLERS

CONF = Path(__file__).resolve().parents[1] / "conf" / "diffusion"
DIFFUSERS_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_alphas_cumprod_match_diffusers(schedule: str) -> None:
    diffusion = Diffusion(schedule=schedule)
    reference = DDPMScheduler(beta_schedule=DIFFUSERS_SCHEDULE[schedule]).alphas_cumprod.double()
    assert diffusion.alphas_cumprod.dtype == torch.float64
    assert diffusion.alphas_cumprod.shape == (1000,)
    torch.testing.assert_close(diffusion.alphas_cumprod, reference, atol=1e-6, rtol=0)


def test_linear_schedule_endpoints() -> None:
    diffusion = Diffusion()
    assert diffusion.betas[0].item() == pytest.approx(1e-4)
    assert diffusion.betas[-1].item() == pytest.approx(0.02)
    # ᾱ_{T-1} = Π(1 - β) ≈ 4.0e-5 for the DDPM linear schedule.
    assert diffusion.alphas_cumprod[-1].item() == pytest.approx(4.036e-5, rel=1e-3)


def test_schedule_buffers_move_but_are_not_checkpointed() -> None:
    diffusion = Diffusion().to(torch.float32)
    assert diffusion.alphas_cumprod.dtype == torch.float32
    assert dict(diffusion.state_dict()) == {}
    assert {name for name, _ in diffusion.named_buffers()} == {"betas", "alphas_cumprod"}


def test_q_sample_marginal_statistics() -> None:
    diffusion = Diffusion()
    generator = torch.Generator().manual_seed(0)
    n = 200_000
    for step in (10, 300, 999):
        alpha_bar = diffusion.alphas_cumprod[step].item()
        t = torch.full((n,), step)
        x_t = diffusion.q_sample(torch.zeros(n, 1), t, torch.randn(n, 1, generator=generator))
        # Standard errors: mean sqrt(var/n) ≈ 2.2e-3·sd, variance var·sqrt(2/n) ≈ 3.2e-3·var.
        assert abs(x_t.mean().item()) < 5 * ((1 - alpha_bar) / n) ** 0.5
        assert x_t.var().item() == pytest.approx(1 - alpha_bar, rel=0.02)
        # A non-zero x_0 shifts the mean by sqrt(ᾱ_t) x_0 and leaves the variance.
        x_t = diffusion.q_sample(torch.full((n, 1), 0.5), t, torch.randn(n, 1, generator=generator))
        assert x_t.mean().item() == pytest.approx(0.5 * alpha_bar**0.5, abs=5 * ((1 - alpha_bar) / n) ** 0.5)
        assert x_t.var().item() == pytest.approx(1 - alpha_bar, rel=0.02)


def test_q_sample_accepts_float_timesteps() -> None:
    diffusion = Diffusion()
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 1, 500, 999])
    torch.testing.assert_close(diffusion.q_sample(x0, t.float(), noise), diffusion.q_sample(x0, t, noise))


def test_loss_is_per_sample_and_matches_hand_computation() -> None:
    diffusion = Diffusion()
    torch.manual_seed(1)
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 7, 500, 999])
    model = lambda x, t, y: 0.5 * x  # noqa: E731

    loss = diffusion.loss(model, x0, t=t, noise=noise)

    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t]
    a = alpha_bar.sqrt().view(-1, 1, 1, 1)
    b = (1 - alpha_bar).sqrt().view(-1, 1, 1, 1)
    x_t = a * x0.double() + b * noise.double()
    expected = ((0.5 * x_t - noise.double()) ** 2).mean(dim=(1, 2, 3))
    assert loss.shape == (4,)
    torch.testing.assert_close(loss.double(), expected, atol=1e-6, rtol=1e-5)


def test_loss_draws_t_and_noise_when_not_given() -> None:
    diffusion = Diffusion()
    seen: list[Tensor] = []

    def model(x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        seen.append(t)
        return torch.zeros_like(x)

    loss = diffusion.loss(model, torch.zeros(256, 1, 2, 2))
    assert loss.shape == (256,)
    # With a zero prediction the loss is the mean of ε², about 1.
    assert loss.mean().item() == pytest.approx(1.0, abs=0.1)
    assert seen[0].min() >= 0 and seen[0].max() <= 999 and seen[0].unique().numel() > 100


def test_oracle_model_has_zero_loss() -> None:
    diffusion = Diffusion()
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    oracle = lambda x, t, y: noise  # noqa: E731
    loss = diffusion.loss(oracle, x0, t=torch.tensor([0, 1, 500, 999]), noise=noise)
    assert torch.equal(loss, torch.zeros(4))


def test_input_noise_changes_the_input_but_not_the_target() -> None:
    x0, noise, delta = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 1, 500, 999])
    inputs: list[Tensor] = []

    def oracle(x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        inputs.append(x)
        return noise

    clean, noisy = Diffusion(input_noise=0.0), Diffusion(input_noise=0.1)
    assert torch.equal(clean.loss(oracle, x0, t=t, noise=noise, delta=delta), torch.zeros(4))
    assert torch.equal(noisy.loss(oracle, x0, t=t, noise=noise, delta=delta), torch.zeros(4))
    x_t = clean.q_sample(x0, t, noise)
    torch.testing.assert_close(inputs[0], x_t)
    torch.testing.assert_close(inputs[1], x_t + 0.1 * delta)
    # Without an explicit δ a fresh draw is used: the input differs from x_t by σ_δ·N(0, I).
    noisy.loss(oracle, x0, t=t, noise=noise)
    assert (inputs[2] - x_t).std().item() == pytest.approx(0.1, rel=0.15)


def test_continuous_time_matches_the_vp_sde_of_u_vit() -> None:
    """Our linear schedule in continuous time is close to U-ViT's VP-SDE, log ᾱ(t) = −0.1 t − 9.95 t²:
    measured |Δ log ᾱ| ≤ 0.068 (at t = 1, where ᾱ ≈ 4e-5), relative ≤ 0.7% for t ≥ 0.1; near t = 0
    1 − ᾱ is 9% smaller (1.00e-4 vs 1.10e-4 at t = 1e-3), the discrete β being per step."""
    diffusion = Diffusion()
    t = torch.tensor([1e-4, 1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
    vp = -(0.1 * t + 0.5 * 19.9 * t**2)
    ours = diffusion.log_alpha_bar(1000 * t - 1)
    assert (ours - vp).abs().max().item() < 0.07
    assert ((ours - vp).abs() / vp.abs())[2:].max().item() < 0.008
    assert ((ours - vp).abs() / vp.abs())[:2].max().item() < 0.1


def label_eps(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
    """ε(x, t, y) = -0.1·x + 0.02·y: a prediction with a known, linear dependence on the label."""
    return -0.1 * x + 0.02 * y.float().view(-1, 1, 1, 1)


def test_cfg_with_scale_one_is_the_conditional_path() -> None:
    diffusion = Diffusion()
    y = torch.tensor([0, 3])
    batches: list[Tensor] = []

    def model(x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        batches.append(labels)
        return label_eps(x, t, labels)

    out = diffusion.sample(model, (2, 3, 4, 4), "ddim", steps=10, y=y, num_classes=4, generator=seeded(0))
    assert all(torch.equal(labels, y) for labels in batches)
    unconditional_call = lambda x, t, _: label_eps(x, t, y)  # noqa: E731
    expected = diffusion.sample(unconditional_call, (2, 3, 4, 4), "ddim", steps=10, generator=seeded(0))
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cfg_combines_conditional_and_null_predictions(sampler: str) -> None:
    """ε = ε(∅) + s·(ε(y) - ε(∅)): for ε = -0.1x + 0.02y that is -0.1x + 0.02(∅ + s(y - ∅))."""
    diffusion = Diffusion()
    num_classes, scale = 4, 3.0
    y = torch.tensor([0, 1, 3])
    batches: list[Tensor] = []

    def model(x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        batches.append(labels)
        return label_eps(x, t, labels)

    guided_label = num_classes + scale * (y.float() - num_classes)
    combined = lambda x, t, _: -0.1 * x + 0.02 * guided_label.view(-1, 1, 1, 1)  # noqa: E731
    out = diffusion.sample(
        model, (3, 3, 4, 4), sampler, steps=10, y=y,
        guidance_scale=scale, num_classes=num_classes, generator=seeded(0),
    )
    expected = diffusion.sample(combined, (3, 3, 4, 4), sampler, steps=10, generator=seeded(0))
    torch.testing.assert_close(out, expected)
    # One forward of batch 2B per step: conditional labels, then the null label.
    assert len(batches) == 10
    assert all(torch.equal(labels, torch.tensor([0, 1, 3, 4, 4, 4])) for labels in batches)


def test_bad_names_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="'quadratic'.*linear, cosine"):
        Diffusion(schedule="quadratic")
    with pytest.raises(ConfigError, match="guidance_scale=2.0 needs class labels"):
        Diffusion().sample(lambda x, t, y: torch.zeros_like(x), (1, 3, 4, 4), guidance_scale=2.0)
    with pytest.raises(ConfigError, match="input_noise must be >= 0"):
        Diffusion(input_noise=-0.1)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_hydra_configs_instantiate(schedule: str) -> None:
    diffusion = instantiate(OmegaConf.load(CONF / f"{schedule}.yaml"))
    assert isinstance(diffusion, Diffusion)
    assert (diffusion.num_timesteps, diffusion.schedule, diffusion.input_noise) == (1000, schedule, 0.0)


def test_min_snr_weights_follow_hang_et_al_and_uniform_is_ones():
    """Min-SNR-γ for ε-prediction: weight min(SNR, γ)/SNR — 1 where SNR ≤ γ, γ/SNR on cleaner steps."""
    t = torch.tensor([0, 100, 200, 999])
    assert torch.equal(Diffusion().loss_weights(t), torch.ones(4))
    d = Diffusion(loss_weighting="min_snr", min_snr_gamma=5.0)
    w = d.loss_weights(t)
    # Linear schedule: ᾱ_0 = 1 - 1e-4, so SNR_0 = 9999 and the weight is 5/9999.
    assert w[0].item() == pytest.approx(5 / 9999, rel=1e-4)
    snr = d.alphas_cumprod / (1 - d.alphas_cumprod)
    crossing = int((snr > 5).sum())  # the first timestep whose SNR is at most γ
    assert 50 < crossing < 150, crossing  # SNR 5 is ᾱ = 5/6, near t = 90 of the linear schedule
    w_all = d.loss_weights(torch.arange(1000))
    assert torch.all(w_all[crossing:] == 1.0) and torch.all(w_all[:crossing] < 1.0)
    assert torch.all(w_all[1:crossing] >= w_all[:crossing - 1])  # weight grows with the noise level
    with pytest.raises(ConfigError, match="loss_weighting 'snr' is unknown"):
        Diffusion(loss_weighting="snr")
    with pytest.raises(ConfigError, match="min_snr_gamma must be > 0"):
        Diffusion(loss_weighting="min_snr", min_snr_gamma=0)


def test_clipped_eps_is_the_eps_of_the_clipped_x0_and_leaves_in_range_predictions_alone():
    d = Diffusion()
    g = seeded(0)
    x0 = torch.rand((4, 1, 4, 4), generator=g) * 1.8 - 0.9  # inside [-1, 1]
    eps = torch.randn(x0.shape, generator=g)
    for t in (0, 300, 999):
        x_t = d.q_sample(x0, torch.full((4,), t), eps)
        assert torch.allclose(d.clipped_eps(x_t, t, eps), eps, atol=1e-3 if t == 0 else 1e-4)
        wild = eps + 0.5 * torch.randn(x0.shape, generator=g)  # a poor ε̂: its x̂_0 leaves [-1, 1]
        ab = d.alphas_cumprod[t].float()
        x0_hat = (x_t - (1 - ab).sqrt() * wild) / ab.sqrt()
        fixed = d.clipped_eps(x_t, t, wild)
        x0_fixed = (x_t - (1 - ab).sqrt() * fixed) / ab.sqrt()
        assert torch.allclose(x0_fixed, x0_hat.clamp(-1, 1), atol=1e-3), t
        if t > 0:
            assert (x0_hat.abs() > 1).any()


@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver"])
def test_a_cpu_sample_computed_in_row_chunks_is_the_one_computed_at_once(monkeypatch, sampler: str) -> None:
    """Guided sampling of 10 labelled images (20 rows a call) in chunks of 3 rows gives bit-identical samples: rows,
    timesteps and labels stay aligned across chunks (the model mixes each row with its own label only)."""
    import scalelong.diffusion as diffusion_module

    def model(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        return 0.3 * x + 0.01 * y.float().view(-1, 1, 1, 1) + 1e-4 * t.float().view(-1, 1, 1, 1)

    diffusion = Diffusion()
    y = torch.arange(10) % 4

    def draw() -> Tensor:
        g = torch.Generator().manual_seed(0)
        return diffusion.sample(model, (10, 1, 4, 4), sampler, steps=5, y=y, guidance_scale=2.0, num_classes=4,
                                generator=g)

    at_once = draw()
    monkeypatch.setattr(diffusion_module, "CPU_FORWARD_ROWS", 3)
    calls = []
    monkeypatch.setattr(diffusion_module, "forward_in_chunks",
                        lambda *a, _f=diffusion_module.forward_in_chunks: calls.append(a[-1]) or _f(*a))
    assert torch.equal(draw(), at_once) and calls and set(calls) == {3}
