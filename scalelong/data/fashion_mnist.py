"""Fashion-MNIST (28×28×1, 10 classes): the default CPU-scale dataset (offline sources: README "Quickstart").

The files are the four IDX files in torchvision's layout ``<root>/FashionMNIST/raw/``. When they are
missing, they are unzipped from Debian's package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/*-ubyte.gz``), else downloaded by torchvision where there is
network. The whole split is held in memory as one uint8 tensor.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.datasets import FashionMNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from scalelong.data.base import ImageDataModule, Sample, TensorImageDataset, torchvision_download
from scalelong.errors import DataError

log = logging.getLogger(__name__)

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def gunzip(source: Path, target: Path) -> None:
    """Decompress ``source`` into ``target`` atomically (a concurrent reader never sees half a file)."""
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    try:
        with gzip.open(source, "rb") as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.replace(partial, target)
    except (OSError, EOFError, zlib.error) as err:
        partial.unlink(missing_ok=True)
        raise DataError(
            f"Cannot decompress {source}: {err}. Reinstall it: apt-get install --reinstall dataset-fashion-mnist."
        ) from err


def read_idx_split(raw_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split ("train" or "t10k") with torchvision's IDX reader: uint8 N×28×28 images, int64 N labels."""
    tensors = []
    files = ((f"{split}-images-idx3-ubyte", read_image_file), (f"{split}-labels-idx1-ubyte", read_label_file))
    for name, reader in files:
        path = raw_dir / name
        try:
            tensors.append(reader(str(path)))
        except (OSError, AssertionError, ValueError, TypeError, RuntimeError, KeyError) as err:
            raise DataError(
                f"Cannot read Fashion-MNIST file {path} ({type(err).__name__}: {err}). "
                "Delete it and run `bash scripts/get_fashion_mnist.sh` to fetch it again."
            ) from err
    images, labels = tensors
    if images.shape[1:] != (28, 28) or len(images) != len(labels) or labels.min() < 0 or labels.max() > 9:
        raise DataError(
            f"Fashion-MNIST files in {raw_dir} disagree: {tuple(images.shape)} images, {len(labels)} labels "
            f"in {labels.min().item()}..{labels.max().item()} (expected N×28×28 images and N labels in 0..9). "
            "Delete them and run `bash scripts/get_fashion_mnist.sh` to fetch them again."
        )
    return images, labels


class FashionMNISTDataModule(ImageDataModule):
    """Fashion-MNIST: 60,000 training and 10,000 test images; validation is a fixed subset of the test split."""

    name = "fashion_mnist"
    image_size, channels, num_classes = 28, 1, 10

    def __init__(self, download: bool = True, debian_dir: str = DEBIAN_DIR, **options: Any) -> None:
        """``options``: those of :class:`~scalelong.data.base.ImageDataModule` (no random flips by default)."""
        super().__init__(**options)
        self.download = download
        self.debian_dir = Path(debian_dir)

    @property
    def raw_dir(self) -> Path:
        """torchvision's folder for the unzipped IDX files."""
        return self.root / "FashionMNIST" / "raw"

    def prepare_data(self) -> None:
        """Make the four IDX files present in ``raw_dir``: unzip Debian's copies, else download."""
        missing = [name for name in IDX_FILES if not (self.raw_dir / name).is_file()]
        if not missing:
            return
        if all((self.debian_dir / f"{name}.gz").is_file() for name in missing):
            try:
                self.raw_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise DataError(f"Cannot unpack Fashion-MNIST into {self.raw_dir}: {err.strerror or err}; set "
                                "paths.data_dir (or data.root) to a writable directory.") from err
            for name in missing:
                gunzip(self.debian_dir / f"{name}.gz", self.raw_dir / name)
            log.info("Unzipped Fashion-MNIST from %s into %s", self.debian_dir, self.raw_dir)
            return
        torchvision_download(
            FashionMNIST, self.root, self.download, "download disabled (data.download=false)",
            not_found=f"Fashion-MNIST not found: looked for {', '.join(missing)} in {self.raw_dir} and for their "
                      f".gz copies in {self.debian_dir}",
            fix=f"Get it with `apt-get install dataset-fashion-mnist` or "
                f"`bash scripts/get_fashion_mnist.sh {self.root}`.",
        )

    def load_splits(self) -> tuple[Dataset[Sample], Dataset[Sample]]:
        """Training split and test split, each one uint8 tensor in memory."""
        self.prepare_data()
        train_images, train_labels = read_idx_split(self.raw_dir, "train")
        test_images, test_labels = read_idx_split(self.raw_dir, "t10k")
        return (
            TensorImageDataset(train_images.unsqueeze(1), train_labels, self.random_flip),
            TensorImageDataset(test_images.unsqueeze(1), test_labels),
        )
