"""Tests for csigen.fid: the real torch-fidelity code path with offline (random) Inception weights.

The weights come from :func:`make_offline_inception_weights`, so nothing is
downloaded and the numbers are not FIDs. For speed on a 2-core CPU the FID
calls use 8 images per set and the Inception layer "64" (torch-fidelity stops
the forward pass there and the covariance is 64x64, not 2048x2048); every image
is still resized to 299x299 and goes through torch-fidelity's own pipeline.
"""

from __future__ import annotations

import math
import urllib.error

import pytest
import torch

from csigen import fid
from csigen.models import Generator

N = 8  # images per set (see the module docstring)
LAYER = "64"
pytestmark = pytest.mark.filterwarnings("ignore:FID from")  # tiny sets: the bias warning is expected


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return fid.make_offline_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth")


@pytest.fixture(autouse=True)
def _no_env_weights(monkeypatch):
    monkeypatch.delenv(fid.ENV_WEIGHTS, raising=False)


def _images(seed: int, high: int = 256, n: int = N) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_offline_weights_are_a_random_inception_state_dict(weights):
    # torch-fidelity loads the file strictly (load_state_dict), which the FID tests below exercise
    state = torch.load(weights, weights_only=False)
    assert "Mixed_7c.branch_pool.conv.weight" in state and state["fc.weight"].shape == (1008, 2048)
    w = state["Conv2d_2b_3x3.conv.weight"]  # Kaiming normal: std sqrt(2 / fan_in)
    assert abs(w.std().item() - math.sqrt(2.0 / w[0].numel())) < 0.1 * math.sqrt(2.0 / w[0].numel())


def test_fid_same_set_is_zero_and_different_sets_positive(weights):
    a, b = _images(0), _images(1, high=128)
    same = fid.fid_between(a, a, weights_path=weights, feature_layer=LAYER)
    different = fid.fid_between(a, b, weights_path=weights, feature_layer=LAYER)
    assert abs(same) < 1e-2
    assert different > 1e-2


def test_fid_of_untrained_generator_is_finite_positive(weights):
    G = Generator(channels=32).train()
    value = fid.fid_of_generator(G, _images(2), num_samples=N, batch_size=N, seed=0, weights_path=weights,
                                 feature_layer=LAYER)
    assert math.isfinite(value) and value > 0
    assert G.training  # mode restored
    assert next(G.parameters()).device.type == "cpu"


def test_env_var_supplies_weights(weights, monkeypatch):
    monkeypatch.setenv(fid.ENV_WEIGHTS, str(weights))
    assert fid._resolve_weights(None) == weights


def test_uint8_adapter_dtype_and_range():
    G = Generator(channels=32).eval()
    out = fid.UInt8Generator(G)(torch.randn(4, G.z_dim))
    assert out.dtype == torch.uint8 and out.shape == (4, 3, 32, 32)
    ref = (G(torch.zeros(1, G.z_dim)).clamp(0, 1) * 255).round().to(torch.uint8)
    assert torch.equal(fid.UInt8Generator(G)(torch.zeros(1, G.z_dim)), ref)
    x = torch.tensor([-0.5, 0.0, 0.6 / 255, 0.5, 1.0, 1.7]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert fid.to_uint8(x)[0, 0, 0].tolist() == [0, 0, 1, 128, 255, 255]
    ds = fid.UInt8ImageDataset(_images(3, n=5))
    assert len(ds) == 5 and ds[0].dtype == torch.uint8 and ds[0].shape == (3, 32, 32)


def test_missing_weights_file_raises_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="pt_inception-2015-12-05.*weights_path"):
        fid.fid_between(_images(0), _images(1), weights_path=tmp_path / "missing.pth")


def test_offline_download_failure_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached official weights here

    def no_internet(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_internet)
    with pytest.raises(fid.InceptionWeightsUnavailable, match="download them once with internet"):
        fid.fid_between(_images(0), _images(1))


def test_small_sets_warn_about_bias():
    with pytest.warns(UserWarning, match="biased upwards"):
        fid._check_count("x", 100, "2048")
    with pytest.raises(ValueError, match="at least 2"):
        fid._check_count("x", 1, "2048")


def test_reference_images_choice():
    class Task:
        train_images = _images(0, n=6)
        test_images = _images(1, n=4)
        test_is_inlier = torch.tensor([True, False, True, False])

    assert fid.reference_images(Task) is Task.train_images
    assert torch.equal(fid.reference_images(Task, "test"), Task.test_images[[0, 2]])
    assert fid.reference_images(Task, "cifar10-train") == "cifar10-train"
    with pytest.raises(ValueError):
        fid.reference_images(Task, "val")
