"""Sampling and evaluation rows: each sampler through the library (:func:`scalelong.sampling.draw`) against a bare
loop over the same network and diffusers scheduler, the demo's FID evaluation against drawing its samples in a
bare loop, and our Inception features against torchmetrics'.

The bare loop is what a researcher writes without the library: the scheduler's own timestep spacing for the same
number of network calls, no x̂₀ clipping, no chunking of large batches; for Euler–Maruyama, which no diffusers
scheduler implements, the update x ← a·x + b·ε̂ + c·z with precomputed coefficients.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from scalelong.bench.measure import Precision, interleaved, ratio, spread
from scalelong.bench.table import Row
from scalelong.compiling import INDUCTOR_OPTIONS
from scalelong.config import compose
from scalelong.diffusion import Diffusion
from scalelong.eval.evaluate import evaluate
from scalelong.eval.reference import check_sampling
from scalelong.lit import DiffusionModule, build_module
from scalelong.samplers import SAMPLERS, SchedulerSampler
from scalelong.sampling import draw

LIBRARY_TARGET = ("<=", 1.05)
DEMO_EVAL = ("n_samples=1000", "sampler=dpm_solver", "steps=10", "guidance_scale=2", "references=true")
"""The demo's evaluation, as ``make demo`` runs ``scalelong-eval`` (Makefile)."""


def demo_module(overrides: Sequence[str], precision: Precision) -> tuple[DiffusionModule, DictConfig]:
    """The module of a training config (random weights: the cost of sampling does not depend on them), in eval
    mode, and the config."""
    cfg = compose([*overrides, "trainer.compile=false", "run_name=bench", "paths.run_dir=unused"])
    L.seed_everything(cfg.seed, verbose=False)
    return build_module(cfg).to(precision.device).eval(), cfg


@torch.no_grad()
def bare_sample(model: nn.Module, diffusion: Diffusion, sampler: str, shape: tuple[int, ...], steps: int,
                y: Tensor | None, guidance_scale: float, generator: torch.Generator) -> Tensor:
    """Images drawn by the bare loop (see the module doc), with classifier-free guidance when the scale is not 1."""
    method = SAMPLERS[sampler]
    guided = guidance_scale != 1.0
    y_in = torch.cat([y, torch.full_like(y, model.num_classes)]) if guided else y
    x = torch.randn(shape, generator=generator, device=diffusion.betas.device)

    def eps_of(x: Tensor, t: Tensor) -> Tensor:
        eps = model(torch.cat([x, x]) if guided else x, t.expand(len(y_in) if guided else len(x)), y_in)
        if guided:
            cond, uncond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        return eps

    if isinstance(method, SchedulerSampler):
        scheduler = method.scheduler(diffusion)
        scheduler.set_timesteps(steps, device=x.device)
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(eps_of(x, t), t, x, generator=generator).prev_sample
        return x
    k = torch.linspace(diffusion.num_timesteps - 1, 0, steps, device=x.device)
    a = diffusion.alphas_cumprod[k.long()].float()
    beta = diffusion.betas[k.long()].float()
    for i in range(steps):  # a reverse-SDE step per call: x ← x(1 + β/2) − β/σ ε̂ + √β z
        sigma = (1 - a[i]).sqrt()
        x = x * (1 + beta[i] / 2) - beta[i] / sigma * eps_of(x, k[i]) + beta[i].sqrt() * torch.randn(
            x.shape, generator=generator, device=x.device)
    return x


def sampler_rows(overrides: Sequence[str], batch: int, steps: int, rounds: int, precision: Precision) -> list[Row]:
    """Images/s of every sampler of :data:`scalelong.samplers.SAMPLERS` (``steps`` network calls each, no guidance)
    through :func:`~scalelong.sampling.draw` against the bare loop."""
    module, cfg = demo_module(overrides, precision)
    shape = (batch, module.model.in_chans, module.model.img_size, module.model.img_size)
    y = torch.randint(0, max(module.model.num_classes, 1), (batch,), device=precision.device) \
        if module.model.num_classes else None
    rows = []
    for sampler in SAMPLERS:
        arms: dict[str, Callable[[], object]] = {
            "library": lambda s=sampler: draw(module, batch, batch, 0, sampler=s, steps=steps),
            "bare": lambda s=sampler: bare_sample(module.model, module.diffusion, s, shape, steps, y, 1.0,
                                                  torch.Generator(precision.device).manual_seed(0)),
        }
        times = interleaved(arms, rounds, precision, repeat=2)
        rows.append(Row("sampling", f"{sampler}, {steps} steps, batch {batch}", images_per_s(batch, times["library"]),
                        f"bare loop: {images_per_s(batch, times['bare'])}", ratio(times["library"], times["bare"]),
                        LIBRARY_TARGET, f"{model_name(cfg, overrides)}; {spread(times['library'], times['bare'])}"))
    return rows


def compiled_sampling_rows(overrides: Sequence[str], batch: int, steps: int, rounds: int,
                           precision: Precision) -> list[Row]:
    """DPM-Solver++ through the library with the network compiled (inference graph) against eager."""
    module, cfg = demo_module(overrides, precision)
    compiled = DiffusionModule(torch.compile(module.model, options=INDUCTOR_OPTIONS), module.diffusion).eval()
    start = time.perf_counter()
    draw(compiled, batch, batch, 0, sampler="dpm_solver", steps=steps)
    first = time.perf_counter() - start
    times = interleaved({"eager": lambda: draw(module, batch, batch, 0, sampler="dpm_solver", steps=steps),
                         "compiled": lambda: draw(compiled, batch, batch, 0, sampler="dpm_solver", steps=steps)},
                        rounds, precision)
    return [Row("compile", f"sampling dpm_solver, {steps} steps, batch {batch}", images_per_s(batch, times["compiled"]),
                f"eager: {images_per_s(batch, times['eager'])}", ratio(times["eager"], times["compiled"]),
                note=f"{model_name(cfg, overrides)}; compile and first draw {first:.0f} s; "
                     f"{spread(times['eager'], times['compiled'])}")]


def evaluation_rows(overrides: Sequence[str], eval_overrides: Sequence[str], rounds: int,
                    precision: Precision) -> list[Row]:
    """Seconds of the demo's evaluation (:func:`scalelong.eval.evaluate.evaluate`) on first use (reference statistics
    computed) and with them cached, against drawing the same samples in the bare loop at the same batch."""
    module, cfg = demo_module(overrides, precision)
    datamodule = instantiate(cfg.data)
    with tempfile.TemporaryDirectory() as cache:
        ecfg = compose([*eval_overrides, "ckpt=unused", f"cache_dir={cache}"], config_name="eval")
        steps = check_sampling(ecfg.n_samples, ecfg.sampler, ecfg.steps)

        def run_eval() -> None:
            evaluate(module, datamodule, ecfg, steps, precision.device)

        def bare() -> None:
            g = torch.Generator(precision.device).manual_seed(0)
            for start in range(0, ecfg.n_samples, ecfg.batch_size):
                n = min(ecfg.batch_size, ecfg.n_samples - start)
                shape = (n, module.model.in_chans, module.model.img_size, module.model.img_size)
                y = torch.randint(0, max(module.model.num_classes, 1), (n,), generator=g, device=g.device) \
                    if module.model.num_classes else None
                bare_sample(module.model, module.diffusion, ecfg.sampler, shape, steps, y, ecfg.guidance_scale, g)

        start = time.perf_counter()
        run_eval()
        first = time.perf_counter() - start
        times = interleaved({"eval": run_eval, "bare": bare}, rounds, precision, warmup=0)
    label = f"{ecfg.n_samples} samples, {ecfg.sampler}-{steps}, guidance {ecfg.guidance_scale:g}"
    bare_s = statistics.median(times["bare"])
    return [
        Row("sampling", f"evaluation ({label}), reference statistics cached",
            f"{statistics.median(times['eval']):.1f} s",
            f"bare sampling: {bare_s:.1f} s", ratio(times["eval"], times["bare"]),
            note=f"{model_name(cfg, overrides)}; features, KID and references included"),
        Row("sampling", f"evaluation ({label}), first use", f"{first:.1f} s", f"bare sampling: {bare_s:.1f} s",
            first / bare_s, note="reference statistics of the whole training split computed, then cached"),
    ]


def inception_rows(images: int, batch: int, rounds: int, weights: str | None) -> list[Row]:
    """Our Inception feature pipeline (:func:`scalelong.eval.fid.extract_stats` on uint8 images: channel repeat, TF1
    resize, network, float64 moments) against torchmetrics' ``FrechetInceptionDistance.update`` given inputs already
    in the network's format; batches alternate."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from scalelong.errors import ConfigError
    from scalelong.eval.fid import extract_stats
    from scalelong.eval.inception import INCEPTION_SIZE, load_inception, resize_bilinear_tf1

    try:
        extractor = load_inception(weights, allow_download=False)
    except ConfigError as err:
        return [Row("sampling", "Inception features vs torchmetrics", note=str(err))]
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch, 3, 32, 32), generator=g, dtype=torch.uint8)
    direct = (resize_bilinear_tf1(pixels.float(), INCEPTION_SIZE) - 128) / 128 if extractor.preprocess else pixels
    metric = FrechetInceptionDistance(feature=extractor.network, normalize=extractor.preprocess,
                                      input_img_size=tuple(direct.shape[1:]))

    def ours() -> None:
        extract_stats(extractor, [pixels])

    def theirs() -> None:
        with torch.jit.optimized_execution(False), torch.inference_mode():
            metric.update(direct, real=False)

    times = interleaved({"ours": ours, "torchmetrics": theirs}, rounds * max(1, images // batch),
                        Precision.for_device("cpu"))
    return [Row("sampling", f"Inception features, batch {batch} of 32×32 uint8", images_per_s(batch, times["ours"]),
                f"torchmetrics: {images_per_s(batch, times['torchmetrics'])}",
                ratio(times["ours"], times["torchmetrics"]), ("<=", 1.10), extractor.extractor_id)]


def images_per_s(batch: int, times: list[float]) -> str:
    return f"{batch / statistics.median(times):.1f} images/s"


def model_name(cfg: DictConfig, overrides: Sequence[str]) -> str:
    """``UNet (experiment=fmnist_demo)``: the backbone class and the overrides of the config it came from."""
    return f"{cfg.model._target_.rsplit('.', 1)[-1]} ({' '.join(overrides) or 'scalelong-train defaults'})"
