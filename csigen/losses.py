"""The paper's objectives, one function per equation (Eq. 1-10).

Shapes follow ``docs/design.md``: images are float in [0, 1] of shape
``(B, 3, H, W)``; a batch of B images under K shifts is laid out shift-major
(row ``k * B + i`` is shift k of image i); the two T-views are stacked
``[view1; view2]`` so rows i and i + M are a positive pair.

GAN loss form (Eq. 7 and Eq. 9). The paper writes the minimax log form
``log D(x) + log(1 - D(x~)) + ...``. We implement three forms, selected by
``form``:

* ``"log"`` (default): the discriminator minimises the binary cross-entropy
  of Eq. 7 (real -> 1, synthetic and reconstructed -> 0), which is exactly
  ``-L_D``; the generator/encoder side uses the *non-saturating* variant
  ``-log D(x~)`` (Goodfellow et al. 2014), the standard way to "maximise"
  Eq. 7 without vanishing gradients: G and E minimise that term.
* ``"minimax"``: the literal reading for the generator side,
  minimising ``log(1 - D(x~)) + log(1 - D(x^))``.
* ``"hinge"``: the SNGAN hinge loss (Miyato et al. 2018).

Directions. Algorithm 1 prints "argmin over D, max over G, E" of L_D (and
"argmin over D', max over E" of L_LD), which holds if D outputs P(fake).
Here D(x) = sigmoid(logit) is P(real), as in Eq. 7's log D(x) term for real
x: D (and D') maximise Eq. 7 (Eq. 9) by minimising -L_D, G and E play the
other side, the standard GAN game.

Discriminator outputs are *logits* of shape ``(B,)``; ``D(x) = sigmoid(logit)``.

Precision. The networks may run under ``torch.autocast`` (bf16 or fp16, see
:func:`csigen.train.resolve_precision`), but every loss here computes its
logits (Eq. 1's similarity matrix, the shift head's cross-entropy, the
discriminator terms) and every reduction in float32 with autocast switched
off (:func:`_float32`): under autocast ``z @ z.t()`` would be recast to 16 bits
even after ``.float()`` (each logit rounded to 8 significant bits; Eq. 1 then
moved by up to ~4e-3 in ``tests/test_precision.py``). The returned losses are
float32 on every path.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F_

GAN_FORMS = ("log", "minimax", "hinge")
REDUCTIONS = ("mean", "sum")

__all__ = [
    "GAN_FORMS",
    "nt_xent",
    "con_si",
    "cls_si",
    "csi_loss",
    "joint_loss",
    "csi_s_loss",
    "discriminator_loss",
    "generator_adversarial_loss",
    "reconstruction_loss",
    "latent_discriminator_loss",
    "encoder_latent_adversarial_loss",
    "latent_reconstruction_loss",
]


def _float32(x: torch.Tensor):
    """A context with autocast off on ``x``'s device: inside, float32 inputs give float32 results.

    Devices without autocast (e.g. ``"meta"``) get a no-op context.
    """
    if not torch.amp.is_autocast_available(x.device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, enabled=False)


def _check_form(form: str) -> None:
    if form not in GAN_FORMS:
        raise ValueError(f"unknown GAN loss form {form!r}; choose one of {GAN_FORMS}")


def nt_xent(features: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent (normalised temperature-scaled cross-entropy), Eq. 1.

    Args:
        features: ``(2N, D)``; rows ``i`` and ``i + N`` are a positive pair,
            every other row is a negative for both. Rows are L2-normalised here.
        temperature: tau in Eq. 1. CSI's code hard-codes 0.5.

    Returns:
        Scalar: the mean over the 2N anchors of
        ``-log exp(sim(a, a+)/tau) / sum_{b != a} exp(sim(a, b)/tau)``,
        i.e. Eq. 1's two sums divided by 2N (CSI's normalisation).
    """
    if features.dim() != 2:
        raise ValueError(f"features must have shape (2N, D), got {tuple(features.shape)}")
    n2 = features.shape[0]
    if n2 < 2 or n2 % 2:
        raise ValueError(f"features needs an even number >= 2 of rows (two views), got {n2}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with _float32(features):  # logits and the reduction in float32, also under autocast
        z = F_.normalize(features.float(), dim=1)
        logits = z @ z.t() / temperature
        logits = logits.masked_fill(torch.eye(n2, dtype=torch.bool, device=z.device), float("-inf"))
        n = n2 // 2
        positives = torch.arange(n2, device=z.device).roll(n)  # row i's positive: i + n (mod 2n), made on the device
        return F_.cross_entropy(logits, positives)


def con_si(features: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """L_con-SI, Eq. 2: SimCLR over the original and shifted instances.

    Every shifted copy ``S(x_i)`` is a separate instance, so it is a negative
    for every other row, including the other shifts of the same image.

    Args:
        features: ``(2M, D)`` simclr features with ``M = K * B``:
            ``[view1 of all shifts; view2 of all shifts]``, each half shift-major.
        temperature: tau.

    Returns:
        Scalar loss (Eq. 1 applied to {X, X^S}).

    One run on K processes (torchrun, :mod:`csigen.distributed`): the
    instances are those of the global batch, as in CSI's multi-GPU training
    (diffdist): the features of every process are all-gathered with gradients
    before the similarity matrix (:func:`csigen.distributed.gather_views`),
    so every process computes Eq. 1 over the ``2 * K * M`` rows. One process:
    ``features`` go to :func:`nt_xent` untouched.
    """
    from csigen.distributed import gather_views

    return nt_xent(gather_views(features), temperature)


def cls_si(shift_logits: torch.Tensor, shift_labels: torch.Tensor) -> torch.Tensor:
    """L_cls-SI, Eq. 3: cross-entropy of predicting which shift was applied.

    Args:
        shift_logits: ``(M, K)`` logits of the shift head.
        shift_labels: ``(M,)`` int64 in ``[0, K)``.

    Returns:
        Scalar: mean over the M shifted instances (CSI's normalisation).
    """
    if shift_logits.dim() != 2 or shift_labels.shape != shift_logits.shape[:1]:
        raise ValueError(
            f"shift_logits (M, K) and shift_labels (M,) disagree: "
            f"{tuple(shift_logits.shape)} vs {tuple(shift_labels.shape)}"
        )
    with _float32(shift_logits):
        return F_.cross_entropy(shift_logits.float(), shift_labels)


def _two_shifted_views(
    images: torch.Tensor,
    augment: Callable,
    num_shifts: int,
    generator: torch.Generator | None,
    second_view: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CSI's input pipeline: flip, K rotations, two T-views.

    With ``second_view``, ``images`` and ``second_view`` are the two views
    already (ImageNet-30: each its own data-side crop and flip), and nothing is
    flipped here, as in CSI's ImageNet step (``images[0], images[1]``, no ``hflip``).

    Returns ``(views (2 * K * B, 3, H, W), shift_labels (2 * K * B,))``.
    """
    from csigen.augment import random_hflip, shift_batch

    if second_view is None:
        both = random_hflip(images.repeat(2, 1, 1, 1), generator=generator)
        view1, view2 = both.chunk(2)
    elif second_view.shape != images.shape:
        raise ValueError(f"second_view {tuple(second_view.shape)} must have the shape of images "
                         f"{tuple(images.shape)}: one second view per image")
    else:
        view1, view2 = images, second_view
    shifted1, labels = shift_batch(view1, num_shifts)
    shifted2, _ = shift_batch(view2, num_shifts)
    views = augment(torch.cat([shifted1, shifted2]), generator=generator)
    return views, labels.repeat(2)


def csi_loss(
    model: torch.nn.Module,
    images: torch.Tensor,
    augment: Callable,
    *,
    num_shifts: int = 4,
    temperature: float = 0.5,
    cls_weight: float = 1.0,
    generator: torch.Generator | None = None,
    second_view: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """L_CSI = L_con-SI + L_cls-SI, Eq. 4, computed as CSI's training step does.

    Each image is flipped at random, rotated by the K shifts and augmented
    twice by T; F sees all ``2 * K * B`` views in one forward pass.
    With ``second_view`` (CSI's ImageNet-30 step) ``images`` is the first
    view and ``second_view`` the second, each with its own data-side crop and
    flip (:meth:`csigen.data.OneClassTask.train_view` with ``views=2``): they
    are not flipped again, only rotated and augmented by T (then the crop-free
    :func:`csigen.augment.no_crop_augment`).

    Args:
        model: F, called as ``model(x, simclr=True, shift=True)``.
        images: ``(B, 3, H, W)`` in [0, 1].
        augment: T, called as ``augment(x, generator=...)``.
        num_shifts: K.
        temperature: tau of Eq. 1.
        cls_weight: weight of L_cls-SI (1 in CSI and the paper).
        generator: seeds flips and T.
        second_view: ``(B, 3, H, W)`` or ``None`` (default: both views are
            ``images``, flipped here).

    Returns:
        ``{"loss": scalar, "con_si": scalar, "cls_si": scalar}``.
    """
    views, labels = _two_shifted_views(images, augment, num_shifts, generator, second_view)
    out = model(views, simclr=True, shift=True)
    l_con = con_si(out["simclr"], temperature)
    l_cls = cls_si(out["shift"], labels.to(out["shift"].device))
    return {"loss": l_con + cls_weight * l_cls, "con_si": l_con, "cls_si": l_cls}


def joint_loss(
    model: torch.nn.Module,
    real: torch.Tensor,
    synthetic: torch.Tensor,
    augment: Callable,
    *,
    second_view: torch.Tensor | None = None,
    synthetic_views: Callable | None = None,
    **kwargs,
) -> dict[str, torch.Tensor]:
    """L_JOINT = L_CSI(X union X~), Eq. 5.

    Real ``(B, 3, H, W)`` and synthetic ``(B', 3, H, W)`` images form one batch
    of ``B + B'`` instances: each synthetic image is a negative for every real
    one and vice versa. Keyword arguments go to :func:`csi_loss`.

    Full-image tasks (ImageNet-30, CSI's step): ``real`` and ``second_view``
    are two data-side views of the real images, and ``synthetic_views(x~,
    generator=g)`` gives the two views ``(2 B', 3, H, W)`` of the synthetic
    ones (:func:`csigen.augment.crop_flip_views`; G(h) has no data side); the
    batch is ``[real; view 1 of x~]`` with second view ``[second_view; view 2
    of x~]``. Both or neither must be given.
    """
    if second_view is None and synthetic_views is None:
        return csi_loss(model, torch.cat([real, synthetic]), augment, **kwargs)
    if second_view is None or synthetic_views is None:
        raise ValueError("joint_loss: second_view (the real images' second data-side view) and "
                         "synthetic_views (the views of the synthetic images, e.g. "
                         "csigen.augment.crop_flip_views) go together; pass both (full-image tasks) or neither")
    s1, s2 = synthetic_views(synthetic, generator=kwargs.get("generator")).chunk(2)
    return csi_loss(model, torch.cat([real, s1]), augment, second_view=torch.cat([second_view, s2]), **kwargs)


def csi_s_loss(
    model: torch.nn.Module,
    synthetic: torch.Tensor,
    augment: Callable,
    *,
    synthetic_views: Callable | None = None,
    **kwargs,
) -> dict[str, torch.Tensor]:
    """L_CSI-S = L_CSI(X~), Eq. 6: CSI on synthetic images only (trains G).

    ``synthetic``: ``(B', 3, H, W)`` = G(h). Gradients reach G through F and T;
    the caller keeps F's parameters out of the optimiser step.
    ``synthetic_views`` (full-image tasks, whose T has no crop): a callable
    ``synthetic_views(x~, generator=g) -> (2 B', 3, H, W)`` giving the two
    views (:func:`csigen.augment.crop_flip_views`, CSI's data-side crop and
    flip made on the device), used as :func:`csi_loss`'s two views; ``None``:
    both views are ``synthetic`` (flipped in :func:`csi_loss`, T crops).
    """
    if synthetic_views is None:
        return csi_loss(model, synthetic, augment, **kwargs)
    s1, s2 = synthetic_views(synthetic, generator=kwargs.get("generator")).chunk(2)
    return csi_loss(model, s1, augment, second_view=s2, **kwargs)


def discriminator_loss(
    d_real: torch.Tensor,
    d_fake: torch.Tensor,
    d_recon: torch.Tensor | None = None,
    form: str = "log",
) -> torch.Tensor:
    """D's side of Eq. 7: minimise ``-L_D`` (real vs synthetic and reconstructed).

    Args:
        d_real: ``(B,)`` logits D(x).
        d_fake: ``(B',)`` logits D(x~), x~ = G(h).
        d_recon: ``(B,)`` logits D(x^), x^ = G(E(x)); ``None`` for the CSI+G
            variant, which has no encoder.
        form: ``"log"``/``"minimax"`` (same for D: binary cross-entropy) or ``"hinge"``.

    Returns:
        Scalar, the sum of one mean term per input, as Eq. 7 sums its terms.
    """
    _check_form(form)
    with _float32(d_real):
        d_real = d_real.float()
        fakes = [d.float() for d in [d_fake] + ([d_recon] if d_recon is not None else [])]
        if form == "hinge":
            loss = F_.relu(1 - d_real).mean()
            for d in fakes:
                loss = loss + F_.relu(1 + d).mean()
            return loss
        loss = F_.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
        for d in fakes:
            loss = loss + F_.binary_cross_entropy_with_logits(d, torch.zeros_like(d))
        return loss


def generator_adversarial_loss(
    d_fake: torch.Tensor,
    d_recon: torch.Tensor | None = None,
    form: str = "log",
) -> torch.Tensor:
    """G's and E's side of Eq. 7: the term they minimise to play against D (non-saturating ``-log D``).

    Args:
        d_fake: ``(B',)`` logits D(G(h)).
        d_recon: ``(B,)`` logits D(G(E(x))), or ``None`` without an encoder.
        form: ``"log"`` (non-saturating ``-log D``), ``"minimax"``
            (literal ``log(1 - D)``) or ``"hinge"`` (``-D``).

    Returns:
        Scalar to minimise.
    """
    _check_form(form)
    with _float32(d_fake):
        loss = d_fake.new_zeros((), dtype=torch.float32)
        for d in [d_fake] + ([d_recon] if d_recon is not None else []):
            d = d.float()
            if form == "log":
                loss = loss + F_.binary_cross_entropy_with_logits(d, torch.ones_like(d))
            elif form == "minimax":
                loss = loss - F_.binary_cross_entropy_with_logits(d, torch.zeros_like(d))
            else:
                loss = loss - d.mean()
        return loss


def _squared_error(a: torch.Tensor, b: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")
    with _float32(a):
        diff = (a.float() - b.float()) ** 2
        if reduction == "mean":
            return diff.mean()
        return diff.flatten(1).sum(1).mean()


def reconstruction_loss(
    model: torch.nn.Module,
    x: torch.Tensor,
    x_hat: torch.Tensor,
    augment: Callable,
    *,
    lam: float = 100.0,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """L_REC = lambda * ||x - x^||^2 - sim(F(T1(x)), F(T2(x^))), Eq. 8.

    Readings of the paper:

    * ``||x - x^||^2``: the paper prints the squared L2 norm (a sum over the
      image's pixels) with lambda = 100. csigen takes the mean over pixels
      by default (``reduction="mean"``), which keeps lambda = 100 a sensible
      weight against a cosine in [-1, 1] (the printed sum is 3,072x the mean
      on 32x32 images); ``reduction="sum"`` is the literal squared norm per
      image (averaged over the batch).
    * ``F`` is the simclr projection (the space where Eq. 1 measures ``sim``),
      and the term is averaged over the batch.
    * T1 and T2 are drawn independently per image; ``x`` is detached (it is
      data), gradients reach G and E through ``x^`` and through F, whose own
      parameters the caller leaves out of the step.

    Args:
        model: F.
        x: ``(B, 3, H, W)`` real images in [0, 1].
        x_hat: ``(B, 3, H, W)`` = G(E(x)) in [0, 1].
        augment: T.
        lam: lambda (100 in the paper).

    Returns:
        ``{"loss": scalar, "pixel": scalar, "feature_sim": scalar}`` where
        ``loss = lam * pixel - feature_sim``.
    """
    if x.shape != x_hat.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must have the same shape")
    pixel = _squared_error(x.detach(), x_hat, reduction)
    both = augment(torch.cat([x.detach(), x_hat]), generator=generator)
    z = model(both, simclr=True)["simclr"]
    with _float32(z):
        z_x, z_hat = z.float().chunk(2)
        sim = F_.cosine_similarity(z_x, z_hat, dim=1).mean()
        return {"loss": lam * pixel - sim, "pixel": pixel, "feature_sim": sim}


def latent_discriminator_loss(
    dp_prior: torch.Tensor,
    dp_encoded: torch.Tensor,
    form: str = "log",
) -> torch.Tensor:
    """D''s side of Eq. 9: prior samples h ~ N(0, I) are real, E(x) is fake.

    Args:
        dp_prior: ``(B',)`` logits D'(h).
        dp_encoded: ``(B,)`` logits D'(E(x)).
    """
    return discriminator_loss(dp_prior, dp_encoded, None, form)


def encoder_latent_adversarial_loss(dp_encoded: torch.Tensor, form: str = "log") -> torch.Tensor:
    """E's side of Eq. 9: the term E minimises against D' (as G's), pushing E(x) towards N(0, I).

    Args:
        dp_encoded: ``(B,)`` logits D'(E(x)).
    """
    return generator_adversarial_loss(dp_encoded, None, form)


def latent_reconstruction_loss(
    h_rec: torch.Tensor, h: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """L_LREC = ||E(G(h)) - h||^2, Eq. 10.

    Args:
        h_rec: ``(B', Z)`` = E(G(h)).
        h: ``(B', Z)`` prior samples.
        reduction: ``"mean"`` over elements (default, csigen's reading, same
            scale as Eq. 8's pixel term) or ``"sum"`` (the printed squared
            norm, averaged over B').
    """
    if h_rec.shape != h.shape:
        raise ValueError(f"h_rec {tuple(h_rec.shape)} and h {tuple(h.shape)} must have the same shape")
    return _squared_error(h_rec, h, reduction)
