"""Domain-feature FID: the small classifier, its cache, and FID on real Fashion-MNIST."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from scalelong.errors import ConfigError
from scalelong.eval import domain
from scalelong.eval.domain import DomainClassifier, DomainFeatures, classifier_accuracy, domain_features
from scalelong.eval.fid import extract_stats, fid_from_stats, metric_name, to_uint8

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def digits(n_train: int = 1400) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's 8×8 digits (values 0–16) as [-1, 1] images, split into train and test."""
    data = load_digits()
    x = torch.from_numpy(data.images).float().div(8).sub(1).unsqueeze(1)
    y = torch.from_numpy(data.target).long()
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def test_classifier_shapes_and_parameter_count() -> None:
    model = DomainClassifier()
    assert sum(p.numel() for p in model.parameters()) == 216_250
    x = torch.zeros(5, 1, 28, 28)
    assert model(x).shape == (5, 10) and model.features(x).shape == (5, 128)


def test_digits_classifier_is_cached_with_accuracy(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = digits()
    extractor = domain_features("digits", tmp_path, train, test, epochs=8, batch_size=64, feature_dim=32)
    assert extractor.accuracy > 0.9
    assert extractor.num_features == 32 and metric_name("fid", extractor) == "fid_digits"
    assert extractor.extractor_id.startswith("domain-digits/")
    ckpt = torch.load(tmp_path / "domain_digits.pt", weights_only=True)
    assert ckpt["accuracy"] == extractor.accuracy and ckpt["feature_dim"] == 32
    assert ckpt["data_id"] == domain.data_hash(*train)

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached classifier should have been used")

    monkeypatch.setattr(domain, "train_domain_classifier", no_training)
    for cached in (domain_features("digits", tmp_path, train, test), domain_features("digits", tmp_path)):
        assert cached.extractor_id == extractor.extractor_id and cached.accuracy == extractor.accuracy
        images = to_uint8(test[0][:7])
        torch.testing.assert_close(cached(images), extractor(images))
    with pytest.raises(AssertionError, match="cached"):  # other training data: retrain
        domain_features("digits", tmp_path, (train[0][:100], train[1][:100]), test)


def test_domain_features_input_checks_and_missing_cache(tmp_path) -> None:
    extractor = DomainFeatures(DomainClassifier(), "fashion_mnist", 0.0, "0" * 64)
    extractor.train()
    assert not extractor.classifier.training
    assert extractor(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 128)
    with pytest.raises(TypeError, match="uint8"):
        extractor(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(1, 28, 28\)"):
        extractor(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="domain_cifar10.pt"):  # no cache and nothing shipped for it
        domain_features("cifar10", tmp_path)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (big-endian dims after a 4-byte magic whose last byte is the rank), gzipped."""
    with gzip.open(path) as f:
        raw = f.read()
    dims = np.frombuffer(raw, ">u4", count=raw[3], offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def fashion_mnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(FASHION_MNIST / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_MNIST / f"{split}-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.copy()).float().div(127.5).sub(1).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


@pytest.mark.slow
def test_fashion_mnist_domain_fid(tmp_path) -> None:
    train, test = fashion_mnist("train"), fashion_mnist("t10k")
    assert train[0].shape == (60000, 1, 28, 28) and test[0].shape == (10000, 1, 28, 28)
    # The package ships this classifier (trained by train_domain_classifier with its defaults), so an empty
    # cache loads it instead of training: same network, same extractor id, on every machine.
    extractor = domain_features("fashion_mnist", tmp_path, train, test)
    assert extractor.extractor_id == "domain-fashion_mnist/7fea841c-688fa0ca"
    assert not (tmp_path / "domain_fashion_mnist.pt").exists()
    assert extractor.accuracy > 0.9
    assert classifier_accuracy(extractor.classifier, *test) == pytest.approx(extractor.accuracy, abs=1e-4)
    assert metric_name("fid", extractor) == "fid_fashion_mnist"

    images = to_uint8(test[0])
    half_a = extract_stats(extractor, images[:5000].split(1000))
    half_b = extract_stats(extractor, images[5000:].split(1000))
    noise = torch.randint(0, 256, (5000, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    real_vs_real = fid_from_stats(half_a, half_b)
    real_vs_noise = fid_from_stats(extract_stats(extractor, noise.split(1000)), half_b)
    assert real_vs_real < 0.1 * real_vs_noise
    assert abs(fid_from_stats(half_a, half_a)) < 1e-6 * real_vs_noise


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 truncated"])
def test_a_corrupt_cached_classifier_is_retrained_or_named(tmp_path, caplog, damage: bytes) -> None:
    train, test = digits()
    cached = tmp_path / "domain_digits.pt"
    cached.write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="scalelong.eval.domain"):
        extractor = domain_features("digits", tmp_path, train, test, epochs=1, batch_size=64, feature_dim=32)
    assert extractor.num_features == 32
    assert any(str(cached) in r.getMessage() and "retraining" in r.getMessage() for r in caplog.records)
    assert torch.load(cached, weights_only=True)["data_id"] == domain.data_hash(*train)  # rewritten whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["domain_digits.pt"]

    other = tmp_path / "domain_cifar10.pt"  # nothing to retrain from, nothing shipped: one line naming the file
    other.write_bytes(damage)
    with pytest.raises(ConfigError, match=f"{other} cannot be read .*delete it"):
        domain_features("cifar10", tmp_path)
