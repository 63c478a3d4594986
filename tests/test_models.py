"""Tests for csigen.models: shapes, ranges, gradients, CSI checkpoint compatibility."""

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from csigen.models import (
    Discriminator,
    Encoder,
    Generator,
    LatentDiscriminator,
    ResNet18,
    count_parameters,
    load_csi_state_dict,
    to_signed,
    to_unit,
)

FIXTURE = Path(__file__).parent / "fixtures" / "csi_resnet18_state_keys.json"
CSI_ROOT = Path("/tmp/csi")

torch.set_num_threads(2)


def _images(b, s, seed=0):
    return torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(seed))


def _check_grads(module, loss, allow_zero=()):
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
        if not any(name.startswith(a) for a in allow_zero):
            assert p.grad.abs().sum() > 0, f"all-zero gradient for {name}"


@pytest.fixture(scope="module")
def resnet_cifar():
    torch.manual_seed(0)
    return ResNet18()


# --------------------------------------------------------------------- helpers
def test_pixel_conversion_roundtrip():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.allclose(to_signed(x), torch.tensor([-1.0, -0.5, 0.0, 1.0]))
    assert torch.allclose(to_unit(to_signed(x)), x)


def test_count_parameters():
    m = nn.Linear(3, 2)
    assert count_parameters(m) == 8
    m.bias.requires_grad_(False)
    assert count_parameters(m) == 6
    assert count_parameters(m, trainable_only=False) == 8


# -------------------------------------------------------------------- ResNet18
@torch.no_grad()
def test_resnet_cifar_shapes_and_flags(resnet_cifar):
    x = _images(2, 32)
    out = resnet_cifar(x)
    assert set(out) == {"penultimate"} and out["penultimate"].shape == (2, 512)
    for flags in ({"penultimate": True}, {"simclr": True}, {"shift": True},
                  {"simclr": True, "shift": True}, {"penultimate": True, "simclr": True, "shift": True}):
        out = resnet_cifar(x, **flags)
        assert set(out) == set(flags)
    assert out["simclr"].shape == (2, 128) and out["shift"].shape == (2, 4)


def test_resnet_trunk_runs_once(resnet_cifar):
    calls = []
    handle = resnet_cifar.layer4.register_forward_hook(lambda *a: calls.append(1))
    try:
        resnet_cifar(_images(2, 32), penultimate=True, simclr=True, shift=True)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_resnet_normalises_input_first(resnet_cifar):
    seen = []
    handle = resnet_cifar.conv1.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        x = _images(2, 32)
        resnet_cifar.eval()
        with torch.no_grad():
            resnet_cifar(x)
    finally:
        handle.remove()
        resnet_cifar.train()
    assert torch.allclose(seen[0], (x - 0.5) / 0.5)


@torch.no_grad()
def test_resnet_heads_sizes():
    m = ResNet18(simclr_dim=64, num_shifts=2)
    out = m(_images(2, 32), simclr=True, shift=True)
    assert out["simclr"].shape == (2, 64) and out["shift"].shape == (2, 2)
    with pytest.raises(ValueError):
        ResNet18(variant="tiny")


def test_resnet_gradients(resnet_cifar):
    resnet_cifar.zero_grad()
    out = resnet_cifar(_images(2, 32), penultimate=True, simclr=True, shift=True)
    _check_grads(resnet_cifar, sum(v.sum() for v in out.values()))


def test_resnet_imagenet_shapes():
    torch.manual_seed(0)
    m = ResNet18(variant="imagenet")
    assert m.conv1.kernel_size == (7, 7) and isinstance(m.maxpool, nn.MaxPool2d)
    m.eval()
    with torch.no_grad():
        out = m(_images(2, 224), penultimate=True, simclr=True, shift=True)
    assert out["penultimate"].shape == (2, 512)
    assert out["simclr"].shape == (2, 128) and out["shift"].shape == (2, 4)
    assert all(torch.isfinite(v).all() for v in out.values())


# ------------------------------------------------------ CSI checkpoint support
@pytest.mark.parametrize("variant", ["cifar", "imagenet"])
def test_state_dict_matches_csi_keys(variant):
    csi = json.loads(FIXTURE.read_text())[variant]
    ours = {k: list(v.shape) for k, v in ResNet18(variant=variant).state_dict().items()}
    expected = {k.replace(".downsample.", ".shortcut."): v for k, v in csi.items()
                if not k.startswith(("linear.", "joint_distribution_layer."))}
    missing = sorted(set(expected) - set(ours))
    assert not missing, f"CSI keys missing from ours: {missing}"
    wrong = {k: (expected[k], ours[k]) for k in expected if expected[k] != ours[k]}
    assert not wrong, f"shape mismatches (csi, ours): {wrong}"
    assert set(ours) == set(expected), f"extra keys in ours: {sorted(set(ours) - set(expected))}"


def test_load_csi_state_dict_roundtrip(resnet_cifar):
    torch.manual_seed(1)
    src = ResNet18()
    with torch.no_grad():  # non-default running stats, so buffers are checked too
        for m in src.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    sd = {"module." + k: v.clone() for k, v in src.state_dict().items()}
    sd["module.linear.weight"] = torch.zeros(10, 512)
    sd["module.linear.bias"] = torch.zeros(10)
    sd["module.joint_distribution_layer.weight"] = torch.zeros(40, 512)
    sd["module.joint_distribution_layer.bias"] = torch.zeros(40)
    dst = ResNet18()
    assert load_csi_state_dict(dst, sd) is dst
    src.eval()
    dst.eval()
    x = _images(2, 32)
    with torch.no_grad():
        a = src(x, penultimate=True, simclr=True, shift=True)
        b = dst(x, penultimate=True, simclr=True, shift=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_load_csi_state_dict_errors():
    sd = ResNet18(num_shifts=2).state_dict()
    with pytest.raises(ValueError, match="num_shifts=2"):
        load_csi_state_dict(ResNet18(num_shifts=4), sd)
    with pytest.raises(ValueError, match="variant"):
        load_csi_state_dict(ResNet18(variant="imagenet"), ResNet18().state_dict())
    partial = {k: v for k, v in ResNet18().state_dict().items() if not k.startswith("simclr_layer")}
    with pytest.raises(ValueError, match="missing"):
        load_csi_state_dict(ResNet18(), partial)
    load_csi_state_dict(ResNet18(), partial, strict=False)


@pytest.mark.skipif(not (CSI_ROOT / "models" / "resnet.py").exists(), reason="official CSI code not at /tmp/csi")
@pytest.mark.parametrize("variant", ["cifar", "imagenet"])
def test_matches_official_csi_outputs(variant):
    """With the official code at hand: same weights -> same outputs as CSI's ResNet-18."""
    before = set(sys.modules)
    sys.modules.setdefault("diffdist", types.ModuleType("diffdist"))
    sys.path.insert(0, str(CSI_ROOT))
    try:
        from models.resnet import ResNet18 as CSIResNet18
        from models.resnet_imagenet import resnet18 as csi_resnet18_imagenet
    finally:
        sys.path.remove(str(CSI_ROOT))
        for name in set(sys.modules) - before:  # CSI's top-level "models" package
            del sys.modules[name]
    torch.manual_seed(2)
    csi = CSIResNet18(num_classes=10) if variant == "cifar" else csi_resnet18_imagenet(num_classes=30)
    csi.shift_cls_layer = nn.Linear(512, 4)
    ours = load_csi_state_dict(ResNet18(variant=variant), csi.state_dict())
    csi.eval()
    ours.eval()
    x = _images(2, 32 if variant == "cifar" else 64)  # small input: the ImageNet net pools adaptively
    with torch.no_grad():
        _, aux = csi(x, penultimate=True, simclr=True, shift=True)
        out = ours(x, penultimate=True, simclr=True, shift=True)
    for k in out:
        assert torch.allclose(aux[k], out[k], atol=1e-5), k


# ------------------------------------------------------------- G, D, E and D'
def test_generator_shape_range_and_grads():
    torch.manual_seed(0)
    g = Generator()
    z = g.sample_latent(2, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 128)
    assert torch.equal(z, g.sample_latent(2, generator=torch.Generator().manual_seed(0)))
    x = g(z)
    assert x.shape == (2, 3, 32, 32)
    assert x.min() >= 0 and x.max() <= 1
    _check_grads(g, x.sum())


def test_discriminator_shape_and_grads():
    torch.manual_seed(0)
    d = Discriminator()
    real, fake = _images(2, 32), _images(2, 32, seed=1)
    out_real, out_fake = d(real), d(fake)  # two calls in one graph, as in a GAN step
    assert out_real.shape == (2,) and out_fake.shape == (2,)
    n_sn = sum(1 for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    n_param = sum(1 for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                  and hasattr(m, "parametrizations") and "weight" in m.parametrizations)
    assert n_sn == n_param > 0, "spectral norm missing on some layer"
    _check_grads(d, out_real.sum() - 0.5 * out_fake.sum())  # (a plain difference cancels the bias grad)


def test_encoder_shape_and_grads():
    torch.manual_seed(0)
    e = Encoder()
    h = e(_images(2, 32))
    assert h.shape == (2, 128)
    _check_grads(e, h.sum())
    e.eval()  # no BatchNorm: an image's code does not depend on its batch
    x = _images(3, 32)
    with torch.no_grad():
        assert torch.allclose(e(x)[:1], e(x[:1]), atol=1e-5)


def test_latent_discriminator_shape_and_grads():
    torch.manual_seed(0)
    dp = LatentDiscriminator()
    assert sum(isinstance(m, nn.Linear) for m in dp.modules()) == 3
    out = dp(torch.randn(2, 128))
    assert out.shape == (2,)
    _check_grads(dp, out.sum())


def test_autoencoder_chain_gradients():
    torch.manual_seed(0)
    g, e = Generator(), Encoder()
    x_hat = g(e(_images(2, 32)))
    assert x_hat.shape == (2, 3, 32, 32)
    x_hat.sum().backward()
    assert all(p.grad is not None for p in e.parameters())


@pytest.mark.parametrize("size", [64, 224])
def test_large_image_sizes(size):
    torch.manual_seed(0)
    g = Generator(channels=32, image_size=size)
    d = Discriminator(channels=16, image_size=size)
    e = Encoder(channels=32, image_size=size)
    x = g(g.sample_latent(2))
    assert x.shape == (2, 3, size, size)
    assert x.min() >= 0 and x.max() <= 1
    assert d(x).shape == (2,)
    assert e(x).shape == (2, 128)
    assert len(g.blocks) == 4 and len(e.blocks) == 4  # native 64x64: 4 -> 64
    assert len(d.blocks) == 5  # 3 down (64 -> 8) + 2 plain


def test_bad_image_size():
    with pytest.raises(ValueError):
        Generator(image_size=48)
