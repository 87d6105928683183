"""Image folders and ImageNet 64×64 (scalelong/data/image_folder.py): class subfolders of PNGs, held-out
validation, errors that name the folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import all_batches, check_batch
from scalelong.data import ImageFolderDataModule, ImageNet64DataModule
from scalelong.errors import ConfigError, DataError


def write_image_folder(folder: Path, classes: dict[str, int], splits: tuple[str, ...], size: tuple[int, int]) -> None:
    for split in splits:
        for k, (name, count) in enumerate(sorted(classes.items())):
            (folder / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", size, (40 * k, 100, 255)).save(folder / split / name / f"{i}.png")


def test_image_folder_class_conditional(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "pets", {"cat": 3, "dog": 4, "fish": 2}, ("train", "val"), (40, 30))
    dm = ImageFolderDataModule(root=str(tmp_path), folder="pets", batch_size=3, image_size=16, class_conditional=True)
    assert (dm.image_size, dm.channels, dm.num_classes) == (16, 3, 3)
    dm.setup()
    assert len(dm.train_set) == 9 and len(dm.val_set) == 9
    x, y = all_batches(dm.val_dataloader())
    check_batch(x, y, (9, 3, 16, 16))
    assert y.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    # Solid colours survive crop and resize exactly: class k has red 40k.
    assert torch.allclose(x[:, 0, 0, 0], (40 * y.float()) / 127.5 - 1) and torch.all(x[:, 2] == 1.0)
    check_batch(*next(iter(dm.train_dataloader())), (3, 3, 16, 16))


def test_image_folder_unconditional_grayscale_holds_out_val(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "images", {"a": 5, "b": 5}, ("train",), (20, 24))
    dm = ImageFolderDataModule(root=str(tmp_path), batch_size=2, val_size=3, image_size=8, channels=1)
    assert dm.num_classes == 0
    dm.setup()
    assert len(dm.train_set) == 7 and len(dm.val_set) == 3
    train_paths = {p for p, _ in dm.train_set.samples}
    assert not train_paths & {p for p, _ in dm.val_set.dataset.samples}
    x, y = all_batches(dm.val_dataloader())
    check_batch(x, y, (3, 1, 8, 8))
    assert torch.equal(y, torch.zeros(3, dtype=torch.long))


def test_image_folder_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "images" / "train")):
        ImageFolderDataModule(root=str(tmp_path), class_conditional=True)
    with pytest.raises(DataError, match="not found"):
        ImageFolderDataModule(root=str(tmp_path)).setup()
    write_image_folder(tmp_path / "images", {"a": 2}, ("train", "val"), (8, 8))
    (tmp_path / "images" / "val" / "a" / "1.png").write_bytes(b"\x89PNG broken")
    dm = ImageFolderDataModule(root=str(tmp_path), batch_size=1, image_size=8)
    with pytest.raises(DataError, match="1.png"):
        all_batches(dm.val_dataloader())


def test_an_image_folder_that_exists_is_not_reported_not_found(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "0.png")
    with pytest.raises(DataError) as err:
        ImageFolderDataModule(root=str(tmp_path), folder="flat").setup()
    assert str(err.value) == (
        f"Image folder {flat} has no 'train/' subfolder (data.train_split=train); move the training images into "
        f"{flat}/train/**/*.png|jpg, or set data.train_split to the subfolder that holds them.")
    (flat / "train").mkdir()
    with pytest.raises(DataError, match=rf"^No images in {flat / 'train'} \(data.train_split=train\): looked for"):
        ImageFolderDataModule(root=str(tmp_path), folder="flat").setup()
    with pytest.raises(DataError) as err:
        ImageFolderDataModule(root=str(tmp_path), folder="nothere").setup()
    assert str(err.value) == (
        f"Image folder not found: {tmp_path / 'nothere'} does not exist (data.root + data.folder). Put the images "
        f"in {tmp_path / 'nothere'}/train/**/*.png|jpg, or point data.root/data.folder at the folder that holds "
        "'train/'.")


def test_holding_out_val_size_that_leaves_no_training_batch_names_val_size(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "images", {"a": 40}, ("train",), (8, 8))
    folder = tmp_path / "images"
    with pytest.raises(ConfigError) as err:
        ImageFolderDataModule(root=str(tmp_path), image_size=8).setup()  # val_size=1024, batch_size=64
    assert str(err.value) == (
        f"data.val_size=1024 holds out 39 of the 40 images in {folder / 'train'} for validation (there is no 'val/' "
        f"folder), leaving 1 to train on, fewer than data.batch_size=64; set data.val_size=4 data.batch_size=32, "
        f"or put validation images in {folder / 'val'}.")
    with pytest.raises(ConfigError, match="; set data.val_size=4, or put"):
        ImageFolderDataModule(root=str(tmp_path), image_size=8, batch_size=16).setup()
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=8, batch_size=16, val_size=4)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (36, 4)


def test_imagenet64_folder(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "imagenet64", {"n01440764": 2, "n01443537": 3}, ("train", "val"), (64, 64))
    dm = ImageNet64DataModule(root=str(tmp_path), batch_size=2, val_size=4)
    assert (dm.image_size, dm.channels, dm.num_classes) == (64, 3, 1000)
    dm.setup()
    assert len(dm.train_set) == 5 and len(dm.val_set) == 4
    x, y = next(iter(dm.train_dataloader()))
    check_batch(x, y, (2, 3, 64, 64))
    assert set(all_batches(dm.val_dataloader())[1].tolist()) <= {0, 1}
    with pytest.raises(DataError, match="ImageNet 64×64 not found"):
        ImageNet64DataModule(root=str(tmp_path / "empty")).setup()


@pytest.mark.parametrize("channels", [1, 3])
def test_a_16_bit_png_is_scaled_by_its_bit_depth_not_saturated(tmp_path: Path, channels: int) -> None:
    """A 16-bit grayscale PNG holds 0..65535: mid-grey 32896 (= 128 · 257) reads as 128, not as white."""
    (tmp_path / "images" / "train").mkdir(parents=True)
    for i, level in enumerate((0, 32896, 65535)):
        Image.fromarray(np.full((8, 8), level, dtype=np.uint16)).save(tmp_path / "images" / "train" / f"{i}.png")
    with Image.open(tmp_path / "images" / "train" / "1.png") as image:
        assert image.mode.startswith("I")
    dm = ImageFolderDataModule(root=str(tmp_path), batch_size=1, val_size=1, image_size=8, channels=channels,
                               random_flip=False)
    dm.setup()
    pixels = {round(float((x[0, 0, 0] + 1) * 127.5)) for x, _ in (dm.train_set[i] for i in range(2))}
    pixels.add(round(float((dm.val_set[0][0][0, 0, 0] + 1) * 127.5)))
    assert pixels == {0, 128, 255}
