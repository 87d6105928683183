"""The reference implementations a paper backbone is timed against, built at the paper's settings.

- ``unet_ddpm_cifar10``: diffusers' ``UNet2DModel`` configured as the DDPM CIFAR-10 UNet (ch 128, channel
  multipliers 1, 2, 2, 2, two ResBlocks per level, single-head attention at 16×16, dropout 0.1), the
  configuration of diffusers' converted ``ddpm-cifar10-32``.
- ``uvit_s2_cifar10``: the ``UViT`` class of a U-ViT model file (``libs/uvit.py`` of the official U-ViT or
  ScaleLong repository), which is not installed with scalelong: the user passes its path. The file is imported as
  a module of its package (its ``from .timm import ...`` must resolve), and its class is built with U-ViT-S/2's
  CIFAR-10 settings (patch 2, width 512, depth 12, 8 heads, no qkv bias, no time MLP, unconditional). ScaleLong's
  file also takes ``scalelong`` (0 none, 1 uniform 1/√2, 2 cs, 3 ls) and ``kappa``; a file without them has
  ``none`` only.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import io
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from torch import Tensor, nn

Reference = Callable[[], nn.Module]
"""Builds a fresh reference network; called like the backbone, ``(x, t)``."""

UVIT_S2_CIFAR10 = dict(img_size=32, patch_size=2, in_chans=3, embed_dim=512, depth=12, num_heads=8, mlp_ratio=4,
                       qkv_bias=False, mlp_time_embed=False, num_classes=-1)
"""U-ViT-S/2 on CIFAR-10 (the U-ViT and ScaleLong ``cifar10`` configs)."""
SCALELONG_METHOD = {"none": 0, "uniform": 1, "cs": 2, "ls": 3}
"""scalelong's scaler name -> the ``scalelong`` code of ScaleLong's model file."""


class ReferenceMissing(Exception):
    """A reference cannot be built here; the message says why (the benchmark row shows it)."""


def diffusers_ddpm_unet() -> Reference:
    """A builder of diffusers' ``UNet2DModel`` as the DDPM CIFAR-10 UNet (35.7M parameters, like
    ``unet_ddpm_cifar10``); ``ReferenceMissing`` without diffusers."""
    try:
        from diffusers import UNet2DModel
    except ImportError as err:
        raise ReferenceMissing(f"diffusers is not installed ({err})") from None
    return lambda: _SampleOutput(UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=None, norm_num_groups=32, dropout=0.1, flip_sin_to_cos=False, freq_shift=1,
    ))


class _SampleOutput(nn.Module):
    """A diffusers UNet called as a backbone: ``(x, t) -> ε̂`` rather than an output object."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.img_size, self.in_chans, self.num_classes = 32, 3, 0

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model(x, t).sample


def uvit_reference(path: str | Path | None, scaler: str) -> Reference:
    """A builder of the ``UViT`` of the model file at ``path`` as U-ViT-S/2 on CIFAR-10 with ``scaler``;
    ``ReferenceMissing`` when no path is given, the file cannot be imported, or it has no such scaler."""
    if not path:
        raise ReferenceMissing("reference not given (scalelong-bench --uvit-reference PATH/libs/uvit.py)")
    with contextlib.redirect_stdout(io.StringIO()):  # model files print at import
        cls = _import_class(Path(path), "UViT")
    options = dict(UVIT_S2_CIFAR10)
    accepted = inspect.signature(cls).parameters
    if scaler != "none":
        if "scalelong" not in accepted or scaler not in SCALELONG_METHOD:
            raise ReferenceMissing(f"{path} has no {scaler} (ScaleLong's file takes scalelong= for "
                                   f"{', '.join(SCALELONG_METHOD)})")
        options.update(scalelong=SCALELONG_METHOD[scaler], kappa=0.5)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:  # found now, not as a TypeError after the other rows were measured
        raise ReferenceMissing(f"the UViT of {path} takes no {', '.join(unknown)}; pass a model file whose UViT "
                               "builds U-ViT-S/2 (libs/uvit.py of U-ViT or ScaleLong)")
    return lambda: _Geometry(cls(**options), img_size=32, in_chans=3)


class _Geometry(nn.Module):
    """A reference network with the attributes the benchmark reads (image size, channels, classes)."""

    def __init__(self, model: nn.Module, img_size: int, in_chans: int) -> None:
        super().__init__()
        self.model, self.img_size, self.in_chans, self.num_classes = model, img_size, in_chans, 0

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model(x, t)


def _import_class(path: Path, name: str) -> type:
    """Class ``name`` of the Python file ``path``. When its directory is a package (U-ViT's ``libs/``), the file is
    imported as a module of that package, so that its relative imports resolve; the package gets a name of its own
    per directory, so two model files never share a cached import."""
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ReferenceMissing(f"{path} is not a file; pass the model file, e.g. U-ViT/libs/uvit.py")
    package_dir = path.parent
    alias = f"_scalelong_reference_{hashlib.sha1(str(package_dir).encode()).hexdigest()[:10]}"
    try:
        if (package_dir / "__init__.py").is_file():
            _exec(alias, package_dir / "__init__.py", [str(package_dir)])
            loaded = importlib.import_module(f"{alias}.{path.stem}")
        else:
            loaded = _exec(f"{alias}_{path.stem}", path, None)
    except Exception as err:  # a missing dependency of the file (einops, timm), a syntax error
        raise ReferenceMissing(f"{path} cannot be imported ({type(err).__name__}: {err})") from None
    if not hasattr(loaded, name):
        raise ReferenceMissing(f"{path} defines no class {name}")
    return getattr(loaded, name)


def _exec(module: str, path: Path, search: list[str] | None) -> ModuleType:
    if module in sys.modules:
        return sys.modules[module]
    spec = importlib.util.spec_from_file_location(module, path, submodule_search_locations=search)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        del sys.modules[module]
        raise
    return loaded
