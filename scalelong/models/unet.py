"""Convolutional UNet in the DDPM / ADM style, with a pluggable LSC scaler.

Every input block (the first conv, each ResBlock, each downsample) pushes its output as a skip;
each output block pops the innermost remaining skip s_i and concatenates κ_i·s_i on channels
before its ResBlock (paper Eq. (3) with concat fusion). i = 1 is the first conv's output, the
outermost skip. The DDPM CIFAR-10 preset (ch 128, ch_mult 1,2,2,2, 2 res blocks, attention at
16×16) has 35.7M parameters and 12 LSCs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from scalelong.errors import ConfigError
from scalelong.models.common import Backbone, timestep_embedding
from scalelong.scalers import Scaler, SkipSpec, build_scaler


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between (DDPM)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int, branch):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as its shortcut (DDPM init_scale=0)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.branch = branch

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.emb_proj(nn.functional.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(nn.functional.silu(self.norm2(h))))
        return self.shortcut(x) + self.branch(h)


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection (DDPM)."""

    def __init__(self, ch: int, groups: int, branch) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=-1)
        h = nn.functional.scaled_dot_product_attention(q, k, v)
        return x + self.branch(self.proj(h.transpose(1, 2).reshape(b, c, hgt, wid)))


class Stage(nn.Sequential):
    """A sequence of layers; ResBlocks also receive the time embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(Backbone):
    """DDPM/ADM-style UNet.

    Args:
        img_size, in_chans: input geometry; img_size must be divisible by 2^(len(ch_mult)−1).
        ch, ch_mult: base width and the multiplier of each resolution level.
        num_res_blocks: ResBlocks per level in the encoder (the decoder has one more).
        attn_resolutions: resolutions (in pixels) with self-attention after each ResBlock.
        dropout: dropout inside ResBlocks.
        num_classes, class_dropout, null_label: class conditioning as in :class:`UViT`.
        norm_groups: GroupNorm groups.
        scaler: LSC scaler recipe or name.
    """

    def __init__(
        self,
        img_size: int = 32,
        in_chans: int = 3,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        num_classes: int = 0,
        class_dropout: float = 0.1,
        null_label: bool = True,
        norm_groups: int = 32,
        scaler: Scaler | str | None = None,
    ) -> None:
        super().__init__(in_chans, num_classes, class_dropout, null_label)
        levels = len(ch_mult)
        if img_size % 2 ** (levels - 1):
            raise ConfigError(
                f"model.img_size={img_size} is not divisible by 2^{levels - 1} for "
                f"ch_mult={list(ch_mult)}; use fewer levels or another image size"
            )
        if any((ch * m) % norm_groups for m in ch_mult):
            raise ConfigError(f"model.norm_groups={norm_groups} must divide every width ch*ch_mult")
        scaler = build_scaler(scaler)
        emb_dim = 4 * ch
        self.img_size, self.ch = img_size, ch
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_embed = nn.Embedding(self.label_rows, emb_dim) if num_classes else None

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout, norm_groups, scaler.branch())

        def attn(c: int) -> list[nn.Module]:
            return [AttnBlock(c, norm_groups, scaler.branch())] if resolution in attn_resolutions else []

        resolution, cur = img_size, ch
        self.input_blocks = nn.ModuleList([Stage(nn.Conv2d(in_chans, ch, 3, padding=1))])
        shapes = [(ch, resolution, resolution)]
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.input_blocks.append(Stage(res(cur, ch * mult), *attn(ch * mult)))
                cur = ch * mult
                shapes.append((cur, resolution, resolution))
            if level != levels - 1:
                self.input_blocks.append(Stage(nn.Conv2d(cur, cur, 3, stride=2, padding=1)))
                resolution //= 2
                shapes.append((cur, resolution, resolution))

        self.middle_block = Stage(res(cur, cur), AttnBlock(cur, norm_groups, scaler.branch()), res(cur, cur))

        self.output_blocks = nn.ModuleList()
        skip_channels = [c for c, _, _ in shapes]
        for level, mult in reversed(list(enumerate(ch_mult))):
            for k in range(num_res_blocks + 1):
                layers = [res(cur + skip_channels.pop(), ch * mult), *attn(ch * mult)]
                cur = ch * mult
                if level and k == num_res_blocks:
                    layers.append(Upsample(cur))
                    resolution *= 2
                self.output_blocks.append(Stage(*layers))

        self.out = nn.Sequential(
            nn.GroupNorm(norm_groups, cur), nn.SiLU(), nn.Conv2d(cur, in_chans, 3, padding=1)
        )
        nn.init.zeros_(self.out[-1].weight)
        self.skip_scales = scaler.skips(
            [SkipSpec(i, "channels", shape) for i, shape in enumerate(shapes, start=1)]
        )

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.ch))
        if self.label_embed is not None:
            emb = emb + self.label_embed(self.labels(y, x.shape[0]))
        else:
            self.check_no_labels(y)
        skips = []
        for blk in self.input_blocks:
            x = blk(x, emb)
            skips.append(x)
        x = self.middle_block(x, emb)
        for blk, i in zip(self.output_blocks, range(len(skips), 0, -1)):
            x = blk(torch.cat([x, self.skip_scales[i - 1](skips.pop())], dim=1), emb)
        return self.out(x)

    def stages(self) -> tuple[nn.ModuleList, nn.Module, nn.ModuleList]:
        return self.input_blocks, self.middle_block, self.output_blocks
