"""Outlier scores and AUROC (paper Sec. 2.3, Eq. 11; CSI's evaluation).

Pipeline::

    feats_train = extract_features(model, task.train_images, augment)   # (N, K, D), (N, K, K)
    feats_test = extract_features(model, task.test_images, augment)
    s = nearest_neighbour_score(feats_test, feats_train)                 # Eq. 11, (N_test,)
    # or: s = csi_score(feats_test, feats_train)                         # CSI's "CSI" score
    # or: every score from the same features: all_scores(feats_test, feats_train)
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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "HFLIP_MODES",
    "NEIGHBOUR_MODES",
    "SCORE_NAMES",
    "Features",
    "all_scores",
    "auroc",
    "compute_score",
    "csi_score",
    "csi_score_terms",
    "csi_weights",
    "extract_features",
    "nearest_neighbour_score",
    "per_class_auroc",
    "roc_curve_points",
]

#: Accepted values of ``nearest_neighbour_score(..., neighbour=...)``.
NEIGHBOUR_MODES = ("shared", "literal", "per_shift")
#: Every score :func:`all_scores` computes: the three Eq. 11 readings, then CSI's score.
SCORE_NAMES = NEIGHBOUR_MODES + ("csi",)
#: Accepted values of ``extract_features(..., hflip=...)``.
HFLIP_MODES = ("per_shift", "shared", "none")


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
    hflip: bool | str = "per_shift",
    amp_dtype: torch.dtype | None = None,
    views: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    fast: bool = True,
    compile: bool = False,
) -> Features:
    """Features of ``images`` under K shifts, averaged over R augmentation draws.

    For each draw ``r`` in ``range(num_samples)`` and each chunk of
    ``batch_size`` images, as CSI's ``_get_features`` (``evals/ood_pre.py``:
    ``torch.cat([P.shift_trans(hflip(x), k) for k in range(P.K_shift)])``, then
    ``simclr_aug``):

    1. for each shift ``k`` in order: ``rotate(random_hflip(x), k)``, i.e. every
       rotated copy of an image gets its *own* random flip (``hflip="per_shift"``,
       CSI's behaviour; the K flips of a chunk are drawn before the augmentation
       parameters, one Bernoulli(1/2) per image per shift);
    2. the K copies are concatenated shift-major -> ``(K * B, 3, H, W)``;
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
        hflip: ``"per_shift"`` (default, CSI): an independent random flip for
            each rotated copy; ``"shared"``: one flip per image before the
            rotations, shared by its K copies (csigen <= 0.1); ``"none"``: no
            flip.  ``True`` / ``False`` mean ``"per_shift"`` / ``"none"``.
        amp_dtype: ``None`` (default): the forward pass runs in float32, as
            CSI evaluates.  A dtype (``torch.bfloat16`` / ``torch.float16``):
            the forward pass only (not the augmentation) runs under
            ``torch.autocast(device.type, amp_dtype)``; outputs are cast back
            to float32 before averaging.
        views: ``None`` (default): every draw starts from the chunk of
            ``images``.  A callable ``views(indices, g)`` (full-image tasks,
            CSI's ImageNet-30 evaluation): for each draw and chunk, the chunk's
            images as that draw sees them before step 1, float ``(B, 3, H, W)``
            in [0, 1], drawn from the draw's generator ``g`` (e.g.
            ``lambda i, g: task.eval_view(i, g, device, split="test")``, a fresh
            0.54 crop and flip of each full image); ``indices`` is int64
            ``(B,)`` on the CPU, rows of ``images``, which then give only the
            number and size of the images.  ``augment`` should then have no
            crop of its own (:func:`csigen.augment.no_crop_augment`).
        fast: True (default): step 4 runs an inference copy of ``model``
            (:func:`csigen.inference.prepare_inference`): every BatchNorm that
            follows a convolution folded into it, on the CPU and CUDA
            channels_last weights and inputs, on the CPU csigen's networks run
            32 rows at a time; the same features as the plain path to float32
            rounding (about 3e-7 relative for ResNet-18), about 1.45x faster
            on the CPU for ResNet-18 (rough probe, 1 thread).  ``model``
            itself is not touched (not even its mode) whenever a copy is made.
            False: ``model`` as it is (the plain path).
        compile: with ``fast``, also ``torch.compile`` the inference copy
            (Inductor with frozen weights; compiles afresh on every call, about
            10-15 s on the CPU, so worth it only for long evaluations).

    Returns:
        :class:`Features` on the CPU: ``simclr (N, K, D)``, ``shift (N, K, K')``
        (K' = the shift head's width, K for the paper's models), float32.
    """
    from csigen.augment import random_hflip, rotate  # lazy: keep import cheap
    from csigen.inference import InferenceNet, prepare_inference

    if images.dim() != 4:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    if num_samples < 1 or num_shifts < 1 or batch_size < 1:
        raise ValueError("num_samples, num_shifts and batch_size must be >= 1")
    if not 1 <= num_shifts <= 4:
        raise ValueError(f"num_shifts must be in 1..4 (rotations), got {num_shifts}")
    if num_shifts > 2 and images.shape[-1] != images.shape[-2]:
        raise ValueError("rotations by 90 degrees need square images; use num_shifts 1 or 2")
    if isinstance(hflip, bool):
        hflip = "per_shift" if hflip else "none"
    if hflip not in HFLIP_MODES:
        raise ValueError(f"hflip must be one of {HFLIP_MODES} (or a bool), got {hflip!r}")
    if amp_dtype is not None and not (isinstance(amp_dtype, torch.dtype) and amp_dtype.is_floating_point):
        raise ValueError(f"amp_dtype must be None (float32) or a floating dtype such as torch.bfloat16, "
                         f"got {amp_dtype!r}")
    if compile and not fast:
        raise ValueError("compile=True compiles the fast inference copy: use it with fast=True")
    device = torch.device(device) if device is not None else _model_device(model)
    is_uint8 = images.dtype == torch.uint8
    n = images.shape[0]

    generators = [torch.Generator(device=device).manual_seed(seed + r) for r in range(num_samples)]
    if amp_dtype is None:
        autocast = contextlib.nullcontext
    else:
        def autocast():
            return torch.autocast(device_type=device.type, dtype=amp_dtype)

    def shifted_copies(x: Tensor, g: torch.Generator) -> Tensor:
        """``(K * B, 3, H, W)`` shift-major, flipped as ``hflip`` says (step 1-2 above)."""
        if hflip == "per_shift":
            return torch.cat([rotate(random_hflip(x, generator=g), k) for k in range(num_shifts)])
        if hflip == "shared":
            x = random_hflip(x, generator=g)
        return torch.cat([rotate(x, k) for k in range(num_shifts)])

    simclr_out: Tensor | None = None
    shift_out: Tensor | None = None
    net = (prepare_inference(model, device, compile=compile, call_kwargs={"simclr": True, "shift": True})
           if fast else InferenceNet(model))
    was_training = model.training
    if not net.is_copy:
        model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                if views is None:
                    x = images[start : start + batch_size].to(device, non_blocking=True)
                    x = x.float().div_(255.0) if is_uint8 else x.float()
                    b = x.shape[0]
                else:
                    rows = torch.arange(start, min(start + batch_size, n))
                    b = rows.numel()
                sim_sum = shi_sum = None
                for g in generators:
                    if views is not None:
                        x = _chunk_view(views(rows, g), (b, *images.shape[1:]), device)
                    xr = augment(shifted_copies(x, g), generator=g)
                    with autocast():
                        out = net(xr, simclr=True, shift=True)
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
        if not net.is_copy:
            model.train(was_training)

    if simclr_out is None:
        raise ValueError("images is empty")
    return Features(simclr=simclr_out, shift=shift_out)


def _chunk_view(x: Tensor, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """A ``views`` callable's result for one chunk, checked, as float on ``device``."""
    if not isinstance(x, Tensor) or tuple(x.shape) != tuple(shape):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"views(indices, g) must return the chunk's images, shape {tuple(shape)}; got {got}")
    x = x.to(device, non_blocking=True)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


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
    sim = _per_shift_max(test.simclr, _unit(train.simclr), chunk_size)  # (N, K)
    return _csi_from_similarity(sim, test, train, weights)


def csi_score_terms(
    test: Features,
    train: Features,
    *,
    weights: tuple[Tensor, Tensor] | None = None,
    chunk_size: int = 1024,
) -> dict[str, Tensor]:
    """The two terms of :func:`csi_score`, whose sum it is: which one carries a run's score.

    ::

        similarity(x) = 1/K sum_k w_sim[k] * max_{x'} <z_k(x), z_k(x') / ||z_k(x')||>
        shift(x)      = 1/K sum_k w_shi[k] * shift_logit_k(x)[k]

    (``similarity`` is the contrastive features' part, ``shift`` the rotation
    head's; ``bench/score_terms.py`` reports the AUROC of each for finished runs).

    Returns:
        ``{"similarity": (N_test,), "shift": (N_test,)}`` float32, on the device of ``train``'s features.
    """
    _check_pair(test, train)
    sim = _per_shift_max(test.simclr, _unit(train.simclr), chunk_size)  # (N, K)
    sim_k, shi_k = _csi_terms(sim, test, train, weights)
    return {"similarity": sim_k.mean(dim=1), "shift": shi_k.mean(dim=1)}


def _csi_terms(sim: Tensor, test: Features, train: Features,
               weights: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """CSI's two weighted terms per shift, each ``(N_test, K)``, from ``sim`` ``(N_test, K)``, the per-shift
    max over training images of <z_k(x), u_k(x')>."""
    w_sim, w_shi = csi_weights(train) if weights is None else weights
    dev = sim.device
    w_sim = torch.as_tensor(w_sim, dtype=torch.float32, device=dev)
    w_shi = torch.as_tensor(w_shi, dtype=torch.float32, device=dev)
    idx = torch.arange(test.num_shifts, device=test.shift.device)
    shi = test.shift[:, idx, idx].to(dev, torch.float32)  # (N, K)
    return sim * w_sim, shi * w_shi


def _csi_from_similarity(sim: Tensor, test: Features, train: Features,
                         weights: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """CSI's score from ``sim`` ``(N_test, K)``, the per-shift max over training images of <z_k(x), u_k(x')>."""
    sim_k, shi_k = _csi_terms(sim, test, train, weights)
    return (sim_k + shi_k).mean(dim=1)


def compute_score(name: str, test: Features, train: Features, *, chunk_size: int = 1024) -> Tensor:
    """One score by name: ``"csi"`` is :func:`csi_score`, the others :func:`nearest_neighbour_score`.

    Returns ``(N_test,)`` float32 normality scores (higher = more inlier-like).
    """
    if name not in SCORE_NAMES:
        raise ValueError(f"score must be one of {SCORE_NAMES}, got {name!r}")
    if name == "csi":
        return csi_score(test, train, chunk_size=chunk_size)
    return nearest_neighbour_score(test, train, neighbour=name, chunk_size=chunk_size)


def all_scores(test: Features, train: Features, *, chunk_size: int = 1024) -> dict[str, Tensor]:
    """Every score of :data:`SCORE_NAMES` from the same features.

    Scoring is cheap next to feature extraction (one ``(N_test, N_train)``
    product per score), so one :func:`extract_features` pass serves the Eq. 11
    readings (``"shared"``, ``"literal"``, ``"per_shift"``) and CSI's score
    (``"csi"``) alike, and they differ only by the score, never by the draws.

    Returns:
        ``{name: (N_test,) float32 scores}`` in the order of :data:`SCORE_NAMES`.
    """
    _check_pair(test, train)
    # the per-shift nearest-neighbour search serves "per_shift" and "csi" alike: run it once
    sim = _per_shift_max(test.simclr, _unit(train.simclr), chunk_size)  # (N_test, K)
    scores = {name: nearest_neighbour_score(test, train, neighbour=name, chunk_size=chunk_size)
              for name in ("shared", "literal")}
    scores["per_shift"] = sim.sum(dim=1)
    scores["csi"] = _csi_from_similarity(sim, test, train)
    return {name: scores[name] for name in SCORE_NAMES}


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
