"""The MLP-UNet of ScaleLong Eq. (3), the model the paper's theorems are stated for.

    UNet(x) = f_0(x),   f_{i−1}(x) = b_i ∘ [κ_i · a_i ∘ x + f_i(a_i ∘ x)],   i = 1 … N,

where a_i, b_i and the middle block f_N are each l bias-free m×m linear maps with ReLU between
them (no activation after the last), initialised i.i.d. N(0, 2/m) (Kaiming). h_i, the output
of f_i, is what Thm 3.1 bounds; here h_{i−1} is the output of ``b[i − 1]``.
"""

from __future__ import annotations

import torch
from torch import nn

from scalelong.models.common import Backbone
from scalelong.scalers import Scaler, SkipSpec, build_scaler


def stacked(m: int, layers: int) -> nn.Sequential:
    """W_l φ(W_{l−1} … φ(W_1 x)) with Kaiming N(0, 2/m) weights."""
    mods: list[nn.Module] = []
    for k in range(layers):
        lin = nn.Linear(m, m, bias=False)
        nn.init.normal_(lin.weight, std=(2.0 / m) ** 0.5)
        mods += [lin, nn.ReLU()] if k < layers - 1 else [lin]
    return nn.Sequential(*mods)


class MLPUNet(Backbone):
    """Eq. (3) with width m, N long skips and l layers per block; ``forward(x)`` maps B×m → B×m."""

    def __init__(
        self, width: int = 256, num_skips: int = 6, layers: int = 2, scaler: Scaler | str | None = None
    ) -> None:
        super().__init__(in_chans=width, num_classes=0, class_dropout=0.0)
        scaler = build_scaler(scaler)
        self.a = nn.ModuleList(stacked(width, layers) for _ in range(num_skips))
        self.b = nn.ModuleList(stacked(width, layers) for _ in range(num_skips))
        self.mid = stacked(width, layers)
        self.skip_scales = scaler.skips(
            [SkipSpec(i, "vector", (width,)) for i in range(1, num_skips + 1)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for a_i in self.a:
            x = a_i(x)
            skips.append(x)
        x = self.mid(x)
        for i in range(self.num_skips, 0, -1):
            x = self.b[i - 1](self.skip_scales[i - 1](skips.pop()) + x)
        return x

    def stages(self) -> tuple[list[nn.Module], nn.Module, list[nn.Module]]:
        return list(self.a), self.mid, list(reversed(self.b))  # b_N merges first

    def blocks(self) -> dict[str, nn.Module]:
        """``a_i``, ``mid``, ``b_i``: the paper's Eq. (3) names."""
        named = {f"a_{i + 1}": m for i, m in enumerate(self.a)}
        named["mid"] = self.mid
        named.update({f"b_{i + 1}": m for i, m in enumerate(self.b)})
        return named
