"""Fashion-MNIST (scalelong/data/fashion_mnist.py): IDX files written in their real on-disk format, gzipped
as Debian's dataset-fashion-mnist ships them or laid out as torchvision does; the real set where installed."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import all_batches, check_batch
from scalelong.data import FashionMNISTDataModule
from scalelong.errors import DataError


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


def test_a_data_root_that_cannot_be_written_is_one_data_error_naming_it(tmp_path: Path, fashion_debian) -> None:
    debian, _ = fashion_debian
    (tmp_path / "a_file").write_text("")
    root = tmp_path / "a_file" / "data"  # below a file: no directory can be made there
    dm = FashionMNISTDataModule(root=str(root), debian_dir=str(debian), download=False)
    with pytest.raises(DataError, match=f"Cannot unpack Fashion-MNIST into {root / 'FashionMNIST' / 'raw'}: .*"
                                        "set paths.data_dir \\(or data.root\\) to a writable directory"):
        dm.setup()
