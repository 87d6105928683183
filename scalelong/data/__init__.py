"""Lightning data modules: every batch is (x in [-1, 1], float32 B×C×H×W; y int64), see ``base``."""

from scalelong.data.base import ImageDataModule
from scalelong.data.celeba import CelebA64DataModule
from scalelong.data.cifar10 import CIFAR10DataModule
from scalelong.data.digits import DigitsDataModule
from scalelong.data.fashion_mnist import FashionMNISTDataModule
from scalelong.data.image_folder import ImageFolderDataModule, ImageNet64DataModule

__all__ = [
    "CIFAR10DataModule",
    "CelebA64DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImageNet64DataModule",
]
