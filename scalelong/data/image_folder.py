"""Image folders in torchvision's ImageFolder layout ``<root>/<folder>/<split>/<class>/*.png|jpg``.

Images are decoded per item and brought to ``image_size`` as ADM and U-ViT do for ImageNet
(``center_crop_arr``): halve with a box filter while the short side is at least twice the target,
resize the short side to the target with bicubic, then crop the centre square.
ImageNet 64×64 (paper Table 6) is this layout with 1000 class folders.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from scalelong.data.base import ImageDataModule, ImageFileDataset, Sample, fixed_subset_indices
from scalelong.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MODES = {1: "L", 3: "RGB"}


class CenterCropResize:
    """Resize the short side to ``size`` (box halving, then bicubic) and crop the centre ``size``×``size``."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        while min(image.size) >= 2 * self.size:
            image = image.resize(tuple(side // 2 for side in image.size), resample=Image.Resampling.BOX)
        scale = self.size / min(image.size)
        image = image.resize(tuple(round(side * scale) for side in image.size), resample=Image.Resampling.BICUBIC)
        left, top = (image.size[0] - self.size) // 2, (image.size[1] - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))


class ImageFolderDataModule(ImageDataModule):
    """Any folder of images with ``train_split`` and (optionally) ``val_split`` subfolders.

    Class-conditional: labels are the indices of the sorted class subfolders of the training split;
    ``num_classes`` is their count, listed at construction, unless given. Unconditional: all images
    found below a split folder, labels 0, ``num_classes`` 0. Without a ``val_split`` folder, ``val_size``
    training images (chosen with ``seed``) are held out for validation and not trained on.
    ``folder`` is joined to ``root``; an absolute ``folder`` is used as it is.
    """

    name = "image_folder"

    def __init__(
        self,
        folder: str = "images",
        image_size: int = 64,
        channels: int = 3,
        class_conditional: bool = False,
        num_classes: int | None = None,
        train_split: str = "train",
        val_split: str = "val",
        random_flip: bool = True,
        **options: Any,
    ) -> None:
        """``options``: the other options of :class:`~scalelong.data.base.ImageDataModule`."""
        super().__init__(random_flip=random_flip, **options)
        if channels not in MODES:
            raise ConfigError(f"data.channels={channels} is not supported; use 1 (grayscale) or 3 (RGB).")
        if not class_conditional and num_classes:
            raise ConfigError(f"data.num_classes={num_classes} needs data.class_conditional=true.")
        self.folder = self.root / folder
        self.image_size = image_size
        self.channels = channels
        self.class_conditional = class_conditional
        self.train_split = train_split
        self.val_split = val_split
        if not class_conditional:
            self.num_classes = 0
        elif num_classes is not None:
            self.num_classes = num_classes
        else:
            self.num_classes = len(self._class_to_idx())

    def _split_dir(self, split: str) -> Path:
        return self.folder / split

    def _missing_message(self) -> str:
        """Which of folder, training split or images is missing: a folder that exists is not "not found"."""
        layout = "<class>/*.png|jpg" if self.class_conditional else "**/*.png|jpg"
        split_dir = self._split_dir(self.train_split)
        if not self.folder.is_dir():
            return (
                f"Image folder not found: {self.folder} does not exist (data.root + data.folder). "
                f"Put the images in {split_dir}/{layout}, or point data.root/data.folder at the folder that "
                f"holds '{self.train_split}/'."
            )
        if not split_dir.is_dir():
            return (
                f"Image folder {self.folder} has no '{self.train_split}/' subfolder (data.train_split="
                f"{self.train_split}); move the training images into {split_dir}/{layout}, or set "
                f"data.train_split to the subfolder that holds them."
            )
        return (
            f"No images in {split_dir} (data.train_split={self.train_split}): looked for {layout} with the "
            f"extensions {' '.join(IMG_EXTENSIONS)}; put the training images there."
        )

    def _class_to_idx(self) -> dict[str, int]:
        """Sorted class subfolders of the training split, as torchvision's ImageFolder indexes them."""
        split_dir = self._split_dir(self.train_split)
        if not split_dir.is_dir():
            raise DataError(self._missing_message())
        try:
            return find_classes(split_dir)[1]
        except FileNotFoundError as err:
            raise DataError(
                f"No class subfolders in {split_dir}: {err} Set data.class_conditional=false for unlabelled images."
            ) from err

    def _list(self, split: str, class_to_idx: dict[str, int] | None, allow_empty: bool) -> list[tuple[str, int]]:
        split_dir = self._split_dir(split)
        if class_to_idx is None:
            return [(str(path), 0) for path in sorted(split_dir.rglob("*")) if path.suffix.lower() in IMG_EXTENSIONS]
        try:
            return make_dataset(split_dir, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=allow_empty)
        except FileNotFoundError as err:
            raise DataError(f"Image folder {split_dir} is incomplete: {err}") from err

    def load_splits(self) -> tuple[Dataset[Sample], Dataset[Sample]]:
        """The training split and the validation split (or a held-out part of the training split)."""
        class_to_idx = self._class_to_idx() if self.class_conditional else None
        if class_to_idx is not None and len(class_to_idx) > self.num_classes:
            raise DataError(
                f"{self._split_dir(self.train_split)} has {len(class_to_idx)} class folders but data.num_classes="
                f"{self.num_classes}; remove the extra folders or raise data.num_classes."
            )
        train = self._list(self.train_split, class_to_idx, allow_empty=False)
        if not train:
            raise DataError(self._missing_message())
        if self._split_dir(self.val_split).is_dir():
            val = self._list(self.val_split, class_to_idx, allow_empty=True)
            if not val:
                raise DataError(f"No images in {self._split_dir(self.val_split)}; add some or remove the folder.")
        else:
            self._check_held_out(len(train))
            held_out = set(fixed_subset_indices(len(train), min(self.val_size, len(train) - 1), self.seed))
            val = [sample for i, sample in enumerate(train) if i in held_out]
            train = [sample for i, sample in enumerate(train) if i not in held_out]
            log.info("No %s; holding out %d training images for validation", self._split_dir(self.val_split), len(val))
        preprocess = CenterCropResize(self.image_size)
        mode = MODES[self.channels]
        return (
            ImageFileDataset(train, preprocess, mode, self.random_flip),
            ImageFileDataset(val, preprocess, mode),
        )

    def _check_held_out(self, n: int) -> None:
        """Holding out ``val_size`` of ``n`` training images must leave a training batch."""
        held_out = min(self.val_size, n - 1)
        if n - held_out >= self.batch_size:
            return
        val_size = max(1, n // 10)
        fix = f"data.val_size={val_size}"
        if n - val_size < self.batch_size:
            fix += f" data.batch_size={1 << ((n - val_size).bit_length() - 1)}"
        raise ConfigError(
            f"data.val_size={self.val_size} holds out {held_out} of the {n} images in "
            f"{self._split_dir(self.train_split)} for validation (there is no '{self.val_split}/' folder), leaving "
            f"{n - held_out} to train on, fewer than data.batch_size={self.batch_size}; set {fix}, or put "
            f"validation images in {self._split_dir(self.val_split)}."
        )


class ImageNet64DataModule(ImageFolderDataModule):
    """ImageNet 64×64, class-conditional with 1000 classes: ``<root>/imagenet64/{train,val}/<wnid>/*``."""

    name = "imagenet64"

    def __init__(self, folder: str = "imagenet64", image_size: int = 64, **options: Any) -> None:
        """``options``: the other options of :class:`~scalelong.data.base.ImageDataModule`."""
        super().__init__(folder=folder, image_size=image_size, channels=3, class_conditional=True, num_classes=1000,
                         **options)

    def _missing_message(self) -> str:
        return (
            f"ImageNet 64×64 not found: looked for {self._split_dir(self.train_split)}/<wnid>/*.png|jpg. "
            "Download ImageNet (ILSVRC2012, registration at https://image-net.org), keep its class folders, "
            f"and put the images (any size; they are center-cropped to {self.image_size}) under "
            f"{self._split_dir(self.train_split)} and {self._split_dir(self.val_split)}."
        )
