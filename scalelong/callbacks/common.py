"""What the stability callbacks share: the probe batch, the logging step rule, the loggers.

Steps. A callback with ``every_n_steps = n`` measures at the training steps k (0-based, the
index of the optimizer step) with (k + 1) % n == 0 and logs the result at step k, the row in
which Lightning writes that step's ``train/loss``. Measurements of the weights (probe batch,
κ readout, robustness) are taken right after update k; gradient norms are those of update k.

Randomness. Every draw uses a ``torch.Generator`` of the callback's own, so the callbacks do
not touch the global RNG that training reseeds every step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import nn
from torch.utils.data import Dataset

from scalelong.errors import ConfigError


@dataclass(frozen=True)
class ProbeBatch:
    """A fixed (x_0, t, ε) drawn once per run from the validation split (docs/metrics.md "Probe batch").

    ``y`` is the label tensor for class-conditional models and ``None`` otherwise; ``x_t`` is
    the forward process at (x_0, t, ε) (paper Eq. (1)), without the optional input noise.
    """

    x0: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor
    y: torch.Tensor | None
    x_t: torch.Tensor

    def __len__(self) -> int:
        return len(self.x0)


def draw_probe_batch(val_set: Dataset, pl_module: L.LightningModule, size: int, seed: int) -> ProbeBatch:
    """``size`` validation images chosen, and their (t, ε) drawn, with a generator seeded by ``seed``.

    The same (validation set, size, seed, schedule) gives the same probe batch in every run.
    Held-out splits are never flipped, and reading them runs under a forked global RNG, so the
    draw neither depends on nor changes the global RNG.
    """
    if size < 1:
        raise ConfigError(f"probe_size={size} must be at least 1")
    g = torch.Generator().manual_seed(seed)
    n = min(size, len(val_set))
    indices = torch.randperm(len(val_set), generator=g)[:n].tolist()
    with torch.random.fork_rng(devices=[]):
        items = [val_set[i] for i in indices]
    x0 = torch.stack([x for x, _ in items])
    labels = torch.stack([torch.as_tensor(y) for _, y in items]).long()
    t = torch.randint(0, pl_module.diffusion.num_timesteps, (n,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    device = pl_module.device
    x0, t, noise = x0.to(device), t.to(device), noise.to(device)
    y = labels.to(device) if pl_module.model.num_classes else None
    return ProbeBatch(x0, t, noise, y, pl_module.diffusion.q_sample(x0, t, noise))


def validation_set(trainer: L.Trainer) -> Dataset:
    """The datamodule's fixed validation subset (``val_set`` after ``setup``)."""
    datamodule = trainer.datamodule
    val_set = getattr(datamodule, "val_set", None)
    if val_set is None:
        raise ConfigError(
            "the stability callbacks draw their probe batch from datamodule.val_set; "
            "train with a scalelong data module (data=...) that provides a validation split"
        )
    return val_set


def due(step: int, every_n_steps: int) -> bool:
    """True if training step ``step`` (0-based) is a logging step of a callback (see module doc)."""
    return every_n_steps > 0 and (step + 1) % every_n_steps == 0


def log_metrics(trainer: L.Trainer, metrics: Mapping[str, float], step: int) -> None:
    """Write ``metrics`` at ``step`` to every logger of the run (CSV, wandb), from rank zero."""
    if not trainer.is_global_zero or not metrics:
        return
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=step)


def wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    """The run's WandbLoggers on rank zero (histograms and tables go only there)."""
    if not trainer.is_global_zero:
        return []
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for a measurement, restoring the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def forward_hooks(hooks: Mapping[nn.Module, object], with_kwargs: bool = False) -> Iterator[None]:
    """Attach forward hooks for the duration of one measurement and remove them afterwards."""
    handles = [m.register_forward_hook(h, with_kwargs=with_kwargs) for m, h in hooks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def energy(h: torch.Tensor) -> float:
    """Mean over the batch of ‖h‖²/numel(h) per sample (Thm 3.1's ‖h_i‖², docs/metrics.md "Feature energy")."""
    return float(h.detach().float().pow(2).flatten(1).mean(dim=1).mean())
