"""What every data module shares: the (x, y) contract, the fixed validation subset, the loaders.

A batch is ``(x, y)``: x float32 B×C×H×W in [-1, 1], y int64 (zeros for unconditional data).
The validation loader serves a fixed subset of the held-out split, drawn once with a fixed seed,
so that a validation loss or a probe batch (docs/metrics.md "Probe batch") changes only when the parameters change.
"""

from __future__ import annotations

import hashlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from omegaconf import ListConfig
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from scalelong.errors import ConfigError, DataError
from scalelong.seeds import derived_seed

log = logging.getLogger(__name__)

Sample = tuple[torch.Tensor, torch.Tensor]
Key = int | tuple[int, bool]  # an index, or (index, flip) chosen by ResumableBatchSampler


def to_signed_unit(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to float32 in [-1, 1] (0 -> -1, 255 -> 1)."""
    return images.float() / 127.5 - 1.0


def fixed_subset_indices(n: int, size: int, seed: int) -> list[int]:
    """``min(size, n)`` distinct indices of ``range(n)``, the same for the same (n, size, seed), sorted."""
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=generator)[: min(size, n)].tolist())


class TensorImageDataset(Dataset[Sample]):
    """Images held in memory as one tensor N×C×H×W; horizontal flips are drawn per item.

    uint8 images are mapped to [-1, 1] per item; float images must already be in [-1, 1].
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, random_flip: bool = False) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"expected N×C×H×W images and N labels, got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()
        self.random_flip = random_flip

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        """Hex SHA-256 of the images and labels: what a cache of statistics of this split is keyed by."""
        digest = hashlib.sha256(f"{tuple(self.images.shape)} {self.images.dtype}".encode())
        for t in (self.images, self.labels):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def __getitem__(self, key: Key) -> Sample:
        index, flip = split_key(key, self.random_flip)
        x = self.images[index]
        x = to_signed_unit(x) if x.dtype == torch.uint8 else x.float()
        return (x.flip(-1) if flip else x), self.labels[index]


def split_key(key: Key, random_flip: bool) -> tuple[int, bool]:
    """(index, flip) of a dataset key; a bare index draws its flip from the global RNG."""
    if isinstance(key, tuple):
        return key[0], random_flip and key[1]
    return key, random_flip and bool(torch.rand(()) < 0.5)


def split_labels(dataset: Dataset[Sample]) -> list[int]:
    """The label of every image of an in-memory or file split, without decoding an image."""
    if isinstance(dataset, TensorImageDataset):
        return dataset.labels.tolist()
    if isinstance(dataset, ImageFileDataset):
        return [label for _, label in dataset.samples]
    raise ConfigError(f"data.classes cannot select classes of a {type(dataset).__name__}; set data.classes=null.")


class ClassSubset(Dataset[Sample]):
    """The images of some classes of a split, relabelled 0, 1, … in the order the classes are given (so a model
    trained on classes [5, 6] sees labels 0 and 1)."""

    def __init__(self, dataset: Dataset[Sample], classes: Sequence[int]) -> None:
        self.dataset = dataset
        self.classes = tuple(classes)
        self.relabel = {c: k for k, c in enumerate(self.classes)}
        self.indices = [i for i, label in enumerate(split_labels(dataset)) if label in self.relabel]

    def __len__(self) -> int:
        return len(self.indices)

    def fingerprint(self) -> str:
        """The split's fingerprint and the classes kept."""
        return hashlib.sha256(f"{self.dataset.fingerprint()} classes {self.classes}".encode()).hexdigest()

    def __getitem__(self, key: Key) -> Sample:
        # a bare index stays bare, so that the split draws its own flip as it does unwrapped
        x, y = self.dataset[(self.indices[key[0]], key[1]) if isinstance(key, tuple) else self.indices[key]]
        return x, torch.tensor(self.relabel[int(y)], dtype=torch.long)


class ResumableBatchSampler(Sampler[list[tuple[int, bool]]]):
    """Training batches whose order and flips are a function of (seed, epoch, position) only.

    Epoch e uses the permutation and flip bits drawn from a generator seeded with (seed, e); rank
    r of W processes takes batches r, r + W, ... of it. The first pass starts at batch
    ``start`` (counted over all epochs), so a run resumed at step k reads exactly the batches an
    uninterrupted run reads from step k on; later passes are whole epochs.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.rank, self.world_size = start, rank, world_size

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def __iter__(self):
        epoch, first = divmod(self.start, len(self))
        self.start = (epoch + 1) * len(self)
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
        order = torch.randperm(self.n, generator=generator).tolist()
        flips = (torch.rand(self.n, generator=generator) < 0.5).tolist()
        for b in range(first, len(self)):
            lo = (b * self.world_size + self.rank) * self.batch_size
            yield [(order[i], flips[i]) for i in range(lo, lo + self.batch_size)]


def open_image(path: str | Path, mode: str) -> Image.Image:
    """Decode one image file fully and convert it to ``mode`` ("RGB" or "L"); DataError if unreadable.

    A 16-bit grayscale image (PIL mode ``I;16``, or ``I`` from older Pillow) is scaled to 8 bits by its bit
    depth (÷ 257, so 65535 → 255); PIL's own conversion clips it, saturating nearly every pixel to white.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode.startswith("I"):
                eight_bit = (np.asarray(image, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8)
                return Image.fromarray(eight_bit).convert(mode)  # uint8 H×W: mode "L"
            return image.convert(mode)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"Cannot read image file {path}: {err}. Replace or delete the file.") from err


class ImageFileDataset(Dataset[Sample]):
    """Images decoded from files per item, passed through ``preprocess`` (crop/resize), flipped at random.

    ``preprocess`` raises ValueError for an image it cannot use; that becomes a DataError naming the file.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        preprocess: Callable[[Image.Image], Image.Image],
        mode: str = "RGB",
        random_flip: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.preprocess = preprocess
        self.mode = mode
        self.random_flip = random_flip

    def __len__(self) -> int:
        return len(self.samples)

    def fingerprint(self) -> str:
        """Hex SHA-256 of the decoding mode and each file's absolute path, label, size and modification time:
        what a cache of statistics of this split is keyed by (another folder, or an edited file, is other data)."""
        digest = hashlib.sha256(self.mode.encode())
        for path, label in self.samples:
            stat = os.stat(path)
            digest.update(f"\0{Path(path).resolve()}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
        return digest.hexdigest()

    def __getitem__(self, key: Key) -> Sample:
        index, flip = split_key(key, self.random_flip)
        path, label = self.samples[index]
        try:
            image = self.preprocess(open_image(path, self.mode))
        except ValueError as err:
            raise DataError(f"Cannot use image file {path}: {err}.") from err
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
        x = to_signed_unit(pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1))
        return (x.flip(-1) if flip else x), torch.tensor(label, dtype=torch.long)


def torchvision_download(dataset: Callable[..., Dataset], root: Path, download: bool, disabled: str,
                         not_found: str, fix: str) -> None:
    """Fetch a dataset with its torchvision class (``FashionMNIST``, ``CIFAR10``) into ``root`` when
    ``download`` is set; otherwise, or if that fails, raise ``DataError("<not_found>; <why>. <fix>")``
    where why is ``disabled`` or the download's error."""
    why = disabled
    if download:
        try:
            dataset(str(root), train=True, download=True)
            return
        except (URLError, OSError, RuntimeError) as err:
            why = f"download failed: {err}"
    raise DataError(f"{not_found}; {why}. {fix}")


def per_process_batch_size(global_batch: int, world_size: int, accumulate_grad_batches: int = 1) -> int:
    """The batch one process loads per micro-step so that one optimiser step sees ``global_batch``.

    ``data.batch_size`` is the global batch the paper states (the official code splits it across
    processes): global = per-process × world size (devices × nodes) × gradient-accumulation steps.
    """
    parts = world_size * accumulate_grad_batches
    if global_batch % parts:
        raise ConfigError(
            f"data.batch_size={global_batch} (the global batch) does not divide into {world_size} "
            f"processes (devices × num_nodes) × {accumulate_grad_batches} accumulation steps; choose a "
            f"device count or trainer.accumulate_grad_batches whose product divides {global_batch}."
        )
    return global_batch // parts


class ImageDataModule(LightningDataModule, ABC):
    """Base of all data modules: subclasses set the shape attributes and implement ``load_splits``.

    ``batch_size`` is the global batch of one optimiser step; each process loads
    :meth:`process_batch_size` images per micro-step (see :func:`per_process_batch_size`).

    Attributes set at construction (before ``setup``): ``name``, ``image_size``, ``channels``, ``num_classes``
    (0 for unconditional data). After ``setup``: ``train_set`` (full training split) and ``val_set``
    (the fixed subset of ``val_size`` images of the held-out split, chosen with ``seed``).

    ``classes`` keeps the images of those labels only, relabelled 0, 1, … in the given order (a transfer to
    unseen classes: ``data.classes=[5,6,7,8,9]``); ``num_classes`` is then their count and ``name`` says which
    they are (``digits_classes5-6-7-8-9``), so that FID statistics and domain classifiers of a subset are
    cached apart from the whole dataset's.
    """

    image_size: int
    channels: int
    num_classes: int
    shuffle_seed: int = 0  # seed of the training order; scalelong-train sets it to the run's seed

    @property
    def name(self) -> str:
        """The dataset's name in metric names and caches (``fid_<name>``), the ``conf/data`` option that builds
        it; a subclass sets it as a class attribute, else it is the class name without ``DataModule``."""
        return self.__dict__.get("_name") or type(self).__name__.removesuffix("DataModule").lower()

    @name.setter
    def name(self, value: str) -> None:
        self.__dict__["_name"] = value

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: int = 1024,
        random_flip: bool = False,
        seed: int = 0,
        classes: Sequence[int] | None = None,
    ) -> None:
        """The options every data module takes (a subclass passes them on as ``**options``).

        Args:
            root: the data folder (``paths.data_dir``).
            batch_size: the global batch of one optimiser step.
            num_workers: loader processes.
            val_size: images of the fixed validation subset.
            random_flip: flip training images horizontally at random (held-out images never).
            seed: the seed of the validation subset.
            classes: keep only these labels, relabelled 0, 1, … in this order (None: every image).
        """
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be at least 1, got {batch_size}.")
        if val_size < 1:
            raise ConfigError(f"data.val_size must be at least 1, got {val_size}.")
        self.root = Path(root)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.random_flip = random_flip
        self.seed = seed
        self.classes = self._check_classes(classes)
        if self.classes:
            self.num_classes = len(self.classes)
            self.name = f"{self.name}_classes{'-'.join(map(str, self.classes))}"
        self.train_set: Dataset[Sample] | None = None
        self.val_set: Dataset[Sample] | None = None

    def _check_classes(self, classes: Sequence[int] | None) -> tuple[int, ...] | None:
        """``classes`` as a tuple, or a ConfigError naming what is wrong with it."""
        if classes is None:
            return None
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence | ListConfig):
            raise ConfigError(f"data.classes={classes!r} must be a list of labels (e.g. data.classes=[0,1,2,3,4]).")
        chosen = tuple(classes)
        labels = getattr(type(self), "num_classes", 0)
        if not labels:
            raise ConfigError(f"data.classes={list(chosen)} selects labels, which {type(self).__name__} does not "
                              "fix in advance; set data.classes=null.")
        wrong = [c for c in chosen if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < labels]
        if not chosen or wrong or len(set(chosen)) != len(chosen):
            raise ConfigError(f"data.classes={list(chosen)} must list distinct labels in 0..{labels - 1} "
                              f"(e.g. data.classes=[0,1,2,3,4]).")
        return chosen

    @abstractmethod
    def load_splits(self) -> tuple[Dataset[Sample], Dataset[Sample]]:
        """Return (training split, held-out split); raise DataError if the data is missing or unreadable."""

    def setup(self, stage: str | None = None) -> None:
        """Load both splits once and fix the validation subset."""
        if self.train_set is not None:
            return
        train_set, held_out = self.load_splits()
        if self.classes:
            train_set, held_out = ClassSubset(train_set, self.classes), ClassSubset(held_out, self.classes)
        if len(held_out) < self.val_size:
            log.info("val_size %d exceeds the held-out split; using all %d images", self.val_size, len(held_out))
        self.train_set = train_set
        self.val_set = Subset(held_out, fixed_subset_indices(len(held_out), self.val_size, self.seed))
        log.info("%s: %d training images, %d validation images", type(self).__name__, len(train_set), len(self.val_set))

    def process_batch_size(self) -> int:
        """Images per process and micro-step: ``batch_size`` / (world size × accumulation steps)."""
        trainer = self.trainer
        if trainer is None:
            return self.batch_size
        return per_process_batch_size(self.batch_size, trainer.world_size, trainer.accumulate_grad_batches)

    def train_dataloader(self) -> DataLoader[Sample]:
        """Shuffled training batches (the last incomplete one dropped), resumable at any step.

        The batch sampler shards by rank itself, so the trainer runs with
        ``use_distributed_sampler=False``.
        """
        per_process = self.process_batch_size()
        self.setup("fit")
        if len(self.train_set) < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the {len(self.train_set)} training images; "
                "lower data.batch_size."
            )
        trainer = self.trainer
        world, accumulate = (trainer.world_size, trainer.accumulate_grad_batches) if trainer else (1, 1)
        log.info("global batch %d = %d per process × %d processes × %d accumulation steps",
                 self.batch_size, per_process, world, accumulate)
        sampler = ResumableBatchSampler(
            len(self.train_set),
            per_process,
            self.shuffle_seed,
            start=trainer.global_step * trainer.accumulate_grad_batches if trainer else 0,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader[Sample]:
        """The fixed validation subset, in a fixed order."""
        self.setup("validate")
        return DataLoader(
            self.val_set,
            batch_size=self.process_batch_size(),
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
