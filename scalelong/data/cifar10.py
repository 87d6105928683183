"""CIFAR-10 (32×32×3, 10 classes) from the python pickle batches (paper Table 6, U-ViT's CIFAR10 setup).

The files are those of ``cifar-10-python.tar.gz`` unpacked in torchvision's layout
``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch}``: each a pickled dict whose ``data``
entry is a uint8 N×3072 array (the red, green and blue 32×32 planes, row-major) and whose
``labels`` entry is a list of N ints. They are read here rather than through torchvision's
CIFAR10 so that a bad file is named; torchvision downloads them when ``download`` is set.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10

from scalelong.data.base import ImageDataModule, Sample, TensorImageDataset, torchvision_download
from scalelong.errors import DataError

log = logging.getLogger(__name__)

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one CIFAR-10 pickle batch into uint8 N×3×32×32 images and int64 N labels."""
    fix = f"Delete {path.parent} and set data.download=true (or unpack cifar-10-python.tar.gz) to fetch it again."
    try:
        with open(path, "rb") as file:
            # The batches were written by Python 2: latin1 keeps the raw array bytes intact.
            entry = pickle.load(file, encoding="latin1")
    # A damaged pickle can fail with almost any exception type, so all of them mean "corrupt file".
    except Exception as err:
        raise DataError(f"Cannot read CIFAR-10 file {path} ({type(err).__name__}: {err}). {fix}") from err
    if not isinstance(entry, dict):
        raise DataError(f"CIFAR-10 file {path} holds a {type(entry).__name__}, not a dict. {fix}")
    entry = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in entry.items()}
    data, labels = entry.get("data"), entry.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"CIFAR-10 file {path} has no uint8 N×3072 'data' array. {fix}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"CIFAR-10 file {path} has {labels.size} 'labels' in 0..9 for {len(data)} images. {fix}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10: 50,000 training and 10,000 test images; validation is a fixed subset of the test split."""

    name = "cifar10"
    image_size, channels, num_classes = 32, 3, 10

    def __init__(self, random_flip: bool = True, download: bool = False, **options: Any) -> None:
        """``options``: the other options of :class:`~scalelong.data.base.ImageDataModule`."""
        super().__init__(random_flip=random_flip, **options)
        self.download = download

    @property
    def batch_dir(self) -> Path:
        """torchvision's folder of the pickle batches."""
        return self.root / CIFAR10.base_folder

    def prepare_data(self) -> None:
        """Download through torchvision if files are missing and ``download`` is set; else DataError."""
        missing = [name for name in TRAIN_BATCHES + TEST_BATCHES if not (self.batch_dir / name).is_file()]
        if not missing:
            return
        torchvision_download(
            CIFAR10, self.root, self.download, "download disabled (set data.download=true to fetch it)",
            not_found=f"CIFAR-10 not found: looked for {', '.join(missing)} in {self.batch_dir}",
            fix=f"Get it with data.download=true where there is network, or unpack cifar-10-python.tar.gz "
                f"from https://www.cs.toronto.edu/~kriz/cifar.html into {self.root}.",
        )

    def load_splits(self) -> tuple[Dataset[Sample], Dataset[Sample]]:
        """Training batches 1–5 and the test batch, each split one uint8 tensor in memory."""
        self.prepare_data()
        splits = []
        for names in (TRAIN_BATCHES, TEST_BATCHES):
            images, labels = zip(*(read_cifar_batch(self.batch_dir / name) for name in names))
            splits.append((torch.cat(images), torch.cat(labels)))
        (train_images, train_labels), (test_images, test_labels) = splits
        return (
            TensorImageDataset(train_images, train_labels, self.random_flip),
            TensorImageDataset(test_images, test_labels),
        )
