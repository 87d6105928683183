"""What every backbone shares: the observation interface, labels, and the time embedding.

Observation interface (used by the stability callbacks through forward hooks; nothing is
computed when no hook is attached):

* ``skip_scales[i - 1]``: the module applying κ_i to LSC i (i = 1 outermost). A forward hook
  receives s_i as its input and κ_i·s_i as its output.
* ``decoder_levels()[i]``: the decoder module whose output is the decoder feature right after
  skip i is merged (Thm 3.1's h at that level).
* ``blocks()``: named blocks whose parameters make up the per-block gradient norms (Thm 3.3).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from scalelong.errors import ConfigError
from scalelong.scalers import SkipScales


class Backbone(nn.Module, ABC):
    """Base class of the ε-prediction backbones: ``forward(x_t, t, y=None) -> ε̂``."""

    skip_scales: SkipScales

    def __init__(self, in_chans: int, num_classes: int, class_dropout: float, null_label: bool = True) -> None:
        super().__init__()
        if num_classes < 0:
            raise ConfigError(f"model.num_classes={num_classes} must be >= 0 (0 = unconditional)")
        if num_classes and not null_label and class_dropout > 0:
            raise ConfigError(
                f"model.class_dropout={class_dropout} needs the null label it drops to; set "
                "model.null_label=true or model.class_dropout=0"
            )
        self.in_chans, self.num_classes, self.class_dropout = in_chans, num_classes, class_dropout
        self.null_label = bool(null_label)

    @property
    def label_rows(self) -> int:
        """Rows of the label embedding: one per class, plus the null label ``num_classes`` if any."""
        return self.num_classes + int(self.null_label) if self.num_classes else 0

    @property
    def num_skips(self) -> int:
        return len(self.skip_scales)

    def kappas(self) -> list[float]:
        """Current κ_1 … κ_N of the LSC scaler."""
        return self.skip_scales.kappas()

    def labels(self, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Labels of a class-conditional model; ``None`` or dropped labels become the null label.

        Label ``num_classes`` is the null label of classifier-free guidance; in training mode a
        label is replaced by it with probability ``class_dropout``. A model built with
        ``null_label=False`` (the official ImageNet 64 U-ViT) has no such row and needs labels.
        """
        if y is None and not self.null_label:
            raise ConfigError(
                "this class-conditional model has no null label (model.null_label=false); pass class "
                "labels y, and sample with guidance_scale=1.0"
            )
        null = torch.full((batch,), self.num_classes, dtype=torch.long, device=self.device)
        if y is None:
            return null
        if self.training and self.class_dropout > 0:
            drop = torch.rand(batch, device=y.device) < self.class_dropout
            y = torch.where(drop, null, y)
        return y

    def check_no_labels(self, y: torch.Tensor | None) -> None:
        if y is not None:
            raise ConfigError(
                "class labels were passed to an unconditional model (model.num_classes=0); "
                "set model.num_classes to the number of classes or call the model with y=None"
            )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @abstractmethod
    def stages(self) -> tuple[Sequence[nn.Module], nn.Module, Sequence[nn.Module]]:
        """(encoder blocks, middle block, decoder blocks), each list in the order ``forward`` runs them:
        encoder block k outputs skip k + 1, and the j-th decoder block merges skip N − j."""

    def decoder_levels(self) -> dict[int, nn.Module]:
        """Skip index i -> the decoder module whose output follows the merge of skip i."""
        decoder = self.stages()[2]
        return {len(decoder) - j: block for j, block in enumerate(decoder)}

    def blocks(self) -> dict[str, nn.Module]:
        """Block name -> module (``in_block_k``, ``mid_block``, ``out_block_k``, k from 1 in forward order),
        the units of the per-block gradient norms."""
        encoder, middle, decoder = self.stages()
        named = {f"in_block_{k + 1}": b for k, b in enumerate(encoder)}
        named["mid_block"] = middle
        named.update({f"out_block_{k + 1}": b for k, b in enumerate(decoder)})
        return named


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, width ``dim`` (Transformer/DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))
