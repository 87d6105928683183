"""CIFAR-10 (scalelong/data/cifar10.py): python pickle batches written as the real files are (Python 2 str
opcodes, numpy 1.x module names)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10

from conftest import all_batches, check_batch
from scalelong.data import CIFAR10DataModule
from scalelong.errors import ConfigError, DataError


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
