"""CelebA 64×64 (unconditional) with U-ViT's face crop (paper Table 6; U-ViT ``datasets.py``).

Files in torchvision's layout: ``<root>/celeba/img_align_celeba/*.jpg`` (the 178×218 aligned
images) and ``<root>/celeba/list_eval_partition.txt`` (lines ``<image> <0|1|2>``: 0 train,
1 validation, 2 test). Only those two are needed, not the other annotation files torchvision reads.

U-ViT crops the square box of side 128 centred on (x, y) = (89, 121), i.e. pixels x 25..152 and
y 57..184 (its ``Crop(cy-64, cy+64, cx-64, cx+64)``), then resizes to 64 with PIL bilinear
(``transforms.Resize``) and flips at random for training. ``crop_size`` changes the side of the box
(ScoreSDE's CelebA pipeline uses 140).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from scalelong.data.base import ImageDataModule, ImageFileDataset, Sample
from scalelong.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ALIGNED_SIZE = (178, 218)
FACE_CENTER = (89, 121)
PARTITIONS = {"train": 0, "val": 1, "test": 2}


def read_partition(path: Path) -> dict[int, list[str]]:
    """Parse ``list_eval_partition.txt`` into {partition: [image names]} in file order."""
    partitions: dict[int, list[str]] = {0: [], 1: [], 2: []}
    with open(path) as file:
        for line_number, line in enumerate(file, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in {"0", "1", "2"}:
                raise DataError(
                    f"{path} line {line_number}: expected '<image>.jpg <0|1|2>', got {line.strip()!r}. "
                    "Replace the file with the original list_eval_partition.txt."
                )
            partitions[int(fields[1])].append(fields[0])
    return partitions


class FaceCrop:
    """Crop the ``crop_size`` square around the face centre of an aligned CelebA image, resize to ``size``."""

    def __init__(self, crop_size: int, size: int) -> None:
        cx, cy = FACE_CENTER
        half = crop_size // 2
        self.box = (cx - half, cy - half, cx - half + crop_size, cy - half + crop_size)
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.size != ALIGNED_SIZE:
            raise ValueError(
                f"it is {image.size[0]}×{image.size[1]}, not {ALIGNED_SIZE[0]}×{ALIGNED_SIZE[1]} "
                "like the aligned CelebA images (img_align_celeba)"
            )
        return image.crop(self.box).resize((self.size, self.size), Image.Resampling.BILINEAR)


class CelebA64DataModule(ImageDataModule):
    """CelebA, 162,770 training images (partition 0); validation is a fixed subset of partition 1."""

    name = "celeba64"

    channels = 3
    num_classes = 0

    def __init__(self, image_size: int = 64, crop_size: int = 128, random_flip: bool = True, **options: Any) -> None:
        """``options``: the other options of :class:`~scalelong.data.base.ImageDataModule`."""
        super().__init__(random_flip=random_flip, **options)
        if not 0 < crop_size <= min(ALIGNED_SIZE):
            raise ConfigError(
                f"data.crop_size={crop_size} must be in 1..{min(ALIGNED_SIZE)} (the aligned image width)."
            )
        self.image_size = image_size
        self.crop_size = crop_size

    @property
    def image_dir(self) -> Path:
        """The folder of aligned JPEGs."""
        return self.root / "celeba" / "img_align_celeba"

    @property
    def partition_file(self) -> Path:
        """The train/val/test partition list."""
        return self.root / "celeba" / "list_eval_partition.txt"

    def load_splits(self) -> tuple[Dataset[Sample], Dataset[Sample]]:
        """Partition 0 for training and partition 1 for validation, decoded from JPEG per item."""
        if not self.image_dir.is_dir() or not self.partition_file.is_file():
            raise DataError(
                f"CelebA not found: looked for {self.image_dir}/*.jpg and {self.partition_file}. Download "
                "img_align_celeba.zip and list_eval_partition.txt from "
                "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
                f"(or run torchvision.datasets.CelebA('{self.root}', download=True) where Google Drive is reachable) "
                f"and unpack them so that {self.image_dir / '000001.jpg'} exists."
            )
        partitions = read_partition(self.partition_file)
        on_disk = set(os.listdir(self.image_dir))
        absent = [name for names in partitions.values() for name in names if name not in on_disk]
        if absent:
            raise DataError(
                f"{len(absent)} images listed in {self.partition_file} are missing from {self.image_dir} "
                f"(first: {absent[0]}). Unpack the complete img_align_celeba.zip there."
            )
        preprocess = FaceCrop(self.crop_size, self.image_size)
        train, val = (
            [(str(self.image_dir / name), 0) for name in partitions[PARTITIONS[split]]] for split in ("train", "val")
        )
        if not train or not val:
            raise DataError(
                f"{self.partition_file} lists {len(train)} training and {len(val)} validation images; "
                "both must be non-empty. Replace it with the original list_eval_partition.txt."
            )
        return (
            ImageFileDataset(train, preprocess, "RGB", self.random_flip),
            ImageFileDataset(val, preprocess, "RGB"),
        )
