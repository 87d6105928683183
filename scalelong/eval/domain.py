"""Domain-feature FID for CPU-scale work (docs/metrics.md "FID": a domain-feature FID carries its own name).

A small CNN classifier is trained once on the dataset's training split; its penultimate activations play
the role Inception's pool3 features play in the standard FID. The trained network is cached on disk as
``<cache_dir>/domain_<name>.pt`` together with its test accuracy, feature width and a hash of the data
it was trained on, so every run of a project measures with the same network. Metrics computed from it
are named ``fid_<name>`` (e.g. ``fid_fashion_mnist``), never plain ``fid``.

The package ships the Fashion-MNIST classifier (``scalelong/eval/extractors/domain_fashion_mnist.pt``,
trained by this module with its defaults: 3 epochs, width 16, 128 features; extractor id
``domain-fashion_mnist/7fea841c-688fa0ca``; its test accuracy: docs/metrics.md "FID"). It is used when
the cache has none and the data hash matches, so every machine reports ``fid_fashion_mnist`` with the
same network, and the quickstart does not train it. It also ships the classifier of scikit-learn's digits
at their native 8×8 (``domain_digits.pt``, the same defaults, extractor id ``domain-digits/b845f1db-22006cf6``),
which scores the U-ViT reproduction, so its sweeps measure with one network across machines and sittings.

Images for training are float tensors N×C×H×W in [-1, 1] (the diffusion models' range) with integer
labels; the feature extractor itself, like :class:`scalelong.eval.inception.InceptionFeatures`, takes
uint8 images (see :func:`scalelong.eval.fid.to_uint8`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from scalelong.atomic import UNREADABLE, unreadable_reason, write_atomic
from scalelong.errors import ConfigError

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parent / "extractors"  # classifiers that ship with the package


class DomainClassifier(nn.Module):
    """Three conv blocks (conv–BN–ReLU, max-pool after the first two), a feature layer, a linear head.

    For 28×28×1 inputs at the default width this has 216,250 parameters (its accuracy on Fashion-MNIST:
    docs/metrics.md "FID").
    """

    def __init__(
        self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 16, feature_dim: int = 128
    ) -> None:
        super().__init__()
        self.config = dict(
            in_channels=in_channels,
            image_size=image_size,
            num_classes=num_classes,
            width=width,
            feature_dim=feature_dim,
        )

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(
            *block(in_channels, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 2 * width),
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(2 * width * (image_size // 4) ** 2, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations N×feature_dim of images N×C×H×W in [-1, 1]."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of images N×C×H×W in [-1, 1]."""
        return self.head(self.body(x))


def train_domain_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    width: int = 16,
    feature_dim: int = 128,
    seed: int = 0,
) -> DomainClassifier:
    """Train a :class:`DomainClassifier` with AdamW and a one-cycle learning rate; returns it in eval mode.

    The global random state is left untouched (the run is seeded inside a forked RNG).
    """
    n, c, h, w = images.shape
    if h != w or h % 4:
        raise ConfigError(f"domain classifier needs square images with a side divisible by 4, got {h}×{w}")
    num_classes = int(labels.max()) + 1
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DomainClassifier(c, h, num_classes, width, feature_dim)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        steps_per_epoch = (n + batch_size - 1) // batch_size
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch)
        model.train()
        start = time.perf_counter()
        for epoch in range(epochs):
            order = torch.randperm(n)
            total = 0.0
            for i in range(steps_per_epoch):
                idx = order[i * batch_size : (i + 1) * batch_size]
                loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            elapsed = time.perf_counter() - start
            log.info("domain classifier epoch %d: loss %.4f (%.1f s)", epoch + 1, total / n, elapsed)
    return model.eval()


@torch.inference_mode()
def classifier_accuracy(model: DomainClassifier, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Fraction of images whose arg-max logit equals the label."""
    model.eval()
    correct = sum(
        int((model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum())
        for i in range(0, len(images), batch_size)
    )
    return correct / len(images)


def data_hash(*tensors: Tensor) -> str:
    """Hex SHA-256 of the tensors' shapes, dtypes and bytes: identifies the data a classifier saw."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _weights_hash(model: nn.Module) -> str:
    return data_hash(*model.state_dict().values())


class DomainFeatures(nn.Module):
    """Feature extractor for domain FID/KID: uint8 images N×C×H×W → N×feature_dim penultimate activations.

    Attributes ``name`` (the dataset), ``extractor_id``, ``num_features`` and ``accuracy`` (test accuracy
    of the classifier) describe it; torchmetrics reads ``num_features``. Always in eval mode.
    """

    def __init__(self, classifier: DomainClassifier, name: str, accuracy: float, data_id: str) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.name = name
        self.accuracy = accuracy
        self.num_features: int = classifier.config["feature_dim"]
        self.extractor_id = f"domain-{name}/{data_id[:8]}-{_weights_hash(classifier)[:8]}"

    def train(self, mode: bool = True) -> DomainFeatures:
        """Stay in eval mode: the classifier's BatchNorm statistics are part of the metric's definition."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """Features of uint8 images N×C×H×W with the classifier's channels and size."""
        if images.dtype != torch.uint8:
            raise TypeError(f"domain features take uint8 images (scalelong.eval.fid.to_uint8), got {images.dtype}")
        expected = (self.classifier.config["in_channels"], *(2 * [self.classifier.config["image_size"]]))
        if tuple(images.shape[1:]) != expected:
            got = tuple(images.shape[1:])
            raise ValueError(f"domain classifier '{self.name}' takes C×H×W = {expected}, got {got}")
        return self.classifier.features(images.float() / 127.5 - 1.0)


def domain_features(
    name: str,
    cache_dir: str | Path,
    train: tuple[Tensor, Tensor] | None = None,
    test: tuple[Tensor, Tensor] | None = None,
    **train_kwargs: int | float,
) -> DomainFeatures:
    """The domain feature extractor for dataset ``name``, trained once and cached in ``cache_dir``.

    ``train`` and ``test`` are (images N×C×H×W in [-1, 1], int64 labels). The cache file
    ``<cache_dir>/domain_<name>.pt`` is used when it exists and, if ``train`` is given, was trained on
    the same data (same hash), else the shipped one if it was; otherwise the classifier is trained with
    ``train_kwargs`` (see :func:`train_domain_classifier`), evaluated on ``test`` and saved atomically. An
    unreadable cache file (truncated, empty) is named in one warning and retrained, or, without the data to
    retrain it, named in one ``ConfigError``.
    """
    path = Path(cache_dir) / f"domain_{name}.pt"
    data_id = data_hash(*train) if train is not None else None
    unreadable = ""
    for candidate in (path, SHIPPED_DIR / f"domain_{name}.pt"):  # the cache, else the one shipped
        if not candidate.exists():
            continue
        try:
            ckpt = torch.load(candidate, map_location="cpu", weights_only=True)
            classifier = DomainClassifier(**ckpt["config"])
            classifier.load_state_dict(ckpt["state_dict"])
            accuracy, trained_on = float(ckpt["accuracy"]), str(ckpt["data_id"])
        except (*UNREADABLE, TypeError) as err:
            unreadable = unreadable or f"domain classifier {candidate} cannot be read ({unreadable_reason(err)})"
            continue
        if data_id is None or trained_on == data_id:
            if unreadable:
                log.warning("%s; using %s", unreadable, candidate)
            log.info("loaded domain classifier %s (test accuracy %.4f)", candidate, accuracy)
            return DomainFeatures(classifier, name, accuracy, trained_on)
        log.info("domain classifier %s was trained on other data", candidate)
    if train is None or test is None:
        if unreadable:
            raise ConfigError(f"{unreadable}; delete it, or pass the training and test splits of '{name}' to "
                              "retrain it")
        raise ConfigError(
            f"no domain classifier cached at {path}; pass the training and test splits of '{name}' to train it"
        )
    if unreadable:
        log.warning("%s; retraining", unreadable)
    classifier = train_domain_classifier(*train, **train_kwargs)
    accuracy = classifier_accuracy(classifier, *test)
    log.info("domain classifier '%s': test accuracy %.4f", name, accuracy)
    record = dict(state_dict=classifier.state_dict(), config=classifier.config, accuracy=accuracy,
                  feature_dim=classifier.config["feature_dim"], data_id=data_id)
    buffer = io.BytesIO()
    torch.save(record, buffer)
    write_atomic(path, buffer.getvalue())
    return DomainFeatures(classifier, name, accuracy, data_id)
