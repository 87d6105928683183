"""Data modules read small files written in each dataset's real on-disk format, offline."""

from __future__ import annotations

import gzip
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.datasets import CIFAR10

from scalelong.data import (
    CelebA64DataModule,
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    ImageNet64DataModule,
)
from scalelong.data.celeba import FACE_CENTER
from scalelong.errors import ConfigError, DataError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "data"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def check_batch(x: torch.Tensor, y: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert x.shape == shape and x.dtype == torch.float32
    assert -1.0 <= x.min().item() and x.max().item() <= 1.0
    assert y.shape == shape[:1] and y.dtype == torch.int64


def all_batches(loader: torch.utils.data.DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------- Fashion-MNIST (IDX files)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX format: big-endian magic (0x08 = uint8, then the number of dims: 2049 labels, 2051 images), dims, data."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def fashion_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    return images, rng.integers(0, 10, size=n).astype(np.uint8)


@pytest.fixture
def fashion_debian(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Gzipped IDX files named like Debian's dataset-fashion-mnist package: 40 train, 20 test images."""
    debian = tmp_path / "debian"
    debian.mkdir()
    arrays = {}
    for split, n in (("train", 40), ("t10k", 20)):
        images, labels = fashion_arrays(n, seed=len(split))
        arrays[split] = (images, labels)
        for name, array in ((f"{split}-images-idx3-ubyte", images), (f"{split}-labels-idx1-ubyte", labels)):
            with gzip.open(debian / f"{name}.gz", "wb") as file:
                file.write(idx_bytes(array))
    assert struct.unpack(">I", gzip.decompress((debian / "train-images-idx3-ubyte.gz").read_bytes())[:4]) == (2051,)
    assert struct.unpack(">I", gzip.decompress((debian / "train-labels-idx1-ubyte.gz").read_bytes())[:4]) == (2049,)
    return debian, arrays


def test_fashion_mnist_from_debian_gz(tmp_path: Path, fashion_debian) -> None:
    debian, arrays = fashion_debian
    dm = FashionMNISTDataModule(
        root=str(tmp_path / "data"), batch_size=8, val_size=6, debian_dir=str(debian), download=False
    )
    assert (dm.image_size, dm.channels, dm.num_classes) == (28, 1, 10)
    dm.setup()
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    )
    assert len(dm.train_set) == 40 and len(dm.val_set) == 6
    x, y = dm.train_set[0]
    assert torch.equal(x, torch.full((1, 28, 28), -1.0))
    x, y = dm.train_set[1]
    assert torch.equal(x, torch.full((1, 28, 28), 1.0))
    images, labels = arrays["train"]
    x, y = dm.train_set[7]
    assert torch.allclose(x[0], torch.from_numpy(images[7]).float() / 127.5 - 1) and y.item() == labels[7]
    check_batch(*next(iter(dm.train_dataloader())), (8, 1, 28, 28))
    assert len(dm.train_dataloader()) == 5
    x_val, y_val = all_batches(dm.val_dataloader())
    check_batch(x_val, y_val, (6, 1, 28, 28))
    test_images, test_labels = arrays["t10k"]
    expected = torch.from_numpy(test_images).float() / 127.5 - 1
    assert all(any(torch.equal(x, e) for e in expected) for x in x_val[:, 0])
    assert set(y_val.tolist()) <= set(test_labels.tolist())


def test_fashion_mnist_reads_torchvision_layout_without_debian(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 12), ("t10k", 5)):
        images, labels = fashion_arrays(n, seed=3)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    dm = FashionMNISTDataModule(root=str(tmp_path), batch_size=4, debian_dir=str(tmp_path / "nowhere"), download=False)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (12, 5)
    assert torch.equal(dm.val_set[1][0], torch.ones(1, 28, 28))


def test_fashion_mnist_val_set_is_fixed_and_flips_only_train(tmp_path: Path, fashion_debian) -> None:
    debian, _ = fashion_debian

    def make(seed: int = 0) -> FashionMNISTDataModule:
        dm = FashionMNISTDataModule(
            root=str(tmp_path / "data"),
            batch_size=4,
            val_size=7,
            seed=seed,
            random_flip=True,
            debian_dir=str(debian),
            download=False,
        )
        dm.setup()
        return dm

    torch.manual_seed(1)
    first = all_batches(make().val_dataloader())
    torch.manual_seed(2)
    second = all_batches(make().val_dataloader())
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(all_batches(make(seed=5).val_dataloader())[0], first[0])
    dm = make()
    image = dm.train_set.images[3].float() / 127.5 - 1
    draws = [dm.train_set[3][0] for _ in range(40)]
    assert all(torch.equal(d, image) or torch.equal(d, image.flip(-1)) for d in draws)
    assert sum(torch.equal(d, image.flip(-1)) for d in draws) in range(5, 36)


def test_fashion_mnist_missing_names_places_and_commands(tmp_path: Path) -> None:
    dm = FashionMNISTDataModule(root=str(tmp_path / "data"), debian_dir=str(tmp_path / "no-debian"), download=False)
    with pytest.raises(DataError) as err:
        dm.setup()
    message = str(err.value)
    assert str(tmp_path / "data" / "FashionMNIST" / "raw") in message
    assert str(tmp_path / "no-debian") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "bash scripts/get_fashion_mnist.sh" in message


def test_fashion_mnist_corrupt_files_are_named(tmp_path: Path, fashion_debian) -> None:
    debian, _ = fashion_debian
    root = tmp_path / "data"
    dm = FashionMNISTDataModule(root=str(root), debian_dir=str(debian), download=False)
    dm.prepare_data()
    truncated = root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        dm.setup()

    bad_gz = tmp_path / "bad-debian"
    shutil.copytree(debian, bad_gz)
    (bad_gz / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    dm = FashionMNISTDataModule(root=str(tmp_path / "other"), debian_dir=str(bad_gz), download=False)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        dm.setup()
    assert not list((tmp_path / "other" / "FashionMNIST" / "raw").glob("*partial*"))


def test_real_fashion_mnist_from_debian_package(tmp_path: Path) -> None:
    """Needs the Debian package (``make test`` installs it); without it, DataError says how."""
    dm = FashionMNISTDataModule(root=str(tmp_path), batch_size=64, val_size=10_000, download=False)
    dm.setup()
    assert len(dm.train_set) == 60_000 and len(dm.val_set) == 10_000
    assert torch.equal(torch.bincount(dm.train_set.labels), torch.full((10,), 6_000))
    assert torch.equal(torch.bincount(dm.val_set.dataset.labels), torch.full((10,), 1_000))
    x, y = next(iter(dm.train_dataloader()))
    check_batch(x, y, (64, 1, 28, 28))
    assert x.min().item() == -1.0 and x.max().item() == 1.0


# ---------------------------------------------------------------- CIFAR-10 (python pickle batches)


class Py2Pickler(pickle._Pickler):
    """Write bytes as Python 2 ``str`` opcodes, as cPickle did for the real CIFAR-10 batches."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj: object, path: Path) -> None:
    with open(path, "wb") as file:
        Py2Pickler(file, protocol=2).dump(obj)
    # The real files name numpy's module as numpy 1.x (and Python 2) did.
    path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))


def cifar_pixels(index: np.ndarray) -> np.ndarray:
    """Image n has value (n + 50c + h + w) mod 256 at channel c, row h, column w."""
    c, h, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((index[:, None, None, None] + 50 * c + h + w) % 256).astype(np.uint8)


def write_cifar10(root: Path, per_batch: int = 6) -> Path:
    """data_batch_1..5, test_batch and batches.meta with the keys and types of the real files."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        index = np.arange(b * per_batch, (b + 1) * per_batch)
        batch = {
            b"batch_label": f"training batch {b + 1} of 5".encode() if b < 5 else b"testing batch 1 of 1",
            b"labels": [int(i % 10) for i in index],
            b"data": cifar_pixels(index).reshape(per_batch, 3072),
            b"filenames": [f"image_{i}.png".encode() for i in index],
        }
        py2_pickle(batch, folder / name)
    labels = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    py2_pickle({b"num_cases_per_batch": per_batch, b"label_names": labels, b"num_vis": 3072}, folder / "batches.meta")
    return folder


class CIFAR10NoChecksum(CIFAR10):
    """torchvision's reader without the md5 checks that only the real files pass."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


def test_cifar10_reads_real_pickle_format(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), batch_size=4, val_size=4, random_flip=False)
    assert (dm.image_size, dm.channels, dm.num_classes) == (32, 3, 10)
    dm.setup()
    assert len(dm.train_set) == 30 and len(dm.val_set) == 4
    expected = torch.from_numpy(cifar_pixels(np.arange(30))).float() / 127.5 - 1
    x_train, y_train = all_batches(torch.utils.data.DataLoader(dm.train_set, batch_size=30))
    assert torch.equal(x_train, expected) and torch.equal(y_train, torch.arange(30) % 10)
    # Same pixels as torchvision's own reader of this format (HWC there).
    reference = CIFAR10NoChecksum(str(tmp_path), train=True)
    assert reference.classes[9] == "truck"
    assert torch.equal(dm.train_set.images, torch.from_numpy(reference.data).permute(0, 3, 1, 2))
    assert torch.equal(dm.train_set.labels, torch.tensor(reference.targets))
    x_val, y_val = all_batches(dm.val_dataloader())
    check_batch(x_val, y_val, (4, 3, 32, 32))
    test_values = torch.from_numpy(cifar_pixels(np.arange(30, 36))).float() / 127.5 - 1
    assert all(any(torch.equal(x, t) for t in test_values) for x in x_val)
    check_batch(*next(iter(dm.train_dataloader())), (4, 3, 32, 32))


def test_cifar10_val_set_is_fixed(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=20)
    first = all_batches(CIFAR10DataModule(root=str(tmp_path), batch_size=8, val_size=9).val_dataloader())
    second = all_batches(CIFAR10DataModule(root=str(tmp_path), batch_size=8, val_size=9).val_dataloader())
    assert first[0].shape == (9, 3, 32, 32)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_cifar10_missing_and_corrupt(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(root=str(tmp_path))
    with pytest.raises(DataError) as err:
        dm.setup()
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value) and "data.download=true" in str(err.value)
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3"):
        CIFAR10DataModule(root=str(tmp_path)).setup()


def test_batch_larger_than_training_set_is_a_config_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(ConfigError, match="batch_size=64"):
        CIFAR10DataModule(root=str(tmp_path), batch_size=64).train_dataloader()


# ---------------------------------------------------------------- CelebA (aligned JPEGs + partition list)


def celeba_face(crop_size: int = 128) -> Image.Image:
    """178×218 image: red inside U-ViT's face box, blue outside."""
    pixels = np.zeros((218, 178, 3), dtype=np.uint8)
    pixels[..., 2] = 255
    cx, cy = FACE_CENTER
    top, left = cy - crop_size // 2, cx - crop_size // 2
    pixels[top : top + crop_size, left : left + crop_size] = (255, 0, 0)
    return Image.fromarray(pixels)


def write_celeba(root: Path, partitions: list[int]) -> Path:
    folder = root / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True)
    face = celeba_face()
    lines = []
    for i, partition in enumerate(partitions, start=1):
        face.save(images / f"{i:06d}.jpg", quality=100, subsampling=0)
        lines.append(f"{i:06d}.jpg {partition}\n")
    (folder / "list_eval_partition.txt").write_text("".join(lines))
    return folder


def test_celeba64_face_crop_and_partitions(tmp_path: Path) -> None:
    write_celeba(tmp_path, [0] * 6 + [1] * 3 + [2] * 2)
    dm = CelebA64DataModule(root=str(tmp_path), batch_size=4, val_size=2)
    assert (dm.image_size, dm.channels, dm.num_classes) == (64, 3, 0)
    dm.setup()
    assert len(dm.train_set) == 6 and len(dm.val_set) == 2
    assert [Path(p).name for p, _ in dm.val_set.dataset.samples] == ["000007.jpg", "000008.jpg", "000009.jpg"]
    x, y = next(iter(dm.train_dataloader()))
    check_batch(x, y, (4, 3, 64, 64))
    assert torch.equal(y, torch.zeros(4, dtype=torch.long))
    # The whole 64×64 output comes from the red face box: no blue from outside it.
    assert x[:, 0].min().item() > 0.9 and x[:, 2].max().item() < -0.9
    wider = CelebA64DataModule(root=str(tmp_path), batch_size=4, crop_size=140)
    wider.setup()
    assert wider.val_set[0][0][2, 0].max().item() > 0.0  # a 140 box reaches into the blue border
    again = CelebA64DataModule(root=str(tmp_path), val_size=2)
    assert torch.equal(all_batches(dm.val_dataloader())[0], all_batches(again.val_dataloader())[0])


def test_celeba64_missing_malformed_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        CelebA64DataModule(root=str(tmp_path)).setup()
    assert "img_align_celeba" in str(err.value) and "list_eval_partition.txt" in str(err.value)
    folder = write_celeba(tmp_path, [0, 0, 1])
    partition = folder / "list_eval_partition.txt"
    partition.write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(DataError, match="line 2"):
        CelebA64DataModule(root=str(tmp_path)).setup()
    partition.write_text("000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n000099.jpg 2\n")
    with pytest.raises(DataError, match="000099.jpg"):
        CelebA64DataModule(root=str(tmp_path)).setup()
    partition.write_text("000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n")
    (folder / "img_align_celeba" / "000002.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    dm = CelebA64DataModule(root=str(tmp_path), batch_size=1)
    dm.setup()
    with pytest.raises(DataError, match="000002.jpg"):
        dm.train_set[1]
    Image.new("RGB", (64, 64)).save(folder / "img_align_celeba" / "000001.jpg")
    with pytest.raises(DataError, match="000001.jpg.*178×218"):
        dm.train_set[0]


# ---------------------------------------------------------------- Image folders and ImageNet 64×64


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


# ---------------------------------------------------------------- scikit-learn digits


def test_digits_split_shapes_and_values() -> None:
    dm = DigitsDataModule(batch_size=16)
    assert (dm.image_size, dm.channels, dm.num_classes) == (28, 1, 10)
    dm.setup()
    assert len(dm.train_set) == 1500 and len(dm.val_set) == 297
    x, y = next(iter(dm.train_dataloader()))
    check_batch(x, y, (16, 1, 28, 28))
    assert len(dm.train_dataloader()) == 1500 // 16
    x_val, y_val = all_batches(dm.val_dataloader())
    check_batch(x_val, y_val, (297, 1, 28, 28))
    assert x_val.min().item() == -1.0 and x_val.max().item() == pytest.approx(1.0, abs=0.05)
    again = all_batches(DigitsDataModule(batch_size=16).val_dataloader())
    assert torch.equal(x_val, again[0]) and torch.equal(y_val, again[1])


def test_digits_native_size_is_the_raw_data() -> None:
    dm = DigitsDataModule(batch_size=8, val_size=100, image_size=8)
    dm.setup()
    digits = load_digits()
    raw = torch.from_numpy(digits.images).float() / 8 - 1
    images = torch.cat([dm.train_set.images, dm.val_set.dataset.images])
    assert images.shape == (1797, 1, 8, 8)
    assert torch.equal(images.sum(0)[0], raw.sum(0))
    labels = torch.cat([dm.train_set.labels, dm.val_set.dataset.labels])
    assert torch.equal(torch.bincount(labels), torch.bincount(torch.from_numpy(digits.target)))


# ---------------------------------------------------------------- Hydra configs


@pytest.mark.parametrize(
    ("name", "cls", "shape"),
    [
        ("fashion_mnist", FashionMNISTDataModule, (28, 1, 10)),
        ("cifar10", CIFAR10DataModule, (32, 3, 10)),
        ("celeba64", CelebA64DataModule, (64, 3, 0)),
        ("imagenet64", ImageNet64DataModule, (64, 3, 1000)),
        ("image_folder", ImageFolderDataModule, (64, 3, 0)),
        ("digits", DigitsDataModule, (28, 1, 10)),
    ],
)
def test_configs_instantiate(tmp_path: Path, name: str, cls: type, shape: tuple[int, int, int]) -> None:
    cfg = OmegaConf.create({"paths": {"data_dir": str(tmp_path)}, "data": OmegaConf.load(CONF_DIR / f"{name}.yaml")})
    dm = instantiate(cfg.data)
    assert type(dm) is cls and dm.root == tmp_path and dm.batch_size == 64
    assert (dm.image_size, dm.channels, dm.num_classes) == shape


def test_resumable_batch_sampler_resumes_mid_epoch_and_shards_by_rank() -> None:
    from scalelong.data.base import ResumableBatchSampler

    full = ResumableBatchSampler(n=50, batch_size=4, seed=3)
    assert len(full) == 12
    stream = [b for _ in range(3) for b in full]  # three epochs, uninterrupted
    resumed = ResumableBatchSampler(n=50, batch_size=4, seed=3, start=17)
    assert [b for _ in range(2) for b in resumed] == stream[17:]
    assert stream[:12] != stream[12:24]  # each epoch is reshuffled
    epoch0 = [i for batch in stream[:12] for i, _ in batch]
    assert len(set(epoch0)) == 48  # no index repeats within an epoch
    ranks = [list(ResumableBatchSampler(50, 4, 3, rank=r, world_size=2)) for r in range(2)]
    assert ranks[0] == stream[0:12:2][:6] and ranks[1] == stream[1:12:2][:6]
    flips = [f for batch in stream for _, f in batch]
    assert 0.3 < sum(flips) / len(flips) < 0.7


@pytest.mark.parametrize(
    "overrides,global_batch,per_process",
    [
        (["experiment=cifar10_uvit_s2", "trainer=ddp", "trainer.devices=4"], 128, 32),
        (["experiment=imagenet64_uvit_m4", "trainer.devices=8"], 1024, 128),
        (["experiment=imagenet64_uvit_m4", "trainer.devices=2", "trainer.num_nodes=2"], 1024, 256),
        (["experiment=imagenet64_uvit_m4", "trainer.devices=4", "trainer.accumulate_grad_batches=2"], 1024, 128),
    ],
)
def test_data_batch_size_is_the_global_batch_split_over_processes(overrides, global_batch, per_process, tmp_path):
    """Issue 8: a paper experiment on N devices trains with the paper's global batch, not N times it."""
    import lightning as L
    from hydra.utils import instantiate

    from scalelong.config import compose

    cfg = compose([*overrides, "trainer.accelerator=cpu", "trainer.precision=32-true",
                   f"trainer.default_root_dir={tmp_path}", f"paths.data_dir={tmp_path}"])
    trainer = instantiate(cfg.trainer, callbacks=[], logger=False)  # builds the DDP plan, launches nothing
    datamodule = instantiate(cfg.data)
    datamodule.trainer = trainer
    assert isinstance(trainer, L.Trainer) and datamodule.batch_size == global_batch
    assert datamodule.process_batch_size() == per_process


def test_a_global_batch_that_does_not_divide_is_one_config_error():
    from scalelong.data.base import per_process_batch_size

    assert per_process_batch_size(1024, 8) == 128
    with pytest.raises(ConfigError, match=r"data.batch_size=1024 .* 3 processes .* 1 accumulation"):
        per_process_batch_size(1024, 3)
    with pytest.raises(ConfigError, match=r"data.batch_size=128 .* 4 processes .* 3 accumulation"):
        per_process_batch_size(128, 4, 3)


def test_every_data_module_is_named_by_its_conf_data_option() -> None:
    """``name`` (in FID metric names and caches) is the ``conf/data`` option that builds the class."""
    from hydra.utils import get_class

    from scalelong.config import CONF_DIR

    options = sorted((CONF_DIR / "data").glob("*.yaml"))
    assert [p.stem for p in options] == ["celeba64", "cifar10", "digits", "fashion_mnist", "image_folder", "imagenet64"]
    for path in options:
        assert get_class(OmegaConf.load(path)["_target_"]).name == path.stem
    assert DigitsDataModule().name == "digits"
