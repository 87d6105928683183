"""Long-skip-connection (LSC) scalers: the method of ScaleLong (Huang et al., NeurIPS 2023).

A UNet-like backbone has N long skip connections, indexed i = 1 (outermost: first encoder block
to last decoder block) to i = N (innermost, next to the middle block). Each skip tensor s_i is
multiplied by κ_i before it is merged into the decoder (paper Eq. (3)); the main path is not
scaled. A scaler is a small recipe object chosen by name (``none``, ``uniform``, ``cs``, ...):

* ``recipe.skips(specs)`` builds :class:`SkipScales`, one module per LSC. The backbone applies
  ``skip_scales[i - 1](s_i)`` at the one line where skip i is merged, so a forward hook on that
  module sees s_i (input) and κ_i·s_i (output).
* ``recipe.branch()`` builds the module that multiplies each residual branch inside a block.
  It is the identity for every LSC method; the Table 3 baselines ``rezero`` and ``stable`` scale
  the branch instead of the skip.

Every per-skip module reports its current κ_i through ``kappa()`` for logging.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from scalelong.errors import ConfigError

log = logging.getLogger(__name__)

Layout = Literal["tokens", "channels", "vector"]


@dataclass(frozen=True)
class SkipSpec:
    """What a backbone tells a scaler about one skip tensor.

    ``layout`` is ``tokens`` for U-ViT (per-sample shape L×D), ``channels`` for a conv UNet
    (C×H×W) and ``vector`` for the MLP-UNet of Eq. (3) (m).
    """

    index: int
    layout: Layout
    shape: tuple[int, ...]

    @property
    def width(self) -> int:
        """Size of the axis an LS gate acts on: tokens L, channels C, or features m."""
        return self.shape[0]


# --------------------------------------------------------------------------------------------
# Per-skip modules (the hook points)
# --------------------------------------------------------------------------------------------


class SkipScale(nn.Module):
    """Scale of one LSC. ``forward(s_i)`` returns the tensor merged into the decoder."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def kappa(self) -> float:
        """The current κ_i as one number (1 for methods that do not scale the skip)."""
        return 1.0


class ConstantScale(SkipScale):
    """κ_i fixed at construction: ``none``, ``uniform``, ``cs`` and ``cs_reversed``."""

    def __init__(self, index: int, value: float) -> None:
        super().__init__(index)
        self.value = float(value)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s if self.value == 1.0 else s * self.value

    def kappa(self) -> float:
        return self.value

    def extra_repr(self) -> str:
        return f"index={self.index}, kappa={self.value:.6g}"


class ScalarScale(SkipScale):
    """One trainable κ_i per skip (paper Table 2, "Learnable κ_i")."""

    def __init__(self, index: int, init: float) -> None:
        super().__init__(index)
        self.weight = nn.Parameter(torch.tensor(float(init)))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s * self.weight

    def kappa(self) -> float:
        return float(self.weight.detach())


class SqueezeExcite(nn.Module):
    """ζ(x) = W1 ψ(W2 x) with compression ratio r (paper Eq. (11), SENet).

    Both linear maps carry a bias and keep PyTorch's default init, as the reference code does,
    so σ(ζ(·)) starts near 0.5.
    """

    def __init__(self, in_width: int, hidden: int, out_width: int, activation: str) -> None:
        super().__init__()
        self.down = nn.Linear(in_width, hidden)
        self.act = _activation(activation)
        self.up = nn.Linear(hidden, out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class Gate(nn.Module):
    """σ(de(ζ(en(GAP(s))))): the LS coefficient map of one skip (paper Eq. (9)–(13)).

    GAP averages s over every axis except batch and the gate axis: over D for U-ViT tokens
    (gate B×L×1), over H×W for conv channels (gate B×C×1×1); MLP vectors are not pooled.
    ``encode``/``decode`` map the skip's width to the shared width C_min and back (App. A.2,
    Eq. (12)–(13)); they are identities when the widths agree. Only the skip feeds its gate.
    """

    def __init__(self, spec: SkipSpec, core: SqueezeExcite, encode: nn.Module, decode: nn.Module):
        super().__init__()
        self.pool_dims = {"tokens": (-1,), "channels": (-2, -1), "vector": ()}[spec.layout]
        self.core, self.encode, self.decode = core, encode, decode

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        pooled = s.mean(dim=self.pool_dims, keepdim=True) if self.pool_dims else s
        z = self.decode(self.core(self.encode(pooled.flatten(1))))
        return torch.sigmoid(z).view(pooled.shape)


class GatedScale(SkipScale):
    """LS: s_i ⊙ σ(ζ(GAP(s_i))) (paper Eq. (9)). κ_i readout is the mean gate of the last call."""

    def __init__(self, index: int, gate: Gate) -> None:
        super().__init__(index)
        self.gate = gate
        self._last_gate: torch.Tensor | None = None

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        g = self.gate(s)
        self._last_gate = g.detach()
        return s * g

    def kappa(self) -> float:
        return float("nan") if self._last_gate is None else float(self._last_gate.mean())


class NormScale(SkipScale):
    """``skip_norm`` baseline: normalise the skip before merging (U-ViT pull request 31)."""

    def __init__(self, index: int, norm: nn.Module) -> None:
        super().__init__(index)
        self.norm = norm

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.norm(s)


class SkipScales(nn.ModuleList):
    """The N per-skip modules of a backbone; element i − 1 scales LSC i (i = 1 outermost)."""

    def kappas(self) -> list[float]:
        """Current κ_1 … κ_N, for logging."""
        return [m.kappa() for m in self]


class BranchScale(nn.Module):
    """Multiplies a residual branch by α: trainable (ReZero, init 0) or fixed (stable, τ)."""

    def __init__(self, value: float, trainable: bool) -> None:
        super().__init__()
        if trainable:
            self.alpha = nn.Parameter(torch.tensor(float(value)))
        else:
            self.register_buffer("alpha", torch.tensor(float(value)), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.alpha


# --------------------------------------------------------------------------------------------
# Recipes (chosen by name from the ``scaler`` config group)
# --------------------------------------------------------------------------------------------


class Scaler:
    """Base recipe: builds the per-skip scales and the residual-branch scale of a backbone."""

    name: ClassVar[str]

    def skips(self, specs: Sequence[SkipSpec]) -> SkipScales:
        return SkipScales(ConstantScale(s.index, self.kappa_of(s.index, len(specs))) for s in specs)

    def kappa_of(self, i: int, n: int) -> float:
        """κ_i of skip i among n for the constant scalers."""
        return 1.0

    def branch(self) -> nn.Module:
        return nn.Identity()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class NoScaling(Scaler):
    """``none``: κ_i = 1, the standard UNet."""

    name = "none"


class UniformScaling(Scaler):
    """``uniform``: κ_i = c for all i (the common "1/√2-CS")."""

    name = "uniform"

    def __init__(self, c: float = 1 / math.sqrt(2)) -> None:
        self.c = _check_positive("c", c)

    def kappa_of(self, i: int, n: int) -> float:
        return self.c


class ConstantScaling(Scaler):
    """``cs``: κ_i = κ^(i−1), so κ_1 = 1 on the outermost skip (paper Eq. (8))."""

    name = "cs"

    def __init__(self, kappa: float = 0.5) -> None:
        self.kappa = _check_positive("kappa", kappa)

    def kappa_of(self, i: int, n: int) -> float:
        return self.kappa ** (i - 1)


class ReversedConstantScaling(ConstantScaling):
    """``cs_reversed``: κ_i = κ^(N−i+1), the increasing order ablated in paper Table 4."""

    name = "cs_reversed"

    def kappa_of(self, i: int, n: int) -> float:
        return self.kappa ** (n - i + 1)


class LearnableScalarScaling(Scaler):
    """``learnable_scalar``: one trainable κ_i per skip (paper Table 2), initialised to ``init``."""

    name = "learnable_scalar"

    def __init__(self, init: float = 1.0) -> None:
        self.init = _check_positive("init", init)

    def skips(self, specs: Sequence[SkipSpec]) -> SkipScales:
        return SkipScales(ScalarScale(s.index, self.init) for s in specs)


CODER_HIDDEN = 4  # App. A.2: r_i = ⌊C_i/4⌋, so an encoder/decoder bottleneck is C_i // r_i ≈ 4


class LearnableScaling(Scaler):
    """``ls``: κ_i = σ(ζ(GAP(s_i))), an SE-style calibration module (paper Eq. (9)–(13)).

    ``shared=True`` (the paper's default) uses one ζ on width C_min for every skip, plus one
    encoder/decoder pair per distinct wider width whose bottleneck is C_i // ⌊C_i/4⌋ ≈ 4
    (App. A.2, Eq. (12)–(13)); ``ratio`` is the core's r. ``shared=False`` gives each skip
    its own ζ on its own width.
    """

    name = "ls"

    def __init__(self, ratio: int = 16, activation: str = "relu", shared: bool = True) -> None:
        if int(ratio) < 1:
            raise ConfigError(f"scaler.ratio={ratio} must be a positive integer (paper uses 16)")
        _activation(activation)
        self.ratio, self.activation, self.shared = int(ratio), activation, bool(shared)

    def skips(self, specs: Sequence[SkipSpec]) -> SkipScales:
        identity = nn.Identity()
        if not self.shared:
            return SkipScales(
                GatedScale(s.index, Gate(s, self._se(s.width, s.width, s.width), identity, identity))
                for s in specs
            )
        c_min = min(s.width for s in specs)
        core = self._se(c_min, c_min, c_min)
        coders = {  # Eq. (12)-(13): C_i -> C_i/r_i -> C_min and back, shared by equal widths
            w: (self._coder(w, c_min), self._coder(c_min, w))
            for w in sorted({s.width for s in specs if s.width != c_min})
        }
        return SkipScales(
            GatedScale(s.index, Gate(s, core, *coders.get(s.width, (identity, identity))))
            for s in specs
        )

    def _se(self, in_width: int, out_width: int, skip_width: int) -> SqueezeExcite:
        """The core ζ: an SE map whose bottleneck is skip_width // r (Eq. (11))."""
        hidden = max(1, skip_width // self.ratio)
        return SqueezeExcite(in_width, hidden, out_width, self.activation)

    def _coder(self, in_width: int, out_width: int) -> SqueezeExcite:
        """Encoder (C_i -> C_min) or decoder (C_min -> C_i) of App. A.2, Eq. (12)-(13).

        Its compression ratio is r_i = ⌊C_i/4⌋ with C_i the wider width, so the bottleneck
        C_i // r_i is about 4 whatever C_i is (not the core's ``ratio``).
        """
        wide = max(in_width, out_width)
        hidden = wide // max(1, wide // CODER_HIDDEN)
        return SqueezeExcite(in_width, hidden, out_width, self.activation)


class SkipNorm(Scaler):
    """``skip_norm`` baseline: LayerNorm (tokens, vectors) or GroupNorm (channels) on the skip."""

    name = "skip_norm"

    def __init__(self, groups: int = 32) -> None:
        self.groups = int(groups)

    def skips(self, specs: Sequence[SkipSpec]) -> SkipScales:
        def norm(s: SkipSpec) -> nn.Module:
            if s.layout == "channels":
                return nn.GroupNorm(math.gcd(self.groups, s.shape[0]), s.shape[0])
            return nn.LayerNorm(s.shape[-1])

        return SkipScales(NormScale(s.index, norm(s)) for s in specs)


class ReZero(Scaler):
    """``rezero`` baseline (paper Table 3): each residual branch × α, α trainable, init 0."""

    name = "rezero"

    def branch(self) -> nn.Module:
        return BranchScale(0.0, trainable=True)


class StableScaling(Scaler):
    """``stable`` baseline (paper Table 3): each residual branch × a fixed τ (e.g. 0.1, 0.3)."""

    name = "stable"

    def __init__(self, tau: float = 0.1) -> None:
        self.tau = _check_positive("tau", tau)

    def branch(self) -> nn.Module:
        return BranchScale(self.tau, trainable=False)


SCALERS: dict[str, type[Scaler]] = {
    cls.name: cls
    for cls in (
        NoScaling,
        UniformScaling,
        ConstantScaling,
        ReversedConstantScaling,
        LearnableScalarScaling,
        LearnableScaling,
        SkipNorm,
        ReZero,
        StableScaling,
    )
}


def build_scaler(scaler: Scaler | str | None = None, **kwargs) -> Scaler:
    """A recipe from a name in :data:`SCALERS` (with its options) or an existing recipe."""
    if scaler is None:
        return NoScaling()
    if isinstance(scaler, Scaler):
        return scaler
    if scaler not in SCALERS:
        raise ConfigError(f"unknown scaler {scaler!r}; choose one of {', '.join(SCALERS)}")
    return SCALERS[scaler](**kwargs)


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0:
        raise ConfigError(f"scaler.{name}={value} must be > 0 (the paper uses values in (0, 1])")
    if value > 1:
        log.warning("scaler.%s=%s > 1 amplifies the skips (studied in paper Fig. 13)", name, value)
    return value


def _activation(name: str) -> nn.Module:
    acts = {"relu": nn.ReLU, "elu": nn.ELU, "mish": nn.Mish}
    if name not in acts:
        raise ConfigError(f"scaler.activation={name!r} is not one of {', '.join(acts)}")
    return acts[name]()
