"""Tests for csigen.losses (Eq. 1-10), including parity with CSI's own code.

Reference numbers from the official code (alinlab/CSI) are stored in
tests/fixtures/csi_nt_xent.json and tests/fixtures/csi_step.json, made by
tests/fixtures/make_losses_fixture.py (see its docstring for how).
"""

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import csigen.augment
import csigen.losses
from csigen.augment import AugmentParams, SimCLRAugment
from csigen.losses import (
    cls_si,
    con_si,
    csi_loss,
    csi_s_loss,
    discriminator_loss,
    encoder_latent_adversarial_loss,
    generator_adversarial_loss,
    joint_loss,
    latent_discriminator_loss,
    latent_reconstruction_loss,
    nt_xent,
    reconstruction_loss,
)
from csigen.models import ResNet18

FIXTURES = Path(__file__).parent / "fixtures"

torch.set_num_threads(2)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int, s: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, s, s, generator=_gen(seed))


class TinyF(nn.Module):
    """A small stand-in for F with the same call signature (fast tests)."""

    def __init__(self, num_shifts: int = 4, dim: int = 6):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.simclr_layer = nn.Linear(8, dim)
        self.shift_cls_layer = nn.Linear(8, num_shifts)
        self.seen = []

    def forward(self, x, *, penultimate=False, simclr=False, shift=False):
        self.seen.append(x.detach().clone())
        h = F.relu(self.conv(x)).mean(dim=(2, 3))
        out = {}
        if penultimate:
            out["penultimate"] = h
        if simclr:
            out["simclr"] = self.simclr_layer(h)
        if shift:
            out["shift"] = self.shift_cls_layer(h)
        return out


def _identity_augment(x, generator=None):
    return x


# --------------------------------------------------------------------------- #
# Eq. 1: NT-Xent
# --------------------------------------------------------------------------- #
def _nt_xent_loop(features: torch.Tensor, temperature: float) -> float:
    """Eq. 1 written anchor by anchor, in float64 Python arithmetic."""
    z = features.double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for a in range(n2):
        pos = (a + n) % n2
        sims = [float(z[a] @ z[b]) / temperature for b in range(n2)]
        denom = sum(math.exp(sims[b]) for b in range(n2) if b != a)
        total += -math.log(math.exp(sims[pos]) / denom)
    return total / n2


@pytest.mark.parametrize("temperature", [0.5, 0.2])
@pytest.mark.parametrize("n2,dim", [(2, 3), (6, 4), (16, 8), (40, 32)])
def test_nt_xent_matches_per_anchor_loop(n2, dim, temperature):
    f = torch.randn(n2, dim, generator=_gen(n2 * 100 + dim)) * 3
    got = nt_xent(f, temperature)
    assert got.shape == ()
    assert got.item() == pytest.approx(_nt_xent_loop(f, temperature), abs=2e-6, rel=1e-6)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_nt_xent_identical_features_is_log_2n_minus_1(n):
    f = torch.ones(2 * n, 5) * 0.7
    for t in (0.5, 0.2):
        assert nt_xent(f, t).item() == pytest.approx(math.log(2 * n - 1), abs=1e-5)


@pytest.mark.parametrize("n", [2, 5])
@pytest.mark.parametrize("temperature", [0.5, 0.2])
def test_nt_xent_orthogonal_closed_form(n, temperature):
    # rows i and i + N are the same unit vector e_i (sim 1); all others are orthogonal (sim 0):
    # every anchor has loss -log(e^{1/t} / (e^{1/t} + (2N - 2) e^0)) = log(1 + (2N - 2) e^{-1/t})
    e = torch.eye(n, n + 2) * 4.0  # norms differ from 1: nt_xent normalises
    f = torch.cat([e, e * 0.5])
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / temperature))
    assert nt_xent(f, temperature).item() == pytest.approx(expected, abs=1e-6)


def test_nt_xent_gradients_finite():
    f = torch.randn(12, 7, generator=_gen(1)).requires_grad_()
    nt_xent(f, 0.5).backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    # degenerate inputs: identical rows, a zero row
    for g in (torch.ones(4, 3), torch.cat([torch.zeros(1, 3), torch.randn(3, 3, generator=_gen(2))])):
        g = g.requires_grad_()
        loss = nt_xent(g, 0.2)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(g.grad).all()


def test_nt_xent_errors():
    with pytest.raises(ValueError):
        nt_xent(torch.randn(5, 3))  # odd number of rows
    with pytest.raises(ValueError):
        nt_xent(torch.randn(0, 3))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 3), temperature=0.0)
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 3), temperature=-0.5)
    with pytest.raises(ValueError):
        nt_xent(torch.randn(8))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(2, 4, 3))


def test_nt_xent_matches_csi_fixture():
    """CSI's NT_xent(get_similarity_matrix(normalize(f)), temperature) on stored seeds and shapes."""
    fixture = json.loads((FIXTURES / "csi_nt_xent.json").read_text())
    assert len(fixture["cases"]) >= 5
    for case in fixture["cases"]:
        f = torch.randn(*case["shape"], generator=_gen(case["seed"])) * case["scale"]
        got = nt_xent(f, case["temperature"]).item()
        assert got == pytest.approx(case["expected"], abs=1e-5), case


def test_con_si_is_nt_xent():
    f = torch.randn(16, 8, generator=_gen(3))
    assert torch.equal(con_si(f), nt_xent(f, 0.5))
    assert torch.equal(con_si(f, 0.2), nt_xent(f, 0.2))


# --------------------------------------------------------------------------- #
# Eq. 3: shift classification
# --------------------------------------------------------------------------- #
def test_cls_si_is_cross_entropy():
    logits = torch.randn(12, 4, generator=_gen(4))
    labels = torch.arange(4).repeat_interleave(3)
    assert torch.allclose(cls_si(logits, labels), F.cross_entropy(logits, labels))
    manual = -(logits.log_softmax(1)[torch.arange(12), labels]).mean()
    assert cls_si(logits, labels).item() == pytest.approx(manual.item(), abs=1e-6)
    with pytest.raises(ValueError):
        cls_si(logits, labels[:-1])
    with pytest.raises(ValueError):
        cls_si(logits[:, 0], labels)


# --------------------------------------------------------------------------- #
# Eq. 4-6: L_CSI, L_JOINT, L_CSI-S
# --------------------------------------------------------------------------- #
def test_csi_loss_layout_and_terms():
    """F sees [view1 of all shifts; view2 of all shifts], shift-major; loss = con + w * cls."""
    torch.manual_seed(0)
    model = TinyF()
    x = _images(3, 8, seed=5)
    out = csi_loss(model, x, _identity_augment, generator=_gen(0), cls_weight=0.5)
    assert set(out) == {"loss", "con_si", "cls_si"}
    views = model.seen[0]
    assert views.shape == (2 * 4 * 3, 3, 8, 8)
    for half in range(2):
        for k in range(4):
            for i in range(3):
                v = views[half * 12 + k * 3 + i]
                # each view is a rotation of the image, possibly flipped first
                flipped = torch.rot90(x[i].flip(-1), k, dims=(1, 2))
                plain = torch.rot90(x[i], k, dims=(1, 2))
                assert torch.equal(v, plain) or torch.equal(v, flipped)
    # the same flip for every rotation of one view of one image
    for half in range(2):
        for i in range(3):
            flips = {torch.equal(views[half * 12 + k * 3 + i], torch.rot90(x[i], k, dims=(1, 2)))
                     for k in range(4)}
            assert len(flips) == 1
    with torch.no_grad():
        feats = model(views, simclr=True, shift=True)
    labels = torch.arange(4).repeat_interleave(3).repeat(2)
    assert torch.allclose(out["con_si"], nt_xent(feats["simclr"], 0.5))
    assert torch.allclose(out["cls_si"], F.cross_entropy(feats["shift"], labels))
    assert torch.allclose(out["loss"], out["con_si"] + 0.5 * out["cls_si"])


def test_csi_loss_reproducible_and_differentiable():
    torch.manual_seed(0)
    model, T = TinyF(), SimCLRAugment()
    x = _images(4, 8, seed=6).requires_grad_()
    a = csi_loss(model, x, T, generator=_gen(11))
    b = csi_loss(model, x, T, generator=_gen(11))
    c = csi_loss(model, x, T, generator=_gen(12))
    assert torch.equal(a["loss"], b["loss"])
    assert not torch.equal(a["loss"], c["loss"])
    a["loss"].backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0  # reaches G through T and F
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_joint_and_csi_s_loss_are_csi_loss():
    torch.manual_seed(0)
    model, T = TinyF(), SimCLRAugment()
    real, synth = _images(3, 8, seed=7), _images(2, 8, seed=8)
    joint = joint_loss(model, real, synth, T, generator=_gen(21), temperature=0.2)
    ref = csi_loss(model, torch.cat([real, synth]), T, generator=_gen(21), temperature=0.2)
    for k in ("loss", "con_si", "cls_si"):
        assert torch.equal(joint[k], ref[k])
    s = csi_s_loss(model, synth, T, generator=_gen(22))
    ref_s = csi_loss(model, synth, T, generator=_gen(22))
    for k in ("loss", "con_si", "cls_si"):
        assert torch.equal(s[k], ref_s[k])


def test_csi_loss_second_view_is_csi_imagenet_step():
    """With two data-side views (ImageNet-30): no flip here, view 1 and view 2 rotated, then T."""
    from csigen.augment import shift_batch

    model = TinyF()
    x1, x2 = _images(3, 8, seed=30), _images(3, 8, seed=31)
    g = _gen(0)
    out = csi_loss(model, x1, _identity_augment, generator=g, second_view=x2)
    assert torch.equal(model.seen[0], torch.cat([shift_batch(x1, 4)[0], shift_batch(x2, 4)[0]]))
    assert torch.equal(g.get_state(), _gen(0).get_state())  # nothing drawn: the data side flipped already
    with torch.no_grad():
        feats = model(model.seen[0], simclr=True, shift=True)
    assert torch.allclose(out["con_si"], nt_xent(feats["simclr"], 0.5))
    with pytest.raises(ValueError, match="second_view"):
        csi_loss(model, x1, _identity_augment, second_view=x2[:2])


def _two_views_recorded(calls):
    """A synthetic_views stand-in: view 1 = x, view 2 = 1 - x; records its inputs."""

    def views(x, generator=None):
        calls.append(x)
        return torch.cat([x, 1 - x])

    return views


def test_joint_and_csi_s_loss_with_synthetic_views():
    """Full-image tasks: G(h)'s two views come from synthetic_views; real views from the data side."""
    from csigen.augment import shift_batch

    real1, real2, synth = _images(3, 8, seed=32), _images(3, 8, seed=33), _images(2, 8, seed=34)
    calls, model = [], TinyF()
    views = _two_views_recorded(calls)
    joint_loss(model, real1, synth, _identity_augment, generator=_gen(0), second_view=real2,
               synthetic_views=views)
    v1, v2 = torch.cat([real1, synth]), torch.cat([real2, 1 - synth])
    assert len(calls) == 1 and torch.equal(calls[0], synth)
    assert torch.equal(model.seen[0], torch.cat([shift_batch(v1, 4)[0], shift_batch(v2, 4)[0]]))
    s = csi_s_loss(model, synth, _identity_augment, generator=_gen(0), synthetic_views=views)
    ref = csi_loss(model, synth, _identity_augment, generator=_gen(0), second_view=1 - synth)
    assert len(calls) == 2 and torch.equal(s["loss"], ref["loss"])
    for bad in ({"second_view": real2}, {"synthetic_views": views}):
        with pytest.raises(ValueError, match="second_view .* synthetic_views"):
            joint_loss(model, real1, synth, _identity_augment, **bad)


def test_crop_flip_views_is_a_differentiable_crop_and_flip():
    from csigen.augment import crop_flip_views

    x = _images(3, 16, seed=35).requires_grad_()
    v = crop_flip_views(x, _gen(0))
    assert v.shape == (6, 3, 16, 16)
    assert torch.equal(v, crop_flip_views(x, _gen(0)))
    assert not torch.allclose(v[:3], v[3:])  # two independent crops of each image
    v.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0  # gradients reach G
    # scale = ratio = 1: the whole image (resampled at its pixel centres), flipped at random
    flips = crop_flip_views(x.detach(), _gen(1), views=4, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    seen = set()
    for j, img in enumerate(flips):
        src = x.detach()[j % 3]
        plain, mirrored = torch.allclose(img, src, atol=1e-5), torch.allclose(img, src.flip(-1), atol=1e-5)
        assert plain or mirrored
        seen.add(mirrored)
    assert seen == {True, False}
    with pytest.raises(ValueError, match="views"):
        crop_flip_views(x, views=0)


class _FixedFlip:
    """random_hflip stand-in that flips a fixed set of images (CSI's draw in the fixture)."""

    def __init__(self, mask):
        self.mask = torch.tensor(mask, dtype=torch.bool)
        self.calls = 0

    def __call__(self, x, generator=None, p=0.5):
        assert x.shape[0] == self.mask.numel()
        self.calls += 1
        return torch.where(self.mask.view(-1, 1, 1, 1), x.flip(-1), x)


def test_csi_step_matches_csi_code(monkeypatch):
    """The CSI step on a fixed batch (same weights, same augmentation parameters)
    gives the same loss as CSI's training step (fixture numbers) to 1e-4."""
    fx = json.loads((FIXTURES / "csi_step.json").read_text())
    torch.manual_seed(fx["weights_seed"])
    model = ResNet18(num_shifts=fx["num_shifts"])
    model.train()  # BatchNorm batch statistics, as CSI's step
    b, s = fx["batch_size"], fx["image_size"]
    x = torch.rand(b, 3, s, s, generator=_gen(fx["input_seed"]))

    params = AugmentParams(**{
        k: torch.tensor(v, dtype=torch.bool if isinstance(v[0], bool) else torch.float32)
        for k, v in fx["augment_params"].items()
    })
    T = SimCLRAugment()
    used = []

    def fixed_augment(views, generator=None):
        used.append(views.shape[0])
        return T.apply(views, params)

    flip = _FixedFlip(fx["flip"])
    monkeypatch.setattr(csigen.augment, "random_hflip", flip)
    monkeypatch.setattr(csigen.losses, "random_hflip", flip, raising=False)

    out = csi_loss(model, x, fixed_augment, num_shifts=fx["num_shifts"], temperature=0.5,
                   generator=_gen(0))
    assert flip.calls == 1 and used == [2 * fx["num_shifts"] * b]
    for key in ("loss", "con_si", "cls_si"):
        assert out[key].item() == pytest.approx(fx["expected"][key], abs=1e-4), key

    out["loss"].backward()
    named = dict(model.named_parameters())
    for name, norm in fx["grad_norms"].items():
        assert named[name].grad.norm().item() == pytest.approx(norm, rel=1e-3), name


# --------------------------------------------------------------------------- #
# Eq. 7 and 9: adversarial terms
# --------------------------------------------------------------------------- #
def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


D_REAL = torch.tensor([0.0, 2.0])
D_FAKE = torch.tensor([-1.0, 0.0, 0.5])
D_RECON = torch.tensor([1.0])


def test_discriminator_loss_log_values():
    # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f)
    real = (_softplus(-0.0) + _softplus(-2.0)) / 2
    fake = (_softplus(-1.0) + _softplus(0.0) + _softplus(0.5)) / 3
    recon = _softplus(1.0)
    for form in ("log", "minimax"):
        assert discriminator_loss(D_REAL, D_FAKE, D_RECON, form).item() == pytest.approx(
            real + fake + recon, abs=1e-6)
        assert discriminator_loss(D_REAL, D_FAKE, None, form).item() == pytest.approx(real + fake, abs=1e-6)
    # literal Eq. 7: -[mean log D(x) + mean log(1 - D(x~)) + mean log(1 - D(x^))]
    sig = torch.sigmoid
    lit = -(sig(D_REAL).log().mean() + (1 - sig(D_FAKE)).log().mean() + (1 - sig(D_RECON)).log().mean())
    assert discriminator_loss(D_REAL, D_FAKE, D_RECON).item() == pytest.approx(lit.item(), abs=1e-6)


def test_discriminator_loss_hinge_values():
    # mean relu(1 - r) = (1 + 0) / 2; mean relu(1 + f) = (0 + 1 + 1.5) / 3; relu(1 + 1) = 2
    assert discriminator_loss(D_REAL, D_FAKE, D_RECON, "hinge").item() == pytest.approx(
        0.5 + 2.5 / 3 + 2.0, abs=1e-6)
    assert discriminator_loss(D_REAL, D_FAKE, None, "hinge").item() == pytest.approx(0.5 + 2.5 / 3, abs=1e-6)


def test_generator_adversarial_loss_values():
    fake_ns = (_softplus(1.0) + _softplus(0.0) + _softplus(-0.5)) / 3  # -log sigmoid(f)
    rec_ns = _softplus(-1.0)
    assert generator_adversarial_loss(D_FAKE, D_RECON, "log").item() == pytest.approx(fake_ns + rec_ns, abs=1e-6)
    assert generator_adversarial_loss(D_FAKE, None, "log").item() == pytest.approx(fake_ns, abs=1e-6)
    fake_mm = -(_softplus(-1.0) + _softplus(0.0) + _softplus(0.5)) / 3  # log(1 - sigmoid(f))
    rec_mm = -_softplus(1.0)
    assert generator_adversarial_loss(D_FAKE, D_RECON, "minimax").item() == pytest.approx(
        fake_mm + rec_mm, abs=1e-6)
    assert generator_adversarial_loss(D_FAKE, None, "minimax").item() == pytest.approx(fake_mm, abs=1e-6)
    assert generator_adversarial_loss(D_FAKE, D_RECON, "hinge").item() == pytest.approx(
        -(-0.5 / 3) - 1.0, abs=1e-6)
    assert generator_adversarial_loss(D_FAKE, None, "hinge").item() == pytest.approx(0.5 / 3, abs=1e-6)


@pytest.mark.parametrize("form", ["log", "minimax", "hinge"])
@pytest.mark.parametrize("with_recon", [False, True])
def test_generator_loss_decreases_as_d_fake_rises(form, with_recon):
    """G (and E) is rewarded when D scores its images as real: the loss falls as D's logits rise."""
    values = []
    for shift in (-3.0, -1.0, 0.0, 1.0, 3.0):
        d_fake = (D_FAKE + shift).requires_grad_()
        d_recon = (D_RECON + shift).requires_grad_() if with_recon else None
        loss = generator_adversarial_loss(d_fake, d_recon, form)
        loss.backward()
        assert (d_fake.grad < 0).all()
        if with_recon:
            assert (d_recon.grad < 0).all()
        values.append(loss.item())
    assert all(a > b for a, b in itertools.pairwise(values))
    # and D's loss rises with D(fake) while it falls with D(real)
    assert discriminator_loss(D_REAL, D_FAKE + 1, None, form) > discriminator_loss(D_REAL, D_FAKE, None, form)
    assert discriminator_loss(D_REAL + 0.5, D_FAKE, None, form) < discriminator_loss(D_REAL, D_FAKE, None, form)


def test_latent_adversarial_losses():
    prior, enc = torch.tensor([0.3, -0.2]), torch.tensor([1.5, -0.7, 0.0])
    for form in ("log", "minimax", "hinge"):
        assert torch.equal(latent_discriminator_loss(prior, enc, form), discriminator_loss(prior, enc, None, form))
        assert torch.equal(encoder_latent_adversarial_loss(enc, form), generator_adversarial_loss(enc, None, form))
    assert latent_discriminator_loss(prior, enc).item() == pytest.approx(
        (_softplus(-0.3) + _softplus(0.2)) / 2 + (_softplus(1.5) + _softplus(-0.7) + _softplus(0.0)) / 3, abs=1e-6)


def test_gan_form_errors():
    with pytest.raises(ValueError):
        discriminator_loss(D_REAL, D_FAKE, form="wasserstein")
    with pytest.raises(ValueError):
        generator_adversarial_loss(D_FAKE, form="nope")
    with pytest.raises(ValueError):
        latent_discriminator_loss(D_REAL, D_FAKE, form="nope")


# --------------------------------------------------------------------------- #
# Eq. 8: reconstruction
# --------------------------------------------------------------------------- #
def _paired_fixed_augment(b: int, seed: int = 0):
    """A deterministic T that applies the same (non-trivial) parameters to x_i and x^_i."""
    T = SimCLRAugment()
    p = T.sample_params(b, _gen(seed), size=(8, 8))
    both = AugmentParams.cat([p, p])
    return lambda v, generator=None: T.apply(v, both)


def test_reconstruction_loss_perfect_reconstruction():
    torch.manual_seed(0)
    model = TinyF()
    x = _images(4, 8, seed=9)
    for augment in (_identity_augment, _paired_fixed_augment(4)):
        out = reconstruction_loss(model, x, x.clone(), augment)
        assert set(out) == {"loss", "pixel", "feature_sim"}
        assert out["pixel"].item() == 0.0
        assert out["feature_sim"].item() == pytest.approx(1.0, abs=1e-5)
        assert out["loss"].item() == pytest.approx(-1.0, abs=1e-5)


def test_reconstruction_loss_values_and_gradients():
    torch.manual_seed(0)
    model = TinyF()
    x = _images(3, 8, seed=10).requires_grad_()
    x_hat = _images(3, 8, seed=11).requires_grad_()
    augment = _paired_fixed_augment(3, seed=1)
    out = reconstruction_loss(model, x, x_hat, augment, lam=100.0)
    assert out["pixel"].item() == pytest.approx(((x - x_hat) ** 2).mean().item(), rel=1e-6)
    with torch.no_grad():
        z = model(augment(torch.cat([x, x_hat])), simclr=True)["simclr"]
    sim = F.cosine_similarity(z[:3], z[3:], dim=1).mean()
    assert out["feature_sim"].item() == pytest.approx(sim.item(), abs=1e-6)
    assert out["loss"].item() == pytest.approx(100 * out["pixel"].item() - sim.item(), rel=1e-6)
    out["loss"].backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0 and torch.isfinite(x_hat.grad).all()
    assert x.grad is None  # x is data: no gradient reaches it
    assert model.conv.weight.grad is not None  # F's own step is the caller's business


def test_reconstruction_loss_lam_and_reduction():
    torch.manual_seed(0)
    model = TinyF()
    x, x_hat = _images(3, 8, seed=12), _images(3, 8, seed=13)
    augment = _paired_fixed_augment(3, seed=2)
    base = reconstruction_loss(model, x, x_hat, augment, lam=0.0)
    assert base["loss"].item() == pytest.approx(-base["feature_sim"].item(), abs=1e-7)
    for lam in (1.0, 100.0):
        out = reconstruction_loss(model, x, x_hat, augment, lam=lam)
        assert (out["loss"] - base["loss"]).item() == pytest.approx(lam * base["pixel"].item(), rel=1e-5)
    summed = reconstruction_loss(model, x, x_hat, augment, reduction="sum")
    assert summed["pixel"].item() == pytest.approx(base["pixel"].item() * 3 * 8 * 8, rel=1e-5)
    per_image = ((x - x_hat) ** 2).flatten(1).sum(1).mean()
    assert summed["pixel"].item() == pytest.approx(per_image.item(), rel=1e-6)
    with pytest.raises(ValueError):
        reconstruction_loss(model, x, x_hat, augment, reduction="max")
    with pytest.raises(ValueError):
        reconstruction_loss(model, x, x_hat[:2], augment)


def test_reconstruction_loss_random_augment_reproducible():
    torch.manual_seed(0)
    model = TinyF()
    x, x_hat = _images(3, 8, seed=14), _images(3, 8, seed=15)
    T = SimCLRAugment()
    a = reconstruction_loss(model, x, x_hat, T, generator=_gen(3))
    b = reconstruction_loss(model, x, x_hat, T, generator=_gen(3))
    assert torch.equal(a["loss"], b["loss"])


# --------------------------------------------------------------------------- #
# Eq. 10: latent reconstruction
# --------------------------------------------------------------------------- #
def test_latent_reconstruction_loss():
    h = torch.randn(5, 16, generator=_gen(16))
    assert latent_reconstruction_loss(h.clone(), h).item() == 0.0
    h_rec = h + torch.randn(5, 16, generator=_gen(17)) * 0.3
    mean = latent_reconstruction_loss(h_rec, h)
    assert mean.item() == pytest.approx(((h_rec - h) ** 2).mean().item(), rel=1e-6)
    summed = latent_reconstruction_loss(h_rec, h, reduction="sum")
    assert summed.item() == pytest.approx(mean.item() * 16, rel=1e-5)
    assert latent_reconstruction_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]),
                                      reduction="sum").item() == pytest.approx(5.0)
    h_rec.requires_grad_()
    latent_reconstruction_loss(h_rec, h).backward()
    assert torch.allclose(h_rec.grad, 2 * (h_rec - h).detach() / h.numel())
    with pytest.raises(ValueError):
        latent_reconstruction_loss(h_rec[:4], h)
    with pytest.raises(ValueError):
        latent_reconstruction_loss(h_rec, h, reduction="none")
