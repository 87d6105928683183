"""scikit-learn's digits (scalelong/data/digits.py): the fixed split, upsampled and at the native 8×8."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from conftest import all_batches, check_batch
from scalelong.data import DigitsDataModule


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
