"""What every data module shares (scalelong/data/base.py): its conf/data option, the resumable batch sampler,
the global batch split over processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from scalelong.data import (
    CelebA64DataModule,
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    ImageNet64DataModule,
)
from scalelong.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "data"


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


def test_data_classes_keeps_those_labels_relabelled_in_their_order_and_names_the_subset() -> None:
    """A transfer to unseen classes (docs/results/finetune.md): digits 7 and 2 only, relabelled 0 and 1, in both
    splits, with a name (hence FID and domain-classifier caches) of their own."""
    from collections import Counter

    whole, subset = DigitsDataModule(image_size=8), DigitsDataModule(image_size=8, classes=[7, 2])
    whole.setup(), subset.setup()
    assert (subset.name, subset.num_classes, whole.num_classes) == ("digits_classes7-2", 2, 10)
    for full_split, part in ((whole.train_set, subset.train_set), (whole.val_set.dataset, subset.val_set.dataset)):
        labels = full_split.labels.tolist()
        assert len(part) == labels.count(7) + labels.count(2) > 0
        first_seven = labels.index(7)
        x, y = part[(part.indices.index(first_seven), False)]
        assert int(y) == 0 and x.equal(full_split[first_seven][0])
        assert Counter(int(part[i][1]) for i in range(len(part))) == {0: labels.count(7), 1: labels.count(2)}
    assert subset.train_set.fingerprint() != whole.train_set.fingerprint()
    flipping = DigitsDataModule(image_size=8, classes=[7, 2], random_flip=True)  # a bare index draws its own flip
    flipping.setup()
    torch.manual_seed(0)
    x = flipping.train_set.dataset.images[flipping.train_set.indices[0]]
    drawn = [flipping.train_set[0][0] for _ in range(20)]
    assert any(d.equal(x) for d in drawn) and any(d.equal(x.flip(-1)) for d in drawn)
    reordered = DigitsDataModule(image_size=8, classes=[2, 7])  # other labels: other data
    reordered.setup()
    assert reordered.train_set.fingerprint() != subset.train_set.fingerprint()


DISTINCT = "must list distinct labels in 0..9 (e.g. data.classes=[0,1,2,3,4])."


@pytest.mark.parametrize(("module", "classes", "message"), [
    (DigitsDataModule, [3, 3], f"data.classes=[3, 3] {DISTINCT}"),
    (DigitsDataModule, [10], f"data.classes=[10] {DISTINCT}"),
    (DigitsDataModule, [], f"data.classes=[] {DISTINCT}"),
    (DigitsDataModule, [True, 2], f"data.classes=[True, 2] {DISTINCT}"),
    (DigitsDataModule, 5, "data.classes=5 must be a list of labels (e.g. data.classes=[0,1,2,3,4])."),
    (DigitsDataModule, "5", "data.classes='5' must be a list of labels (e.g. data.classes=[0,1,2,3,4])."),
    (CelebA64DataModule, [0], "data.classes=[0] selects labels, which CelebA64DataModule does not fix in advance; "
                              "set data.classes=null."),
])
def test_a_bad_data_classes_is_one_config_error(module, classes, message) -> None:
    with pytest.raises(ConfigError) as err:
        module(classes=classes)
    assert str(err.value) == message
