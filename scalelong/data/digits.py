"""scikit-learn's bundled handwritten digits (1,797 images, 8×8, values 0..16), for fast offline tests.

Values are mapped to [-1, 1] (0 -> -1, 16 -> 1) and upsampled bilinearly to ``image_size``; the
1,797 images are split once with ``seed`` into ``val_size`` validation images and the rest for training.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

from scalelong.data.base import ImageDataModule, Sample, TensorImageDataset, fixed_subset_indices
from scalelong.errors import ConfigError


class DigitsDataModule(ImageDataModule):
    """Digits 0–9 (10 classes, 1 channel); ``root`` is accepted for a uniform interface and not used."""

    name = "digits"

    channels = 1
    num_classes = 10

    def __init__(self, val_size: int = 297, image_size: int = 28, **options: Any) -> None:
        """``options``: the other options of :class:`~scalelong.data.base.ImageDataModule`."""
        super().__init__(val_size=val_size, **options)
        if image_size < 8:
            raise ConfigError(f"data.image_size={image_size} is below the digits' native 8; use 8 or more.")
        self.image_size = image_size

    def load_splits(self) -> tuple[Dataset[Sample], Dataset[Sample]]:
        """Upsampled float images in memory, split into training and validation images."""
        digits = load_digits()
        images = torch.from_numpy(digits.images).float().unsqueeze(1) / 8.0 - 1.0
        # Bilinear interpolation is a convex combination of neighbours, so values stay in [-1, 1].
        images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        labels = torch.from_numpy(digits.target).long()
        n = len(images)
        if self.val_size >= n:
            raise ConfigError(f"data.val_size={self.val_size} leaves no training digits; use less than {n}.")
        val_mask = torch.zeros(n, dtype=torch.bool)
        val_mask[fixed_subset_indices(n, self.val_size, self.seed)] = True
        return (
            TensorImageDataset(images[~val_mask], labels[~val_mask], self.random_flip),
            TensorImageDataset(images[val_mask], labels[val_mask]),
        )
