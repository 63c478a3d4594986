"""Tests for csigen.score: Eq. 11 scores, CSI's score, AUROC, feature extraction."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from csigen.score import (
    HFLIP_MODES,
    NEIGHBOUR_MODES,
    SCORE_NAMES,
    Features,
    all_scores,
    auroc,
    compute_score,
    csi_score,
    csi_score_terms,
    csi_weights,
    extract_features,
    nearest_neighbour_score,
    per_class_auroc,
    roc_curve_points,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _load_fixture_module():
    spec = importlib.util.spec_from_file_location("make_score_fixture", FIXTURES / "make_score_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_features(n, k=3, d=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return Features(
        simclr=(torch.randn(n, k, d, generator=g) * (1 + torch.rand(n, k, 1, generator=g))).to(dtype),
        shift=torch.randn(n, k, k, generator=g).to(dtype) + 2 * torch.eye(k),
    )


# --------------------------------------------------------------------------- #
# Brute-force reference of Eq. 11 (Python loops, float64)
# --------------------------------------------------------------------------- #
def m(a: torch.Tensor, b: torch.Tensor) -> float:
    """Eq. 11: m(x, x') = sim(F(x), F(x')) * ||F(x)||."""
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()) * a.norm())


def brute_force(test: Features, train: Features, mode: str) -> list[float]:
    k_shifts = test.simclr.shape[1]
    out = []
    for i in range(len(test)):
        zt = test.simclr[i]
        if mode == "shared":
            totals = [sum(m(zt[k], train.simclr[j, k]) for k in range(k_shifts)) for j in range(len(train))]
            best = max(range(len(train)), key=lambda j: totals[j])
            out.append(sum(m(zt[k], train.simclr[best, k]) for k in range(k_shifts)))
        elif mode == "literal":
            best = max(range(len(train)), key=lambda j: m(zt[0], train.simclr[j, 0]))
            out.append(sum(m(zt[k], train.simclr[best, k]) for k in range(k_shifts)))
        elif mode == "per_shift":
            out.append(sum(max(m(zt[k], train.simclr[j, k]) for j in range(len(train))) for k in range(k_shifts)))
        else:
            raise AssertionError(mode)
    return out


@pytest.mark.parametrize("mode", NEIGHBOUR_MODES)
def test_nearest_neighbour_matches_brute_force(mode):
    test, train = random_features(9, seed=1), random_features(13, seed=2)
    got = nearest_neighbour_score(test, train, neighbour=mode, chunk_size=4)
    assert got.shape == (9,)
    torch.testing.assert_close(got.double(), torch.tensor(brute_force(test, train, mode), dtype=torch.float64),
                               rtol=1e-5, atol=1e-5)


def test_default_mode_is_shared():
    test, train = random_features(6, seed=3), random_features(8, seed=4)
    torch.testing.assert_close(nearest_neighbour_score(test, train),
                               nearest_neighbour_score(test, train, neighbour="shared"))


def test_modes_differ_and_are_ordered():
    test, train = random_features(50, k=4, d=8, seed=5), random_features(40, k=4, d=8, seed=6)
    lit, sha, per = (nearest_neighbour_score(test, train, neighbour=n) for n in ("literal", "shared", "per_shift"))
    tol = 1e-5
    assert bool((lit <= sha + tol).all()) and bool((sha <= per + tol).all())
    assert not torch.allclose(lit, sha) and not torch.allclose(sha, per)


@pytest.mark.parametrize("mode", NEIGHBOUR_MODES)
def test_chunking_invariance(mode):
    test, train = random_features(23, k=4, d=6, seed=7), random_features(17, k=4, d=6, seed=8)
    a = nearest_neighbour_score(test, train, neighbour=mode, chunk_size=1)
    b = nearest_neighbour_score(test, train, neighbour=mode, chunk_size=10_000)
    c = nearest_neighbour_score(test, train, neighbour=mode, chunk_size=5)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(c, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(csi_score(test, train, chunk_size=1), csi_score(test, train, chunk_size=999),
                               rtol=1e-6, atol=1e-6)


def test_per_shift_k1_is_max_cosine_times_norm():
    test, train = random_features(11, k=1, d=7, seed=9), random_features(19, k=1, d=7, seed=10)
    zt, zr = test.simclr[:, 0], train.simclr[:, 0]
    cos = F.cosine_similarity(zt[:, None, :], zr[None, :, :], dim=-1)  # (11, 19)
    expected = (cos * zt.norm(dim=1, keepdim=True)).amax(dim=1)
    for mode in NEIGHBOUR_MODES:  # with one shift all three readings coincide
        torch.testing.assert_close(nearest_neighbour_score(test, train, neighbour=mode), expected,
                                   rtol=1e-5, atol=1e-5)


def test_score_argument_checks():
    test, train = random_features(3, k=2, d=4), random_features(3, k=2, d=5)
    with pytest.raises(ValueError, match="disagree"):
        nearest_neighbour_score(test, train)
    with pytest.raises(ValueError, match="neighbour"):
        nearest_neighbour_score(test, test, neighbour="nearest")
    with pytest.raises(ValueError):
        Features(simclr=torch.zeros(3, 2, 4), shift=torch.zeros(4, 2, 2))


def test_csi_score_formula():
    """csi_score against a direct (looped) reading of CSI's formula."""
    test, train = random_features(7, k=4, d=6, seed=11), random_features(12, k=4, d=6, seed=12)
    w_sim, w_shi = csi_weights(train)
    k_shifts = 4
    for k in range(k_shifts):
        assert math.isclose(float(w_sim[k]), 1 / float(train.simclr[:, k].norm(dim=1).mean()), rel_tol=1e-6)
        assert math.isclose(float(w_shi[k]), 1 / float(train.shift[:, k, k].mean()), rel_tol=1e-6)
    got = csi_score(test, train)
    for i in range(len(test)):
        s = 0.0
        for k in range(k_shifts):
            s += max(m(test.simclr[i, k], train.simclr[j, k]) for j in range(len(train))) * float(w_sim[k])
            s += float(test.shift[i, k, k]) * float(w_shi[k])
        assert math.isclose(float(got[i]), s / k_shifts, rel_tol=1e-5, abs_tol=1e-5)
    # explicit weights are used as given
    torch.testing.assert_close(csi_score(test, train, weights=(torch.ones(4), torch.zeros(4))),
                               nearest_neighbour_score(test, train, neighbour="per_shift") / 4)


def test_csi_score_terms_are_its_two_terms():
    """The similarity term (shift head weighted out) and the shift term (similarity weighted out) sum to csi_score."""
    test, train = random_features(9, k=4, d=6, seed=21), random_features(14, k=4, d=6, seed=22)
    terms = csi_score_terms(test, train, chunk_size=5)
    assert set(terms) == {"similarity", "shift"} and all(v.shape == (9,) for v in terms.values())
    torch.testing.assert_close(terms["similarity"] + terms["shift"], csi_score(test, train))
    w_sim, w_shi = csi_weights(train)
    torch.testing.assert_close(terms["similarity"], csi_score(test, train, weights=(w_sim, torch.zeros(4))))
    torch.testing.assert_close(terms["shift"], csi_score(test, train, weights=(torch.zeros(4), w_shi)))
    # the shift term is the weighted logit of the right rotation, whatever the features' similarity
    idx = torch.arange(4)
    torch.testing.assert_close(terms["shift"], (test.shift[:, idx, idx] * w_shi).mean(dim=1))
    with pytest.raises(ValueError):
        csi_score_terms(test, Features(train.simclr[:, :2], train.shift[:, :2, :2]))


# --------------------------------------------------------------------------- #
# Against the official CSI code (fixture, see tests/fixtures/make_score_fixture.py)
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def csi_reference():
    ref = json.loads((FIXTURES / "score_csi_reference.json").read_text())
    mod = _load_fixture_module()
    raw = mod.make_features(ref["seed"], **ref["shapes"])
    assert math.isclose(mod.checksum(raw), ref["checksum"], rel_tol=1e-9), (
        "torch's random stream changed: the synthetic features of the CSI fixture differ from the stored ones; "
        "regenerate with tests/fixtures/make_score_fixture.py (needs a CSI checkout)"
    )
    # Features = mean over the R draws of CSI's per-draw features.
    train = Features(raw["train_simclr"].mean(dim=2), raw["train_shift"].mean(dim=2))
    test = Features(raw["test_simclr"].mean(dim=2), raw["test_shift"].mean(dim=2))
    return ref, train, test


def test_csi_weights_match_csi(csi_reference):
    ref, train, _ = csi_reference
    w_sim, w_shi = csi_weights(train)
    torch.testing.assert_close(w_sim.double(), torch.tensor(ref["csi"]["weight_sim"], dtype=torch.float64),
                               rtol=1e-5, atol=0)
    torch.testing.assert_close(w_shi.double(), torch.tensor(ref["csi"]["weight_shi"], dtype=torch.float64),
                               rtol=1e-5, atol=0)


def test_csi_score_matches_csi_get_scores(csi_reference):
    ref, train, test = csi_reference
    expected = torch.tensor(ref["csi"]["scores"], dtype=torch.float64)
    got = csi_score(test, train).double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    half = len(test) // 2
    assert math.isclose(auroc(got[:half], got[half:]), ref["csi"]["auroc"], abs_tol=1e-12)


def test_per_shift_relation_to_csi_simclr_score(csi_reference):
    """CSI's simclr score = (1/K) sum_k max_x' <z_k(x), axis_k(x')> with axis = normalised train
    features, i.e. m(S_k x, S_k x') of Eq. 11 -> nearest_neighbour_score(per_shift) / K.
    (CSI's own "simclr" weights [1]/[0] only run with K_shift = 1; with K = 4 they raise.)"""
    ref, train, test = csi_reference
    k_shifts = ref["shapes"]["num_shifts"]
    per_shift = nearest_neighbour_score(test, train, neighbour="per_shift").double()
    torch.testing.assert_close(per_shift / k_shifts, torch.tensor(ref["simclr_k4"]["scores"], dtype=torch.float64),
                               rtol=1e-5, atol=1e-5)
    assert ref["simclr_k4"]["literal_one_element_weights_raise_index_error"]
    # K_shift = 1 (CSI's SimCLR baseline): all readings of Eq. 11 equal CSI's simclr score.
    test1 = Features(test.simclr[:, :1], test.shift[:, :1, :1])
    train1 = Features(train.simclr[:, :1], train.shift[:, :1, :1])
    expected1 = torch.tensor(ref["simclr_k1"]["scores"], dtype=torch.float64)
    for mode in NEIGHBOUR_MODES:
        torch.testing.assert_close(nearest_neighbour_score(test1, train1, neighbour=mode).double(), expected1,
                                   rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- #
# AUROC
# --------------------------------------------------------------------------- #
def test_auroc_hand_example():
    # pairs (inlier > outlier): 3>1, 3>2.5, 2>1 yes; 2>2.5 no -> 3/4
    assert auroc([3.0, 2.0], [1.0, 2.5]) == pytest.approx(0.75)
    assert auroc(torch.tensor([1.0]), torch.tensor([1.0])) == pytest.approx(0.5)  # tie counts one half
    assert auroc([5.0, 6.0], [1.0]) == pytest.approx(1.0)
    assert auroc([0.0], [1.0, 2.0]) == pytest.approx(0.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_auroc_rejects_non_finite(bad):
    with pytest.raises(ValueError, match=r"scores contain 1 non-finite values; the model probably diverged"):
        auroc([1.0, bad], [0.0])
    with pytest.raises(ValueError, match="non-finite"):
        auroc(torch.tensor([1.0]), torch.tensor([0.0, bad]))


def test_auroc_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="empty"):
        auroc([1.0], torch.tensor([]))


def test_per_class_auroc_and_roc_curve():
    scores = torch.tensor([0.9, 0.8, 0.1, 0.85, 0.2, 0.3])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    res = per_class_auroc(scores, labels, inlier=0)
    assert set(res) == {1, 2}
    assert res[2] == pytest.approx(1.0)
    assert res[1] == pytest.approx(auroc([0.9, 0.8], [0.1, 0.85]))
    fpr, tpr, thr = roc_curve_points([0.9, 0.8], [0.1, 0.85])
    assert fpr.shape == tpr.shape == thr.shape and fpr[0] == 0.0 and tpr[-1] == 1.0


# --------------------------------------------------------------------------- #
# extract_features
# --------------------------------------------------------------------------- #
class DummyNet(nn.Module):
    """Linear heads on the flattened pixels (so rotations and flips change the output)."""

    def __init__(self, pixels=3 * 4 * 4, dim=5, num_shifts=4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.sim = nn.Linear(pixels, dim)
        self.shi = nn.Linear(pixels, num_shifts)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.calls = 0

    def forward(self, x, *, penultimate=False, simclr=False, shift=False):
        self.calls += 1
        assert not self.training
        h = x.flatten(1)
        out = {}
        if simclr:
            out["simclr"] = self.sim(h)
        if shift:
            out["shift"] = self.shi(h)
        if not out:
            out["penultimate"] = h
        return out


def identity_augment(x, generator=None):
    return x


def noisy_augment(x, generator=None):
    return x + 0.1 * torch.rand(x.shape, generator=generator, device=x.device)


@pytest.fixture
def augment_mod():
    return pytest.importorskip("csigen.augment", reason="csigen.augment is not available")


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8)


def test_extract_features_shapes_and_layout(augment_mod):
    net, imgs = DummyNet(), _images(6)
    net.train()
    feats = extract_features(net, imgs, identity_augment, num_samples=2, batch_size=4, hflip=False)
    assert net.training  # mode restored
    assert feats.simclr.shape == (6, 4, 5) and feats.shift.shape == (6, 4, 4)
    assert feats.simclr.dtype == torch.float32 and len(feats) == 6
    # with no randomness, features[i, k] is the network on shift k of image i (shift-major layout)
    x = imgs.float() / 255
    x_t, labels = augment_mod.shift_batch(x, 4)
    assert torch.equal(labels.reshape(4, 6), torch.arange(4)[:, None].expand(4, 6))
    with torch.no_grad():
        net.eval()
        ref = net(x_t, simclr=True, shift=True)
    torch.testing.assert_close(feats.simclr, ref["simclr"].reshape(4, 6, -1).transpose(0, 1))
    torch.testing.assert_close(feats.shift, ref["shift"].reshape(4, 6, -1).transpose(0, 1))
    # uint8 and float [0, 1] input agree; chunking does not matter without randomness
    feats_f = extract_features(net, x, identity_augment, num_samples=1, batch_size=100, hflip=False)
    torch.testing.assert_close(feats_f.simclr, feats.simclr)
    torch.testing.assert_close(feats_f.shift, feats.shift)


def test_extract_features_deterministic(augment_mod):
    net, imgs = DummyNet(), _images(7, seed=1)
    kw = {"num_samples": 3, "batch_size": 3, "seed": 5}
    a = extract_features(net, imgs, noisy_augment, **kw)
    b = extract_features(net, imgs, noisy_augment, **kw)
    assert torch.equal(a.simclr, b.simclr) and torch.equal(a.shift, b.shift)
    c = extract_features(net, imgs, noisy_augment, **{**kw, "seed": 6})
    assert not torch.allclose(a.simclr, c.simclr)


def test_extract_features_averages_over_draws(augment_mod):
    """Draw r uses seed + r, so R draws = the mean of R single-draw runs with seeds seed .. seed+R-1."""
    net, imgs = DummyNet(), _images(5, seed=2)
    avg = extract_features(net, imgs, noisy_augment, num_samples=3, batch_size=2, seed=10)
    singles = [extract_features(net, imgs, noisy_augment, num_samples=1, batch_size=2, seed=10 + r)
               for r in range(3)]
    torch.testing.assert_close(avg.simclr, sum(s.simclr for s in singles) / 3, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(avg.shift, sum(s.shift for s in singles) / 3, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(singles[0].simclr, singles[1].simclr)
    # the forward pass runs once per (chunk, draw), never per sample
    net.calls = 0
    extract_features(net, imgs, noisy_augment, num_samples=3, batch_size=2)
    assert net.calls == 3 * 3


def test_extract_features_with_eval_augment(augment_mod):
    """The real evaluation transform (random crop + jitter) through the generator: reproducible."""
    net = DummyNet(pixels=3 * 32 * 32)
    imgs = torch.randint(0, 256, (5, 3, 32, 32), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    aug = augment_mod.eval_augment()
    a = extract_features(net, imgs, aug, num_samples=2, batch_size=2, seed=1)
    b = extract_features(net, imgs, aug, num_samples=2, batch_size=2, seed=1)
    assert a.simclr.shape == (5, 4, 5) and torch.isfinite(a.simclr).all()
    assert torch.equal(a.simclr, b.simclr) and torch.equal(a.shift, b.shift)


class PixelNet(nn.Module):
    """simclr head = the flattened pixels (so each row reveals how it was flipped and rotated)."""

    def __init__(self, num_shifts=4):
        super().__init__()
        self.num_shifts = num_shifts
        self.register_buffer("anchor", torch.zeros(1))

    def forward(self, x, *, simclr=False, shift=False, penultimate=False):
        return {"simclr": x.flatten(1), "shift": torch.zeros(x.shape[0], self.num_shifts)}


def _flip_states(augment_mod, feats: Features, x: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` bool: was shift k of image i flipped? Fails unless each row is a flip of a rotation."""
    n, k_shifts, _ = feats.simclr.shape
    states = torch.zeros(n, k_shifts, dtype=torch.bool)
    for k in range(k_shifts):
        plain = augment_mod.rotate(x, k).flatten(1)
        flipped = augment_mod.rotate(augment_mod.hflip(x), k).flatten(1)
        got = feats.simclr[:, k]
        is_plain = (got == plain).all(dim=1)
        is_flipped = (got == flipped).all(dim=1)
        assert (is_plain | is_flipped).all(), f"shift {k}: a row is neither rotate(x) nor rotate(hflip(x))"
        states[:, k] = is_flipped
    return states


def test_extract_features_flips_each_rotation_independently(augment_mod):
    """CSI (evals/ood_pre.py, _get_features): cat([shift_trans(hflip(x), k) for k]), one flip per rotated copy."""
    n, k_shifts, seed = 64, 4, 7
    imgs = torch.randint(0, 256, (n, 3, 4, 4), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    x = imgs.float() / 255
    assert not torch.equal(x, augment_mod.hflip(x))  # flips are visible
    feats = extract_features(PixelNet(), imgs, identity_augment, num_samples=1, batch_size=n, seed=seed)
    states = _flip_states(augment_mod, feats, x)
    # rotations of one image get different flips (the old code shared one flip across the K copies)
    assert (states != states[:, :1]).any(dim=1).sum() > n // 2
    # exactly CSI's order of draws: K independent Bernoulli(1/2) flip draws, k = 0 .. K-1, before the augmentation
    g = torch.Generator().manual_seed(seed)
    expected = torch.stack([torch.rand(n, generator=g) < 0.5 for _ in range(k_shifts)], dim=1)
    assert torch.equal(states, expected)


def test_extract_features_hflip_modes(augment_mod):
    n = 32
    imgs = torch.randint(0, 256, (n, 3, 4, 4), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    x = imgs.float() / 255
    assert HFLIP_MODES == ("per_shift", "shared", "none")
    kw = {"num_samples": 1, "batch_size": n, "seed": 3}
    shared = _flip_states(augment_mod, extract_features(PixelNet(), imgs, identity_augment, hflip="shared", **kw), x)
    assert (shared == shared[:, :1]).all() and 0 < shared[:, 0].sum() < n  # one flip per image, for all K
    for off in ("none", False):
        none = _flip_states(augment_mod, extract_features(PixelNet(), imgs, identity_augment, hflip=off, **kw), x)
        assert not none.any()
    default = extract_features(PixelNet(), imgs, identity_augment, **kw)
    explicit = extract_features(PixelNet(), imgs, identity_augment, hflip="per_shift", **kw)
    as_bool = extract_features(PixelNet(), imgs, identity_augment, hflip=True, **kw)
    assert torch.equal(default.simclr, explicit.simclr) and torch.equal(default.simclr, as_bool.simclr)
    with pytest.raises(ValueError, match="hflip"):
        extract_features(PixelNet(), imgs, identity_augment, hflip="per_image", **kw)


def test_extract_features_precision(augment_mod):
    """float32 by default; amp_dtype runs the forward pass (only) under autocast on the model's device type."""
    seen = []

    class Spy(DummyNet):
        def forward(self, x, **kw):
            seen.append((x.dtype, torch.is_autocast_enabled("cpu"),
                         torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
            return super().forward(x, **kw)

    net, imgs = Spy(), _images(6, seed=8)
    fp32 = extract_features(net, imgs, noisy_augment, num_samples=1, batch_size=6)
    assert seen == [(torch.float32, False, None)]
    seen.clear()
    bf16 = extract_features(net, imgs, noisy_augment, num_samples=1, batch_size=6, amp_dtype=torch.bfloat16)
    assert seen == [(torch.float32, True, torch.bfloat16)]  # augmentation output stays float32
    assert bf16.simclr.dtype == torch.float32
    assert not torch.equal(bf16.simclr, fp32.simclr)
    torch.testing.assert_close(bf16.simclr, fp32.simclr, rtol=0.05, atol=0.1)
    with pytest.raises(ValueError, match="amp_dtype"):
        extract_features(net, imgs, noisy_augment, amp_dtype=True)


def test_all_scores_from_one_feature_set():
    from csigen.config import SCORES

    assert SCORE_NAMES == SCORES  # the config's choices are exactly the scores computed
    test, train = random_features(9, seed=11), random_features(13, seed=12)
    scores = all_scores(test, train, chunk_size=4)
    assert list(scores) == list(SCORE_NAMES)
    for mode in NEIGHBOUR_MODES:
        torch.testing.assert_close(scores[mode], nearest_neighbour_score(test, train, neighbour=mode))
        torch.testing.assert_close(compute_score(mode, test, train), scores[mode])
    torch.testing.assert_close(scores["csi"], csi_score(test, train))
    assert all(v.shape == (9,) and v.dtype == torch.float32 for v in scores.values())
    with pytest.raises(ValueError, match="score must be one of"):
        compute_score("simclr", test, train)
