"""Fine-tuning a trained model with few parameters: DiffFit's scale factors γ, BitFit, and the LSC scalers.

DiffFit (Xie et al. 2023; its supplement ``../shared/seeds/000_12daaf7ff84cd4ad.txt``) freezes a trained
diffusion transformer and adds a learnable scale factor γ, initialised to 1, in every block: on the outputs of
self-attention's QKV and projection linears (supplement §2.1, Algorithm 1) and on the block's residual
branches (main paper), then trains only the γs, the biases, the norms and the label embedding, at about 10× a
full fine-tune's learning rate. ScaleLong's scalers are the same idea on the long skips (a κ_i per skip,
learnable in ``ls`` and ``learnable_scalar``), so ``lsc`` asks how far a model gets when only they adapt.

A method (chosen by name, ``finetune=difffit``) says which tensors train; :func:`fine_tune` turns a model built
from the fine-tune config into the base model plus what the method adds. Every tensor of the result is either
copied from the base (frozen unless the method trains it) or new, and new tensors always train: the γs, skip
scalers the base did not have, and a label table whose number of classes changed. New tensors start where the
merged output equals the base model's (γ = 1; a ``learnable_scalar`` κ_i at the base's constant κ_i; an ``ls``
gate as 2·κ_i·σ(ζ) with ζ's last layer zero, so σ = 1/2: its range is (0, 2κ_i) rather than the paper's (0, 1)).
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from scalelong.errors import CheckpointError, ConfigError
from scalelong.models import unet, uvit
from scalelong.models.common import Backbone
from scalelong.scalers import ConstantScale, GatedScale, ScalarScale, SkipScale, SqueezeExcite

log = logging.getLogger(__name__)

RECORD_KEY = "scalelong_finetune"  # in a fine-tune checkpoint: method, base fingerprint, trained tensors
NORMS = (nn.LayerNorm, nn.GroupNorm)
# Model fields a fine-tune may change: the classes (the label table grows or is re-initialised), the
# regularisation, and the skip scaler (only from a constant one to a learnable one, see ``_check_scalers``).
FREE_MODEL_FIELDS = ("num_classes", "class_dropout", "dropout", "scaler")
GEOMETRY_FIELDS = ("img_size", "in_chans")


class Gamma(nn.Module):
    """h ⊙ γ with one γ per channel, initialised to 1 (DiffFit): γ ∈ R^D on the last axis of tokens,
    γ ∈ R^C on axis 1 of a B×C×H×W feature map."""

    def __init__(self, width: int, layout: str) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))
        self.view = (width,) if layout == "tokens" else (width, 1, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.gamma.view(self.view)


class StartFromBase(SkipScale):
    """An ``ls`` gate added at fine-tune time to a skip the base scaled by the constant κ_i:
    κ_i' = 2·κ_i·σ(ζ(GAP(s_i))). ζ's last layer starts at zero, so σ = 1/2 and κ_i' = κ_i exactly."""

    def __init__(self, gated: GatedScale, base_kappa: float) -> None:
        super().__init__(gated.index)
        self.gated, self.factor = gated, 2.0 * base_kappa

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.gated(s) * self.factor

    def kappa(self) -> float:
        return self.gated.kappa() * self.factor


# --------------------------------------------------------------------------------------------
# Methods (chosen by name from the ``finetune`` config group)
# --------------------------------------------------------------------------------------------


class Method(ABC):
    """Which tensors of the (γ-extended) model train; everything else stays the base's, bit for bit."""

    name: ClassVar[str]
    adds_gammas: ClassVar[bool] = False  # DiffFit's γ after every attention's QKV and projection, on every branch
    needs_skip_parameters: ClassVar[bool] = False  # refuse a skip scaler without parameters (none, cs, ...)

    @abstractmethod
    def trains(self, name: str, norms: set[str]) -> bool:
        """Whether parameter ``name`` trains; ``norms`` are the names of the norm layers' parameters."""


class Full(Method):
    """``full``: every parameter (the reference DiffFit compares against)."""

    name = "full"

    def trains(self, name: str, norms: set[str]) -> bool:
        return True


class DiffFit(Method):
    """``difffit``: γ in every block, plus biases, norms, the label embedding and the skip scalers."""

    name = "difffit"
    adds_gammas = True

    def trains(self, name: str, norms: set[str]) -> bool:
        return name.endswith((".gamma", ".bias")) or name in norms or name.startswith(("label_embed.", "skip_scales."))


class BitFit(Method):
    """``bitfit``: the bias terms only (Ben Zaken et al. 2022, DiffFit's BitFit baseline)."""

    name = "bitfit"

    def trains(self, name: str, norms: set[str]) -> bool:
        return name.endswith(".bias")


class LSC(Method):
    """``lsc``: the long-skip scalers' parameters (an ``ls`` gate, a ``learnable_scalar`` κ_i) and the norms."""

    name = "lsc"
    needs_skip_parameters = True

    def trains(self, name: str, norms: set[str]) -> bool:
        return name.startswith("skip_scales.") or name in norms


METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (Full, DiffFit, BitFit, LSC)}


def norm_names(model: nn.Module) -> set[str]:
    """Parameter names of the model's LayerNorm and GroupNorm layers (every name of a shared one)."""
    return {f"{m}.{p}" for m, mod in model.named_modules(remove_duplicate=False) if isinstance(mod, NORMS)
            for p, _ in mod.named_parameters(recurse=False)}


def check_finetune_config(ft: Mapping[str, Any] | None) -> None:
    """One ConfigError for a bad ``finetune`` group: an unknown method, no ``finetune.from``, a bad lr_scale."""
    if not ft or ft.get("method", "none") == "none":
        return
    method = ft.get("method")
    if method not in METHODS:
        raise ConfigError(f"finetune.method={method!r} is unknown; choose finetune=none or one of {', '.join(METHODS)}")
    if not ft.get("from"):
        raise ConfigError(f"finetune={method} needs the checkpoint to start from: finetune.from=PATH "
                          "(a .ckpt written by scalelong-train)")
    if not Path(ft["from"]).is_file():
        raise ConfigError(f"finetune.from={ft['from']} does not exist; pass the .ckpt of a scalelong-train run (a "
                          "fine-tune checkpoint needs its base at the path it was trained from)")
    scale = ft.get("lr_scale")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ConfigError(f"finetune.lr_scale={scale!r} must be a positive number (DiffFit uses 10)")


# --------------------------------------------------------------------------------------------
# Turning a model into the fine-tuned base
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FineTuned:
    """What a fine-tune run trains and where it started: the record stored in its checkpoints."""

    method: str
    base: str  # the path of the base checkpoint, as given
    fingerprint: str  # sha256 of the base's weights
    trained: frozenset[str]  # parameter names in the model (without the module's ``model.`` prefix)
    fast: frozenset[str]  # the γs and skip-scaler parameters, trained at lr × lr_scale
    lr_scale: float

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "base": self.base, "fingerprint": self.fingerprint,
                "trained": sorted(self.trained)}

    def keep_trained(self, checkpoint: dict[str, Any], prefix: str = "model.") -> None:
        """Drop every frozen tensor from a checkpoint's weights (EMA and raw) and add the record: what a fine-tune
        checkpoint stores is what it trained, plus the fingerprint of the base the rest comes from."""
        kept = {prefix + n for n in self.trained}
        for key in ("state_dict", "current_model_state"):
            if key in checkpoint:
                checkpoint[key] = {k: v for k, v in checkpoint[key].items() if k in kept}
        checkpoint[RECORD_KEY] = self.record()

    def complete(self, checkpoint: dict[str, Any], own: Mapping[str, torch.Tensor], path: str | Path,
                 prefix: str = "model.") -> None:
        """Fill a fine-tune checkpoint's weights back in from the base (``own``: the state of the module built
        from it), after checking that it was trained from this very base."""
        record = checkpoint.get(RECORD_KEY)
        if not isinstance(record, dict) or "fingerprint" not in record:
            raise CheckpointError(f"{path} is not a checkpoint of finetune={self.method} (it holds no fine-tune "
                                  "record); resume it with the settings it was trained with")
        if record["fingerprint"] != self.fingerprint:
            raise CheckpointError(
                f"fine-tune checkpoint {path} was trained from a base with weights {record['fingerprint'][:12]}, but "
                f"finetune.from={self.base} has weights {self.fingerprint[:12]}; point finetune.from at the "
                f"checkpoint it was fine-tuned from ({record.get('base')})")
        for key in ("state_dict", "current_model_state"):
            if key not in checkpoint:
                continue
            absent = sorted(n for n in self.trained if prefix + n not in checkpoint[key])
            if absent:
                raise CheckpointError(f"fine-tune checkpoint {path} lacks trained tensors ({len(absent)}, e.g. "
                                      f"{absent[0]}); the file was edited or written by another version")
            checkpoint[key] = {**{k: v for k, v in own.items() if k not in checkpoint[key]}, **checkpoint[key]}


def fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fine_tune(model: Backbone, base: Backbone, base_config: Mapping[str, Any], config: Mapping[str, Any],
              path: str | Path) -> FineTuned:
    """Make ``model`` (built from the fine-tune ``config``) the ``base`` model (built from ``base_config`` and
    loaded from ``path``) plus what ``config.finetune`` adds, freeze what the method does not train, and
    return the record. Raises one ConfigError (image geometry) or CheckpointError (architecture, scaler)."""
    ft = config["finetune"]
    method = METHODS[ft["method"]]()
    _check_model(base_config["model"], config["model"], path)
    _check_scalers(base, model, path)
    copied = _load_base(model, base, path)
    if method.adds_gammas:
        add_gammas(model)
    if method.needs_skip_parameters and not any(n.startswith("skip_scales.") for n, _ in model.named_parameters()):
        raise ConfigError(f"finetune={method.name} trains the skip scalers' parameters, and this scaler has none; "
                          "choose a learnable one (scaler=ls or scaler=learnable_scalar)")
    # Every name of a shared tensor (the ls core, shared by the skips) counts: a checkpoint stores it under each.
    named = list(model.named_parameters(remove_duplicate=False))
    norms = norm_names(model)
    trained = {n for n, p in named if id(p) not in copied or method.trains(n, norms)}
    fast = {n for n in trained if n.endswith(".gamma") or n.startswith("skip_scales.")}
    for name, p in named:
        p.requires_grad_(name in trained)
    return FineTuned(method.name, str(path), fingerprint(base.state_dict()), frozenset(trained), frozenset(fast),
                     float(ft["lr_scale"]))


def _check_model(base: Mapping[str, Any], new: Mapping[str, Any], path: str | Path) -> None:
    """The fine-tune model must be the base's architecture; only the fields in FREE_MODEL_FIELDS may differ."""
    geometry = [k for k in GEOMETRY_FIELDS if base.get(k) != new.get(k)]
    if geometry:
        have = "×".join(str(base.get(k)) for k in ("in_chans", "img_size", "img_size"))
        want = "×".join(str(new.get(k)) for k in ("in_chans", "img_size", "img_size"))
        raise ConfigError(f"finetune.from={path} is a model of {have} images, but the fine-tune model is for {want} "
                          "images; fine-tuning keeps the base's image size and channels: resize the data to the "
                          "base's geometry (e.g. data.image_size) or pick a base trained on images of this shape")
    diffs = [f"model.{k}: {base.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(base) | set(new))
             if k not in FREE_MODEL_FIELDS and base.get(k) != new.get(k)]
    if diffs:
        raise CheckpointError(f"finetune.from={path} holds another architecture ({'; '.join(diffs)}); fine-tune with "
                              "the base's model preset and fields, or pick a base of this model")
    if bool(base.get("num_classes")) != bool(new.get("num_classes")):
        raise ConfigError(f"finetune.from={path} has model.num_classes={base.get('num_classes')} and the fine-tune "
                          f"model.num_classes={new.get('num_classes')}; fine-tuning cannot add or remove the label "
                          "input: keep both unconditional (0) or both class-conditional")


def _check_scalers(base: Backbone, model: Backbone, path: str | Path) -> None:
    """The same skip scaler as the base, or a learnable one (``learnable_scalar``, ``ls``) in place of a constant
    one, which then starts at the base's κ_i; residual-branch scalers (``rezero``, ``stable``) must agree."""
    same = [type(m) for m in base.skip_scales] == [type(m) for m in model.skip_scales]
    upgrade = (all(isinstance(m, ConstantScale) for m in base.skip_scales)
               and all(isinstance(m, ScalarScale | GatedScale) for m in model.skip_scales))
    branches_agree = _branch_types(base) == _branch_types(model)
    constant = all(isinstance(m, ConstantScale) for m in [*base.skip_scales, *model.skip_scales])
    if constant and base.kappas() != model.kappas():
        raise CheckpointError(f"finetune.from={path} scales its skips by κ = {base.kappas()}, the fine-tune scaler by "
                              f"{model.kappas()}; keep the base's scaler settings (e.g. its cs_kappa), or make the "
                              "scalers learnable (scaler=learnable_scalar or ls), which start at the base's κ")
    if not ((same or upgrade) and branches_agree):
        raise CheckpointError(
            f"finetune.from={path} was trained with the skip scaler {type(base.skip_scales[0]).__name__}, which "
            f"the fine-tune scaler ({type(model.skip_scales[0]).__name__}) cannot continue from; keep the base's "
            "scaler, or turn a constant one (none, uniform, cs) into learnable_scalar or ls")


def _branch_types(model: Backbone) -> list[str]:
    return [type(m).__name__ for n, m in model.named_modules() if n.rsplit(".", 1)[-1].startswith("branch")]


def _load_base(model: Backbone, base: Backbone, path: str | Path) -> set[int]:
    """Copy the base's weights into ``model``; return the ids of the parameters now equal to the base's."""
    own, stored = model.state_dict(), base.state_dict()
    unexpected = sorted(set(stored) - set(own))
    if unexpected:
        raise CheckpointError(f"finetune.from={path} holds weights the fine-tune model has no place for (e.g. "
                              f"{unexpected[0]}); fine-tune with the base's model and scaler")
    new = set()
    with torch.no_grad():
        for name, tensor in own.items():
            if name not in stored:
                new.add(name)
            elif name == "label_embed.weight" and tensor.shape != stored[name].shape:
                _grow_labels(tensor, stored[name], base, model)
                new.add(name)
            else:
                tensor.copy_(stored[name])
        copied = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n not in new}
        _start_from_base(model, base)
    return copied


def _grow_labels(table: torch.Tensor, old: torch.Tensor, base: Backbone, model: Backbone) -> None:
    """A label table for another number of classes: the rows of classes 0 … min − 1 and the null label's row
    are the base's, the other rows keep their fresh init; the whole table then trains."""
    shared = min(base.num_classes, model.num_classes)
    table[:shared] = old[:shared]
    if base.null_label and model.null_label:
        table[model.num_classes] = old[base.num_classes]
    log.info("label embedding: %d classes -> %d (rows of classes 0..%d and the null label kept, the table trains)",
             base.num_classes, model.num_classes, shared - 1)


def _start_from_base(model: Backbone, base: Backbone) -> None:
    """Learnable skip scalers in place of the base's constant κ_i start at κ_i (see the module docstring)."""
    for i, (old, current) in enumerate(zip(base.skip_scales, model.skip_scales)):
        if not isinstance(old, ConstantScale):
            continue
        if isinstance(current, ScalarScale):
            current.weight.fill_(old.value)
        elif isinstance(current, GatedScale):
            gate = current.gate
            last = gate.decode.up if isinstance(gate.decode, SqueezeExcite) else gate.core.up
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            model.skip_scales[i] = StartFromBase(current, old.value)


def add_gammas(model: Backbone) -> None:
    """DiffFit's γ after QKV and the projection of every attention, and on every residual branch (U-ViT blocks,
    conv ResBlocks and AttnBlocks)."""
    sites = []  # (parent, attribute, width, layout)
    for module in model.modules():
        if isinstance(module, uvit.Attention):
            sites += [(module, "qkv", module.qkv.out_features, "tokens"),
                      (module, "proj", module.proj.out_features, "tokens")]
        elif isinstance(module, uvit.Block):
            width = module.norm1.normalized_shape[0]
            sites += [(module, "branch1", width, "tokens"), (module, "branch2", width, "tokens")]
        elif isinstance(module, unet.ResBlock):
            sites.append((module, "branch", module.conv2.out_channels, "channels"))
        elif isinstance(module, unet.AttnBlock):
            sites += [(module, "qkv", module.qkv.out_channels, "channels"),
                      (module, "proj", module.proj.out_channels, "channels"),
                      (module, "branch", module.proj.out_channels, "channels")]
    if not sites:
        raise ConfigError(f"finetune=difffit adds γ to attention and residual branches, and {type(model).__name__} "
                          "has none; use finetune=bitfit, lsc or full")
    for parent, attr, width, layout in sites:
        setattr(parent, attr, nn.Sequential(getattr(parent, attr), Gamma(width, layout)))


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
