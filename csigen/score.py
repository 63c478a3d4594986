"""Outlier scores and AUROC (paper Sec. 2.3, Eq. 11; CSI's evaluation).

Pipeline::

    feats_train = extract_features(model, task.train_images, augment)   # (N, K, D), (N, K, K)
    feats_test = extract_features(model, task.test_images, augment)
    s = nearest_neighbour_score(feats_test, feats_train)                 # Eq. 11, (N_test,)
    # or: s = csi_score(feats_test, feats_train)                         # CSI's "CSI" score
    auroc(s[task.test_is_inlier], s[~task.test_is_inlier])

Every score is a *normality* score: higher means more inlier-like (as in CSI),
and :func:`auroc` labels inliers 1.

Feature layout: ``Features.simclr[i, k]`` is the simclr-head feature of shift
``k`` (rotation by ``k * 90`` degrees) of image ``i``, averaged over ``R``
random augmentations (the ensemble of CSI / the paper's ``M_ens``).  The
features are *not* normalised: the norm carries information (Eq. 11 multiplies
by ``||F(x)||``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NEIGHBOUR_MODES",
    "Features",
    "auroc",
    "csi_score",
    "csi_weights",
    "extract_features",
    "nearest_neighbour_score",
    "per_class_auroc",
    "roc_curve_points",
]

#: Accepted values of ``nearest_neighbour_score(..., neighbour=...)``.
NEIGHBOUR_MODES = ("shared", "literal", "per_shift")


# --------------------------------------------------------------------------- #
# Features
# --------------------------------------------------------------------------- #
@dataclass
class Features:
    """Per-image features under the K shifts, averaged over R random draws.

    Attributes:
        simclr: ``(N, K, D)`` float, unnormalised simclr-head outputs;
            ``simclr[i, k]`` belongs to shift ``k`` of image ``i``.
        shift: ``(N, K, K)`` float, shift-head logits; ``shift[i, k, k]`` is
            the logit of the correct shift for shift ``k`` of image ``i``.
    """

    simclr: Tensor
    shift: Tensor

    def __post_init__(self) -> None:
        if self.simclr.dim() != 3:
            raise ValueError(f"Features.simclr must be (N, K, D), got shape {tuple(self.simclr.shape)}")
        if self.shift.dim() != 3 or self.shift.shape[:2] != self.simclr.shape[:2]:
            raise ValueError(
                f"Features.shift must be (N, K, K) matching simclr (N, K, D) = {tuple(self.simclr.shape)}, "
                f"got {tuple(self.shift.shape)}"
            )
        if self.shift.shape[2] < self.shift.shape[1]:
            raise ValueError(f"Features.shift has {self.shift.shape[2]} logits for {self.shift.shape[1]} shifts")

    def __len__(self) -> int:
        return self.simclr.shape[0]

    @property
    def num_shifts(self) -> int:
        return self.simclr.shape[1]

    def to(self, device) -> Features:
        return Features(self.simclr.to(device), self.shift.to(device))

    def __getitem__(self, index) -> Features:
        """Row selection (int, slice, index tensor or boolean mask) over images."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Features(self.simclr[index], self.shift[index])


# --------------------------------------------------------------------------- #
# Feature extraction
# --------------------------------------------------------------------------- #
def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def extract_features(
    model: nn.Module,
    images: Tensor,
    augment: Callable[..., Tensor],
    *,
    num_samples: int = 10,
    num_shifts: int = 4,
    batch_size: int = 256,
    device=None,
    seed: int = 0,
    hflip: bool = True,
    amp: bool = False,
) -> Features:
    """Features of ``images`` under K shifts, averaged over R augmentation draws.

    For each draw ``r`` in ``range(num_samples)`` and each chunk of
    ``batch_size`` images (as CSI's ``_get_features``):

    1. ``x`` -> ``random_hflip(x)`` if ``hflip`` (CSI flips at evaluation too,
       once per image, before the rotations, so all K rotations share the flip);
    2. ``shift_batch(x, num_shifts)`` -> ``(K * B, 3, H, W)`` shift-major;
    3. ``augment(x_t, generator=g)`` (normally ``SimCLRAugment.eval_augment()``);
    4. ``model(x_t, simclr=True, shift=True)`` in eval mode under ``no_grad``.

    The outputs are summed over the draws and divided by R.

    Randomness: draw ``r`` uses its own ``torch.Generator(device)`` seeded with
    ``seed + r``; the generator carries on from one chunk to the next (chunks in
    order), so the result is a deterministic function of ``(seed, num_samples,
    batch_size, images)``.  It is *not* invariant to ``batch_size``, because the
    augmentation draws are made per chunk.  CSI instead reseeds the global RNG
    with ``r`` at every batch (so image j of every batch gets the same random
    parameters); the distribution per image is the same.

    Args:
        model: network whose ``forward(x, simclr=True, shift=True)`` returns a
            dict with ``"simclr"`` ``(B, D)`` and ``"shift"`` ``(B, >=K)``
            (a CSI-style ``(logits, dict)`` tuple is accepted too).  Put in
            eval mode for the call; its previous mode is restored afterwards.
        images: ``(N, 3, H, W)`` uint8 (converted to float in [0, 1] on
            ``device``, one chunk at a time) or float in [0, 1].  May stay on the
            CPU; chunks are moved to ``device``.
        augment: callable ``augment(x, generator=g) -> x`` on float [0, 1] images.
        num_samples: R, the number of random draws averaged.
        num_shifts: K.
        batch_size: images per chunk (the network sees ``K * batch_size`` rows).
        device: where the network runs; default: the model's device.
        seed: base seed; draw r uses ``seed + r``.
        hflip: apply CSI's random horizontal flip before the shifts.
        amp: on CUDA, run the forward pass under ``torch.autocast`` (float16);
            outputs are cast back to float32.  Ignored, with a warning, on
            other devices (CPU bfloat16 autocast was ~15x slower than float32
            for ResNet-18 here).

    Returns:
        :class:`Features` on the CPU: ``simclr (N, K, D)``, ``shift (N, K, K')``
        (K' = the shift head's width, K for the paper's models), float32.
    """
    from csigen.augment import random_hflip, shift_batch  # lazy: keep import cheap

    if images.dim() != 4:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    if num_samples < 1 or num_shifts < 1 or batch_size < 1:
        raise ValueError("num_samples, num_shifts and batch_size must be >= 1")
    device = torch.device(device) if device is not None else _model_device(model)
    is_uint8 = images.dtype == torch.uint8
    n = images.shape[0]

    generators = [torch.Generator(device=device).manual_seed(seed + r) for r in range(num_samples)]
    if amp and device.type == "cuda":
        autocast = lambda: torch.autocast(device_type="cuda", dtype=torch.float16)
    else:
        if amp:
            warnings.warn("extract_features: amp=True is ignored off CUDA (CPU bfloat16 autocast is "
                          "far slower than float32 for these convolutions)", stacklevel=2)
        autocast = contextlib.nullcontext

    simclr_out: Tensor | None = None
    shift_out: Tensor | None = None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                x = images[start : start + batch_size].to(device, non_blocking=True)
                x = x.float().div_(255.0) if is_uint8 else x.float()
                b = x.shape[0]
                sim_sum = shi_sum = None
                for g in generators:
                    xr = random_hflip(x, generator=g) if hflip else x
                    xr, _ = shift_batch(xr, num_shifts)
                    xr = augment(xr, generator=g)
                    with autocast():
                        out = model(xr, simclr=True, shift=True)
                    if isinstance(out, tuple):  # CSI-style (logits, aux dict)
                        out = out[1]
                    # shift-major (K*B, .) -> (B, K, .)
                    sim = out["simclr"].float().reshape(num_shifts, b, -1).transpose(0, 1)
                    shi = out["shift"].float().reshape(num_shifts, b, -1).transpose(0, 1)
                    sim_sum = sim if sim_sum is None else sim_sum + sim
                    shi_sum = shi if shi_sum is None else shi_sum + shi
                if simclr_out is None:
                    simclr_out = torch.empty((n, num_shifts, sim_sum.shape[-1]), dtype=torch.float32)
                    shift_out = torch.empty((n, num_shifts, shi_sum.shape[-1]), dtype=torch.float32)
                simclr_out[start : start + b] = (sim_sum / num_samples).cpu()
                shift_out[start : start + b] = (shi_sum / num_samples).cpu()
    finally:
        model.train(was_training)

    if simclr_out is None:
        raise ValueError("images is empty")
    return Features(simclr=simclr_out, shift=shift_out)


# --------------------------------------------------------------------------- #
# Scores
# --------------------------------------------------------------------------- #
def _check_pair(test: Features, train: Features) -> None:
    if test.simclr.shape[1:] != train.simclr.shape[1:]:
        raise ValueError(
            f"test and train features disagree: (K, D) = {tuple(test.simclr.shape[1:])} "
            f"vs {tuple(train.simclr.shape[1:])}"
        )
    if len(train) == 0:
        raise ValueError("training features are empty")


def _unit(x: Tensor) -> Tensor:
    """L2-normalise the last dimension (a zero vector stays zero)."""
    return F.normalize(x.float(), dim=-1, eps=1e-12)


def _per_shift_max(test_simclr: Tensor, train_unit: Tensor, chunk_size: int) -> Tensor:
    """``out[i, k] = max_j <test_simclr[i, k], train_unit[j, k]>`` -> (N_test, K)."""
    k_shifts = train_unit.shape[1]
    dev = train_unit.device
    axes = [train_unit[:, k].T.contiguous() for k in range(k_shifts)]  # each (D, N_train)
    out = []
    for start in range(0, test_simclr.shape[0], chunk_size):
        z = test_simclr[start : start + chunk_size].to(dev, torch.float32)
        out.append(torch.stack([(z[:, k] @ axes[k]).amax(dim=1) for k in range(k_shifts)], dim=1))
    if not out:
        return torch.empty((0, k_shifts), device=dev)
    return torch.cat(out)


def nearest_neighbour_score(
    test: Features,
    train: Features,
    *,
    neighbour: str = "shared",
    chunk_size: int = 1024,
) -> Tensor:
    """Eq. 11 of Yu & Chiu: the nearest-neighbour score M(x_test, x~).

    With ``z_k(x) = test/train.simclr[., k]`` the (R-averaged) simclr feature of
    shift ``S_k`` of ``x``, the paper defines (Eq. 11)::

        m(x, x')      = sim(F(x), F(x')) * ||F(x)||  = <F(x), F(x') / ||F(x')||>
        M(x_test, x~) = sum_k m(S_k(x_test), S_k(x~))
        x~            = argmax_{x' in X} sum_S m(x_test, x')

    The last line is ambiguous: as printed, ``S`` is not applied inside the
    argmax (so the sum over S would just multiply by K).  Three readings:

    * ``"shared"`` (default, our reading): one nearest neighbour for all shifts,
      chosen by the same quantity that is then reported::

          x~    = argmax_{x'} sum_k m(S_k(x_test), S_k(x'))
          score = max_{x'}    sum_k m(S_k(x_test), S_k(x'))

    * ``"literal"``: the neighbour is chosen on the unshifted images (shift
      k = 0, the identity rotation), then scored under all shifts::

          x~    = argmax_{x'} m(x_test, x')          (k = 0 features)
          score = sum_k m(S_k(x_test), S_k(x~))

    * ``"per_shift"``: CSI's own "simclr" score, each shift takes its own
      neighbour::

          score = sum_k max_{x'} m(S_k(x_test), S_k(x'))

      This is ``K`` times what CSI's ``get_scores`` prints with unit similarity
      weights and zero shift weights (CSI averages over k, and its normalised
      ``P.axis`` is exactly ``F(x') / ||F(x')||``); for K = 1 they are equal.

    Always ``literal <= shared <= per_shift``.  Higher = more inlier-like.

    Args:
        test: features of the test images, ``simclr (N_test, K, D)``.
        train: features of the training images, ``simclr (N_train, K, D)``.
        neighbour: ``"shared"``, ``"literal"`` or ``"per_shift"``.
        chunk_size: test rows per matrix product; memory is
            ``O(chunk_size * N_train)``; the result does not depend on it.

    Returns:
        ``(N_test,)`` float32 scores on the device of ``train``'s features.
    """
    if neighbour not in NEIGHBOUR_MODES:
        raise ValueError(f"neighbour must be one of {NEIGHBOUR_MODES}, got {neighbour!r}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    _check_pair(test, train)
    train_unit = _unit(train.simclr)  # (N_train, K, D): F(x') / ||F(x')||
    dev = train_unit.device

    if neighbour == "per_shift":
        return _per_shift_max(test.simclr, train_unit, chunk_size).sum(dim=1)

    n_train, k_shifts, dim = train_unit.shape
    out = []
    if neighbour == "shared":
        # sum_k <z_k, u_k> is one inner product of the flattened (K * D) vectors.
        axis = train_unit.reshape(n_train, k_shifts * dim).T.contiguous()  # (K*D, N_train)
        for start in range(0, len(test), chunk_size):
            z = test.simclr[start : start + chunk_size].to(dev, torch.float32)
            out.append((z.reshape(z.shape[0], -1) @ axis).amax(dim=1))
    else:  # literal
        axis0 = train_unit[:, 0].T.contiguous()  # (D, N_train)
        for start in range(0, len(test), chunk_size):
            z = test.simclr[start : start + chunk_size].to(dev, torch.float32)  # (c, K, D)
            nn_idx = (z[:, 0] @ axis0).argmax(dim=1)  # (c,), first index on ties
            out.append((z * train_unit[nn_idx]).sum(dim=(1, 2)))
    if not out:
        return torch.empty(0, device=dev)
    return torch.cat(out)


def csi_weights(train: Features) -> tuple[Tensor, Tensor]:
    """CSI's score weights from the training features.

    Returns ``(w_sim, w_shi)``, each ``(K,)``::

        w_sim[k] = 1 / mean_i ||z_k(x_i)||          (R-averaged simclr features)
        w_shi[k] = 1 / mean_i shift_logit_k(x_i)[k]  (logit of the correct shift)
    """
    k_shifts = train.num_shifts
    w_sim = 1.0 / train.simclr.float().norm(dim=2).mean(dim=0)
    idx = torch.arange(k_shifts, device=train.shift.device)
    w_shi = 1.0 / train.shift.float()[:, idx, idx].mean(dim=0)
    return w_sim, w_shi


def csi_score(
    test: Features,
    train: Features,
    *,
    weights: tuple[Tensor, Tensor] | None = None,
    chunk_size: int = 1024,
) -> Tensor:
    """CSI's "CSI" score (Tack et al. 2020, ``evals/ood_pre.py``), vectorised.

    ::

        score(x) = 1/K sum_k [ w_sim[k] * max_{x'} <z_k(x), z_k(x') / ||z_k(x')||>
                               + w_shi[k] * shift_logit_k(x)[k] ]

    with ``(w_sim, w_shi) = csi_weights(train)`` unless ``weights`` is given.
    The test feature is not normalised, the training one is (CSI's ``P.axis``),
    so the inner product is ``cosine * ||z_k(x)||``, i.e. Eq. 11's ``m``.

    Returns:
        ``(N_test,)`` float32 scores on the device of ``train``'s features.
    """
    _check_pair(test, train)
    w_sim, w_shi = csi_weights(train) if weights is None else weights
    train_unit = _unit(train.simclr)
    dev = train_unit.device
    w_sim = torch.as_tensor(w_sim, dtype=torch.float32, device=dev)
    w_shi = torch.as_tensor(w_shi, dtype=torch.float32, device=dev)
    sim = _per_shift_max(test.simclr, train_unit, chunk_size)  # (N, K)
    idx = torch.arange(test.num_shifts, device=test.shift.device)
    shi = test.shift[:, idx, idx].to(dev, torch.float32)  # (N, K)
    return (sim * w_sim + shi * w_shi).mean(dim=1)


# --------------------------------------------------------------------------- #
# AUROC
# --------------------------------------------------------------------------- #
def _as_numpy(x) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _check_scores(arr: np.ndarray, name: str) -> None:
    if arr.size == 0:
        raise ValueError(f"{name} is empty: AUROC needs at least one inlier and one outlier score")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise ValueError(
            f"{name}: scores contain {bad} non-finite values; the model probably diverged "
            "(NaN/inf features) - check the training loss and the checkpoint"
        )


def auroc(inlier_scores, outlier_scores) -> float:
    """Area under the ROC curve, inliers labelled 1 (higher score = inlier).

    Accepts tensors, arrays or sequences.  Raises ``ValueError`` if either set is
    empty or any score is NaN/inf.
    """
    from sklearn.metrics import roc_auc_score

    pos = _as_numpy(inlier_scores)
    neg = _as_numpy(outlier_scores)
    _check_scores(pos, "inlier_scores")
    _check_scores(neg, "outlier_scores")
    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    return float(roc_auc_score(y, np.concatenate([pos, neg])))


def per_class_auroc(scores, labels, inlier: int) -> dict[int, float]:
    """AUROC of the inlier class against each other class present in ``labels``.

    Args:
        scores: ``(M,)`` normality scores of the test set.
        labels: ``(M,)`` integer class labels.
        inlier: the inlier class.

    Returns:
        ``{class: auroc(scores[labels == inlier], scores[labels == class])}``
        for every class other than ``inlier``, in increasing class order.
    """
    s = _as_numpy(scores)
    lab = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    lab = lab.reshape(-1)
    if lab.shape != s.shape:
        raise ValueError(f"scores {s.shape} and labels {lab.shape} differ in length")
    pos = s[lab == inlier]
    return {int(c): auroc(pos, s[lab == c]) for c in np.unique(lab) if int(c) != int(inlier)}


def roc_curve_points(inlier_scores, outlier_scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` of the ROC curve (inliers positive), for plotting."""
    from sklearn.metrics import roc_curve

    pos = _as_numpy(inlier_scores)
    neg = _as_numpy(outlier_scores)
    _check_scores(pos, "inlier_scores")
    _check_scores(neg, "outlier_scores")
    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    fpr, tpr, thr = roc_curve(y, np.concatenate([pos, neg]))
    return fpr, tpr, thr
