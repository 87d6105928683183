"""U-ViT (Bao et al., CVPR 2023): a ViT with long skip connections, the backbone of ScaleLong.

Tokens are [label?, time, patches]. depth//2 in-blocks each push a skip; after one mid-block,
each out-block pops the innermost remaining skip s_i and merges it as
x = Linear(2D→D)(cat[x, κ_i·s_i]) (paper Eq. (3) with concat fusion), where κ_i·s_i is
``self.skip_scales[i - 1](s_i)``. i = 1 is the outermost skip (first in-block → last out-block).
"""

from __future__ import annotations

import torch
from torch import nn

from scalelong.errors import ConfigError
from scalelong.models.common import Backbone, timestep_embedding
from scalelong.scalers import Scaler, SkipSpec, build_scaler


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).unbind(2)
        out = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LN transformer block; out-blocks first merge a skip through ``skip_linear``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, scaler: Scaler, skip: bool):
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.branch1, self.branch2 = scaler.branch(), scaler.branch()

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.branch1(self.attn(self.norm1(x)))
        return x + self.branch2(self.mlp(self.norm2(x)))


class UViT(Backbone):
    """U-ViT with a pluggable LSC scaler.

    Args:
        img_size, patch_size, in_chans: input geometry (img_size must be divisible by patch_size).
        embed_dim, depth, num_heads, mlp_ratio: transformer width; "depth 12" builds 6 in-blocks,
            1 mid-block, 6 out-blocks (13 blocks, 6 LSCs).
        num_classes: 0 for unconditional; otherwise a label token is prepended and label
            ``num_classes`` is the null label of classifier-free guidance.
        class_dropout: probability of replacing the label by the null label while training.
        null_label: keep the extra embedding row of the null label; the official ImageNet 64
            models have none (1,000 rows, no label dropout, no guidance).
        scaler: LSC scaler recipe or name (see :mod:`scalelong.scalers`).
        conv_head: 3×3 conv after unpatchify (U-ViT's default).
        init_std: std of the trunc-normal init of every Linear weight (U-ViT's 0.02). A merge
            Linear(2D→D) then passes a signal with gain ≈ init_std·√(2D): 0.64 per out-block at the
            paper's D = 512, 0.23 at D = 64, so a narrow model starts with its main path almost cut;
            0.02·√(512/D) keeps the paper's gain at width D.
    """

    def __init__(
        self,
        img_size: int = 32,
        patch_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 512,
        depth: int = 12,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        class_dropout: float = 0.1,
        null_label: bool = True,
        scaler: Scaler | str | None = None,
        conv_head: bool = True,
        init_std: float = 0.02,
    ) -> None:
        super().__init__(in_chans, num_classes, class_dropout, null_label)
        if img_size % patch_size:
            raise ConfigError(
                f"model.img_size={img_size} is not divisible by model.patch_size={patch_size}; "
                f"choose a patch size that divides the image size"
            )
        if embed_dim % num_heads:
            raise ConfigError(f"model.embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        scaler = build_scaler(scaler)
        self.img_size, self.patch_size, self.embed_dim = img_size, patch_size, embed_dim
        self.grid = img_size // patch_size
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.label_embed = nn.Embedding(self.label_rows, embed_dim) if num_classes else None
        self.extras = 2 if num_classes else 1
        num_tokens = self.extras + self.grid**2
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))

        def block(skip: bool) -> Block:
            return Block(embed_dim, num_heads, mlp_ratio, scaler, skip)

        self.in_blocks = nn.ModuleList(block(False) for _ in range(depth // 2))
        self.mid_block = block(False)
        self.out_blocks = nn.ModuleList(block(True) for _ in range(depth // 2))
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch_size**2 * in_chans)
        self.final_layer = nn.Conv2d(in_chans, in_chans, 3, padding=1) if conv_head else nn.Identity()
        if init_std <= 0:
            raise ConfigError(f"model.init_std={init_std} must be > 0 (U-ViT uses 0.02)")
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(lambda m: _init_linear(m, init_std))
        # Built after the U-ViT init so an LS gate keeps PyTorch's default init (σ(ζ) ≈ 0.5).
        self.skip_scales = scaler.skips(
            [SkipSpec(i, "tokens", (num_tokens, embed_dim)) for i in range(1, depth // 2 + 1)]
        )

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        extra = [timestep_embedding(t, self.embed_dim).unsqueeze(1)]
        if self.label_embed is not None:
            extra.insert(0, self.label_embed(self.labels(y, x.shape[0])).unsqueeze(1))
        else:
            self.check_no_labels(y)
        x = torch.cat([*extra, x], dim=1) + self.pos_embed

        skips = []
        for blk in self.in_blocks:
            x = blk(x)
            skips.append(x)
        x = self.mid_block(x)
        for blk, i in zip(self.out_blocks, range(len(skips), 0, -1)):
            x = blk(x, self.skip_scales[i - 1](skips.pop()))

        x = self.decoder_pred(self.norm(x))[:, self.extras :]
        p, g, c = self.patch_size, self.grid, self.in_chans
        # unpatchify: B (h w) (p1 p2 C) -> B C (h p1) (w p2), with h = w = g patches of p × p pixels
        x = x.view(-1, g, g, p, p, c)  # B h w p1 p2 C
        x = x.permute(0, 5, 1, 3, 2, 4).reshape(-1, c, g * p, g * p)  # B C h p1 w p2 -> B C (h p1) (w p2)
        return self.final_layer(x)

    def stages(self) -> tuple[nn.ModuleList, nn.Module, nn.ModuleList]:
        return self.in_blocks, self.mid_block, self.out_blocks


def _init_linear(m: nn.Module, std: float) -> None:
    """U-ViT init: trunc-normal(std) Linear weights, zero biases, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)

