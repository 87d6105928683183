"""CelebA 64×64 (scalelong/data/celeba.py): aligned JPEGs, the partition list and U-ViT's face crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import all_batches, check_batch
from scalelong.data import CelebA64DataModule
from scalelong.data.celeba import FACE_CENTER
from scalelong.errors import DataError


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
