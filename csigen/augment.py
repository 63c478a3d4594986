"""CSI's data augmentation on image batches: the SimCLR transform T and the shifts S.

Everything here works on float images in **[0, 1]** of shape ``(B, 3, H, W)``
on the images' own device, is differentiable with respect to the images, and
takes an optional ``torch.Generator`` so that a seed reproduces a batch
exactly (see ``docs/design.md``).

What CSI does (alinlab/CSI, ``models/classifier.py: get_simclr_augmentation``
and ``models/transform_layers.py``), and what this module reproduces:

1. **Colour jitter**, applied to a sample with probability ``p_jitter = 0.8``:
   two steps in random order,

   * *contrast*: ``clamp((x - m) * c + m, 0, 1)`` with ``m`` the mean of each
     colour channel over the image (per channel, not the grey-level mean
     torchvision uses) and ``c ~ U(0.6, 1.4)``;
   * *HSV*: RGB -> HSV (hue from ``atan2``, CSI's formula, which differs from
     the usual hexagonal hue by up to about 1.2 degrees, so even a neutral
     HSV step moves colours slightly), hue shifted by ``f_h * 255 / 360`` with
     ``f_h ~ U(-0.1, 0.1)`` (a CSI quirk: the effective hue range is
     +-0.0708 turns, not +-0.1), saturation and value multiplied by
     ``f_s, f_v ~ U(0.6, 1.4)`` (value = brightness), HSV clamped to [0, 1],
     back to RGB.

2. **Grayscale** with probability ``p_gray = 0.2``: ``0.299 R + 0.587 G + 0.114 B``
   copied to the three channels.

3. **Random resized crop** back to the input size: a window of area fraction
   ``s ~ U(crop_scale)`` and aspect ratio ``r`` (log-uniform in ``ratio``),
   rounded to whole pixels (first of 10 trials that fits, else the full image),
   at a random offset on a half-pixel lattice, resampled with
   ``grid_sample`` (bilinear, ``align_corners=False``, reflection padding).
   The evaluation variant (:func:`eval_augment`, CSI's ``--resize_fix
   --resize_factor 0.54``) fixes ``s = 0.54``; the aspect ratio stays random.

4. **Gaussian blur**, off by default (``p_blur = 0``): CSI's code has none, for
   CIFAR and ImageNet-30 alike. The paper's text lists it in T ("random
   Gaussian blur, as following the setting in SimCLR"), so ``p_blur = 0.5``
   gives SimCLR's ImageNet blur as its paper describes it, last in the
   pipeline: ``sigma ~ U(0.1, 2.0)`` per sample, a kernel of 10% of the image
   side (made odd: 3 px at 32, 23 px at 224; none below 20 px), reflect
   padding, as ``torchvision.transforms.v2.functional.gaussian_blur`` per image
   (:func:`gaussian_blur`). SimCLR's TensorFlow code differs in two ways, not
   followed here: one sigma per batch (the on/off gate is per image) and zero
   padding (``'SAME'``), which would darken a 32x32 image's border pixels by up
   to a third. Its draws come after the crop's and only when ``p_blur > 0``,
   so the default keeps CSI's stream.

Shifts: :func:`rotate` (``torch.rot90``), :func:`shift_batch` (shift-major
layout with labels) and :func:`random_hflip` (CSI flips every image at random
*before* rotating it, in training and in evaluation).

Own implementation, not kornia or torchvision.transforms.v2
------------------------------------------------------------
The issue asked for a library if one meets the requirements (per-sample
parameters from a ``torch.Generator``, on device, differentiable, batched)
and is not slower.  Neither does:

* ``torchvision.transforms.v2`` (0.29) draws **one** parameter set per call
  and applies it to the whole batch (checked in ``bench/augment.py``: a batch
  of identical images comes out identical); per-sample parameters need a
  Python loop over samples.  It takes no ``generator`` (global RNG only), and
  its hue kernel fails under autograd (in-place writes to ``unbind`` views),
  so it is not differentiable with the hue jitter on.
* ``kornia.augmentation`` (0.9) draws per-sample parameters, but from the
  global RNG only (no ``generator`` argument), and its operations are not
  CSI's: hexagonal hue, ``ColorJiggle`` scales contrast without subtracting
  the mean, a different crop resampling; parity with CSI is impossible
  without re-implementing the operations.
* Speed, ``bench/augment.py`` (batch 256 x 3 x 32 x 32, CPU, 1 thread, median
  of 15, round-robin; one run on a loaded shared machine, so the ratios
  matter, not the absolute numbers), images/s forward / forward+backward:
  this module 3984 / 1756; kornia 1817 / 534 (this module 2.2x / 3.3x
  faster); torchvision v2 batch call (shared parameters) 2791 / not
  differentiable (1.4x); torchvision v2 looped per sample 279 (14x);
  CSI's own layers 2263 / 1379 (1.8x / 1.3x).

So T is a vectorised implementation written for this kit, following CSI's
semantics; ``tests/test_augment.py`` checks it against outputs of CSI's own
layers (``tests/fixtures/csi_augment.npz``) to 1e-5.

Deviations from CSI (all deliberate; the law of each single sample's
parameters is CSI's up to the negligible crop fallback noted below):

* Random numbers come from ``torch`` (an optional generator) instead of a mix
  of numpy and torch's global RNG, so the streams differ from CSI's.
* CSI picks the order of the two jitter steps once per *call* (one order for
  the whole batch); here each sample gets its own order.  The marginal law of
  every sample is the same (each order with probability 1/2); the parameters
  allow any choice, including CSI's per-batch one.
* CSI's crop draws 10 * B trials for the batch and uses the first B that fit;
  here each sample takes the first of its own 10 trials that fits.  The law of
  a sample differs only in the fallback case (no trial fits), whose
  probability is below 1e-8 with the default ranges.
* CSI mixes up height and width in its crop sampling (harmless for its square
  images); here the crop width is measured against W and the height against H.
* Gradient of the HSV step: CSI back-propagates it as the identity (a
  straight-through estimator in ``RandomHSVFunction``); this is the default
  here too (``hsv_grad="straight_through"``).  ``hsv_grad="autograd"`` gives
  the true derivative instead (NaN-free at grey and black pixels).  The
  contrast, grayscale and crop steps always use their true derivative, as in
  CSI.

Randomness and devices: parameters are drawn on the generator's device
(``generator.device``), or with torch's global CPU RNG when ``generator`` is
``None``, and then moved to the images' device.  A seeded CPU generator thus
gives the same parameters whatever device the images are on; a CUDA
generator gives a different (but equally reproducible) stream.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from csigen import draws

__all__ = [
    "CROP_RATIO",
    "CSI_HUE_SCALE",
    "EVAL_CROP_SCALE",
    "GRAY_WEIGHTS",
    "TRAIN_CROP_SCALE",
    "AugmentParams",
    "SimCLRAugment",
    "adjust_contrast",
    "adjust_hsv",
    "blur_kernel_size",
    "color_jitter",
    "crop_flip_views",
    "eval_augment",
    "gaussian_blur",
    "grayscale",
    "hflip",
    "hsv_to_rgb",
    "no_crop_augment",
    "random_flips",
    "random_hflip",
    "random_resized_crop_boxes",
    "resized_crop",
    "rgb_to_hsv",
    "rotate",
    "shift_batch",
]

#: Crop area fraction of CSI's evaluation transform (``--resize_fix --resize_factor 0.54``).
EVAL_CROP_SCALE = 0.54
#: CSI adds ``f_h * 255 / 360`` to the hue (in turns); kept for fidelity.
CSI_HUE_SCALE = 255.0 / 360.0
#: Luma weights of CSI's ``RandomColorGrayLayer`` (ITU-R BT.601).
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
#: SimCLR's Gaussian blur: sigma's range, and the kernel's size as a fraction of the image side.
BLUR_SIGMA = (0.1, 2.0)
BLUR_KERNEL_FRACTION = 0.1
#: Trials per sample when drawing a crop that fits (as torchvision and CSI).
_CROP_TRIALS = 10
_SQRT3 = math.sqrt(3.0)
_TWO_PI = 2.0 * math.pi


# --------------------------------------------------------------------------- #
# Parameters
# --------------------------------------------------------------------------- #
@dataclass
class AugmentParams:
    """Per-sample parameters of one draw of T for a batch of B images.

    All fields are tensors with first dimension B, on one device.

    Attributes:
        jitter: ``(B,)`` bool, colour jitter applied to the sample.
        contrast_first: ``(B,)`` bool, contrast step before the HSV step
            (else after it).
        contrast: ``(B,)`` contrast factor ``c``.
        hue: ``(B,)`` hue factor ``f_h`` as drawn (in [-0.1, 0.1] by default);
            the shift applied is ``f_h * CSI_HUE_SCALE`` turns.
        saturation: ``(B,)`` saturation factor ``f_s``.
        brightness: ``(B,)`` value factor ``f_v``.
        gray: ``(B,)`` bool, converted to grayscale.
        whbias: ``(B, 4)`` crop ``(w, h, x_bias, y_bias)`` in
            ``affine_grid``'s normalised coordinates: the output's x in
            [-1, 1] samples the input at ``w * x + x_bias`` (CSI's ``whbias``).
        blur_sigma: ``(B,)`` the Gaussian blur's sigma, 0 for no blur (the
            default when not given: CSI's T has no blur).
    """

    jitter: Tensor
    contrast_first: Tensor
    contrast: Tensor
    hue: Tensor
    saturation: Tensor
    brightness: Tensor
    gray: Tensor
    whbias: Tensor
    blur_sigma: Tensor | None = None

    def __post_init__(self) -> None:
        if self.blur_sigma is None:
            self.blur_sigma = torch.zeros(self.jitter.shape[0], device=self.jitter.device)

    @property
    def batch_size(self) -> int:
        return int(self.jitter.shape[0])

    def __len__(self) -> int:
        return self.batch_size

    def to(self, device) -> AugmentParams:
        """The same parameters on ``device`` (self if already there), moved in one transfer.

        The fields travel in one packed buffer (:func:`csigen.draws.move_together`, exact
        for every dtype): one host-to-GPU copy per draw instead of one per field, each of which would
        wait for the GPU's queued work.
        """
        from csigen.draws import move_together

        values = [getattr(self, f.name) for f in fields(self)]
        moved = move_together(values, device)
        if all(m is v for m, v in zip(moved, values)):
            return self
        return AugmentParams(**{f.name: m for f, m in zip(fields(self), moved)})

    def __getitem__(self, index) -> AugmentParams:
        """Parameters of a subset of the samples (any index valid on dim 0)."""
        if isinstance(index, int):
            index = [index]
        return AugmentParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def cat(params: Sequence[AugmentParams]) -> AugmentParams:
        """Concatenate parameter sets along the batch dimension."""
        return AugmentParams(
            **{f.name: torch.cat([getattr(p, f.name) for p in params]) for f in fields(AugmentParams)}
        )


# --------------------------------------------------------------------------- #
# Colour operations (vectorised, per-sample factors)
# --------------------------------------------------------------------------- #
def _per_sample(v: Tensor | float, x: Tensor) -> Tensor:
    """A factor as a tensor broadcastable against ``x`` (B, C, H, W)."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v.reshape(-1, *([1] * (x.dim() - 1))) if v.dim() > 0 else v


def _rgb_to_hsv_planes(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """H, S, V planes ``(B, 1, H, W)`` of ``x`` (CSI's definition, NaN-free gradients)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    v = torch.maximum(torch.maximum(r, g), b)
    delta = v - torch.minimum(torch.minimum(r, g), b)
    yy = _SQRT3 * (g - b)
    xx = 2.0 * r - g - b
    # atan2(0, 0) is 0 but its gradient is NaN: feed (0, 1) at achromatic pixels instead
    hue = torch.atan2(yy, torch.where(delta > 0, xx, torch.ones_like(xx)))
    hue = hue.remainder(_TWO_PI) / _TWO_PI
    positive = v > 0
    s = torch.where(positive, delta / torch.where(positive, v, torch.ones_like(v)), torch.zeros_like(v))
    return hue, s, v


def _hsv_planes_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    offsets = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device).view(1, 3, 1, 1)
    k = (offsets + 6.0 * h).remainder(6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return v - (v * s) * ramp


def rgb_to_hsv(x: Tensor) -> Tensor:
    """RGB -> HSV as CSI defines it, ``(B, 3, H, W)`` in [0, 1] -> H, S, V in [0, 1].

    Hue is ``atan2(sqrt(3) (G - B), 2R - G - B)`` in turns (CSI's formula, which
    equals the hexagonal hue at multiples of 30 degrees and differs by at most
    about 1.2 degrees elsewhere).  Grey pixels get hue 0 and black pixels
    saturation 0.  Written so that autograd never produces NaN or inf.
    """
    return torch.cat(_rgb_to_hsv_planes(x), dim=1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV -> RGB (the hexagonal model), ``(B, 3, H, W)`` -> ``(B, 3, H, W)``.

    Channel ``n`` in (R, G, B) is ``v - v s clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n' + 6 h) mod 6`` and ``n' = 5, 3, 1``.
    """
    return _hsv_planes_to_rgb(hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3])


def adjust_contrast(x: Tensor, factor: Tensor | float) -> Tensor:
    """CSI's contrast step: ``clamp((x - m) * factor + m, 0, 1)``, ``m`` the per-channel mean."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * _per_sample(factor, x) + mean).clamp(0.0, 1.0)


def _hsv_step(x: Tensor, hue: Tensor, saturation: Tensor, brightness: Tensor) -> Tensor:
    h, s, v = _rgb_to_hsv_planes(x)
    h = (h + _per_sample(hue, x) * CSI_HUE_SCALE).remainder(1.0)  # in [0, 1]: CSI's clamp is a no-op
    s = (s * _per_sample(saturation, x)).clamp(0.0, 1.0)
    v = (v * _per_sample(brightness, x)).clamp(0.0, 1.0)
    return _hsv_planes_to_rgb(h, s, v)


class _StraightThroughHSV(torch.autograd.Function):
    """Forward: the HSV step; backward: identity (CSI's gradient for this step)."""

    @staticmethod
    def forward(ctx, x, hue, saturation, brightness):
        return _hsv_step(x, hue, saturation, brightness)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, None, None, None


def adjust_hsv(
    x: Tensor,
    hue: Tensor | float,
    saturation: Tensor | float,
    brightness: Tensor | float,
    *,
    grad: str = "straight_through",
) -> Tensor:
    """CSI's HSV step: hue shift ``hue * CSI_HUE_SCALE`` turns, S and V scaled, clamped.

    Args:
        x: ``(B, 3, H, W)`` in [0, 1].
        hue, saturation, brightness: scalars or ``(B,)`` per-sample factors.
        grad: ``"straight_through"`` (CSI: the backward pass is the identity)
            or ``"autograd"`` (the true derivative).
    """
    hue, saturation, brightness = (torch.as_tensor(t, dtype=x.dtype, device=x.device)
                                   for t in (hue, saturation, brightness))
    if grad == "straight_through":
        return _StraightThroughHSV.apply(x, hue, saturation, brightness)
    if grad == "autograd":
        return _hsv_step(x, hue, saturation, brightness)
    raise ValueError(f"grad must be 'straight_through' or 'autograd', got {grad!r}")


def color_jitter(
    x: Tensor,
    contrast: Tensor,
    hue: Tensor,
    saturation: Tensor,
    brightness: Tensor,
    contrast_first: Tensor | bool,
    *,
    hsv_grad: str = "straight_through",
) -> Tensor:
    """Both jitter steps on every sample, in a per-sample order (no probability gate)."""
    first = torch.as_tensor(contrast_first, dtype=torch.bool, device=x.device)
    first = first.reshape(-1, 1, 1, 1) if first.dim() > 0 else first
    y = torch.where(first, adjust_contrast(x, contrast), x)
    y = adjust_hsv(y, hue, saturation, brightness, grad=hsv_grad)
    return torch.where(first, y, adjust_contrast(y, contrast))


def grayscale(x: Tensor) -> Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B`` repeated on 3 channels."""
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True).expand_as(x)


def blur_kernel_size(size: int) -> int:
    """SimCLR's Gaussian kernel for images of side ``size``: 10% of it, made odd (3 at 32, 23 at 224)."""
    return 2 * (int(BLUR_KERNEL_FRACTION * size) // 2) + 1


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int | None = None) -> Tensor:
    """Per-sample Gaussian blur: ``(B, 3, H, W)`` with ``sigma`` ``(B,)`` (> 0) -> same shape.

    Image i equals ``torchvision.transforms.v2.functional.gaussian_blur(x[i], [k, k], [sigma[i]] * 2)``
    (a separable kernel ``exp(-t^2 / (2 sigma^2))`` normalised to sum 1, reflect padding), computed for
    the whole batch in two grouped convolutions. ``kernel_size`` (odd) defaults to
    :func:`blur_kernel_size` of the smaller side (1, no blur, below 20 pixels). Differentiable in ``x``.
    Half-precision input is blurred in float32 (autocast off) and returned in its dtype, as
    :func:`resized_crop`: 16-bit weights would not sum to 1.
    """
    b, c, height, width = x.shape
    k = blur_kernel_size(min(height, width)) if kernel_size is None else int(kernel_size)
    if k % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {k}")
    r = k // 2
    if r == 0:
        return x
    if r >= min(height, width):
        raise ValueError(f"kernel_size {k} is too large for {height}x{width} images (reflect padding needs a "
                         f"radius below the image side); use at most {2 * min(height, width) - 1}")
    if x.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return gaussian_blur(x.float(), sigma, k).to(x.dtype)
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)  # float32 (or float64, e.g. gradcheck)
    weights = torch.exp(-0.5 * (t / sigma.to(device=x.device, dtype=x.dtype)[:, None]) ** 2)
    weights = (weights / weights.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B C, k)
    y = x.reshape(1, b * c, height, width)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), weights.view(b * c, 1, 1, k), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), weights.view(b * c, 1, k, 1), groups=b * c)
    return y.view(b, c, height, width)


def resized_crop(x: Tensor, whbias: Tensor) -> Tensor:
    """Crop windows given by ``whbias`` (B, 4) resampled to the input size.

    The output pixel at normalised position ``(u, v)`` (pixel centres,
    ``align_corners=False``) samples the input at ``(w u + x_bias, h v + y_bias)``
    bilinearly, with reflection padding, like ``affine_grid`` +
    ``grid_sample`` with a diagonal affine matrix. Half-precision input is
    resampled in float32 and returned in its dtype: a bf16 grid is off by up
    to almost a pixel at 224x224 (8 bits of mantissa for coordinates in [-1, 1]).
    """
    b, _, height, width = x.shape
    if x.dtype in (torch.float16, torch.bfloat16):
        return resized_crop(x.float(), whbias).to(x.dtype)
    whbias = whbias.to(device=x.device, dtype=x.dtype)
    if whbias.shape != (b, 4):
        raise ValueError(f"whbias must have shape ({b}, 4), got {tuple(whbias.shape)}")
    u = (torch.arange(width, device=x.device, dtype=x.dtype) * 2 + 1) / width - 1
    v = (torch.arange(height, device=x.device, dtype=x.dtype) * 2 + 1) / height - 1
    gx = whbias[:, 0:1] * u + whbias[:, 2:3]  # (B, W)
    gy = whbias[:, 1:2] * v + whbias[:, 3:4]  # (B, H)
    grid = torch.stack(
        [gx[:, None, :].expand(b, height, width), gy[:, :, None].expand(b, height, width)], dim=-1
    )
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# --------------------------------------------------------------------------- #
# Random draws
# --------------------------------------------------------------------------- #
def _rand(shape, generator: torch.Generator | None, dtype=torch.float32) -> Tensor:
    """U[0, 1) on the generator's device (global CPU RNG when ``generator`` is None)."""
    if generator is None:
        return torch.rand(shape, dtype=dtype)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)


def _uniform(n: int, bounds: tuple[float, float], generator) -> Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * _rand(n, generator)


def _jitter_range(value, name: str, center: float, bound: tuple[float, float], clip_zero: bool):
    """A jitter strength (number s -> [center - s, center + s]) or an explicit (lo, hi)."""
    if isinstance(value, numbers.Number):
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
        lo, hi = center - float(value), center + float(value)
        if clip_zero:
            lo = max(lo, 0.0)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = float(value[0]), float(value[1])
    else:
        raise TypeError(f"{name} must be a number or a (min, max) pair, got {value!r}")
    if not bound[0] <= lo <= hi <= bound[1]:
        raise ValueError(f"{name} range ({lo}, {hi}) must lie within {bound}")
    return lo, hi


def _sample_crop(
    batch_size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    size: tuple[int, int] | None,
    generator,
) -> Tensor:
    """Crop ``whbias`` (B, 4) as CSI's ``RandomResizedCropLayer._sample_latent`` draws it.

    With ``size = (H, W)`` the window is rounded to whole pixels and its offset
    lies on CSI's lattice (steps of 1/W in normalised units, i.e. half pixels);
    with ``size=None`` both are continuous.
    """
    trials = (batch_size, _CROP_TRIALS)
    area = scale[0] + (scale[1] - scale[0]) * _rand(trials, generator, torch.float64)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * _rand(trials, generator, torch.float64))
    u_x = _rand(batch_size, generator, torch.float64)
    u_y = _rand(batch_size, generator, torch.float64)
    if size is not None:
        height, width = int(size[0]), int(size[1])
        w = torch.round(torch.sqrt(area * (height * width) * aspect))
        h = torch.round(torch.sqrt(area * (height * width) / aspect))
        full_w, full_h = float(width), float(height)
    else:
        w, h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
        full_w = full_h = 1.0
    fits = (w > 0) & (w <= full_w) & (h > 0) & (h <= full_h)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # first trial that fits
    any_fit = fits.any(dim=1)
    w = torch.where(any_fit, w.gather(1, first)[:, 0], torch.full_like(w[:, 0], full_w))
    h = torch.where(any_fit, h.gather(1, first)[:, 0], torch.full_like(h[:, 0], full_h))
    if size is not None:
        # integer offset in [w - W, W - w] (CSI: np.random.randint(w - W, W - w + 1)), then / W
        n_x, n_y = 2 * (full_w - w) + 1, 2 * (full_h - h) + 1
        ix = torch.minimum(torch.floor(u_x * n_x), n_x - 1)
        iy = torch.minimum(torch.floor(u_y * n_y), n_y - 1)
        x_bias, y_bias = (ix + w - full_w) / full_w, (iy + h - full_h) / full_h
        w, h = w / full_w, h / full_h
    else:
        x_bias, y_bias = (2 * u_x - 1) * (1 - w), (2 * u_y - 1) * (1 - h)
    return torch.stack([w, h, x_bias, y_bias], dim=1).to(torch.float32)


# --------------------------------------------------------------------------- #
# The transform T
# --------------------------------------------------------------------------- #
class SimCLRAugment(nn.Module):
    """CSI's SimCLR augmentation T on a batch: jitter (p=0.8) -> gray (p=0.2) -> resized crop [-> blur].

    Args:
        crop_scale: range of the crop's area fraction; ``(0.54, 0.54)`` for
            CSI's evaluation transform (see :func:`eval_augment`).
        ratio: range of the crop's aspect ratio (width / height), log-uniform.
        jitter: ``(brightness, contrast, saturation, hue)`` strengths; a number
            ``s`` means ``U(max(0, 1 - s), 1 + s)`` (hue: ``U(-s, s)``, s <= 0.5),
            a pair is an explicit range.
        p_jitter: probability of the colour jitter per sample.
        p_gray: probability of the grayscale conversion per sample.
        p_blur: probability of SimCLR's Gaussian blur per sample, after the
            crop (0: CSI's T, the default; 0.5: SimCLR's, the paper's text).
        blur_sigma: range of the blur's sigma (SimCLR's ``(0.1, 2.0)``).
        hsv_grad: ``"straight_through"`` (CSI, default) or ``"autograd"``;
            see the module docstring.

    ``forward(x, generator=None)`` draws per-sample parameters
    (:meth:`sample_params`) and applies them (:meth:`apply`); call those two
    directly to apply the same draw more than once.
    """

    def __init__(
        self,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        jitter: tuple = (0.4, 0.4, 0.4, 0.1),
        p_jitter: float = 0.8,
        p_gray: float = 0.2,
        *,
        p_blur: float = 0.0,
        blur_sigma: tuple[float, float] = BLUR_SIGMA,
        hsv_grad: str = "straight_through",
    ) -> None:
        super().__init__()
        if len(jitter) != 4:
            raise ValueError("jitter must be (brightness, contrast, saturation, hue)")
        if not (0 < crop_scale[0] <= crop_scale[1] <= 1):
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {crop_scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        for name, p in (("p_jitter", p_jitter), ("p_gray", p_gray), ("p_blur", p_blur)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < min <= max, got {blur_sigma}")
        if hsv_grad not in ("straight_through", "autograd"):
            raise ValueError(f"hsv_grad must be 'straight_through' or 'autograd', got {hsv_grad!r}")
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.jitter = tuple(jitter)
        self.brightness = _jitter_range(jitter[0], "brightness", 1.0, (0.0, math.inf), True)
        self.contrast = _jitter_range(jitter[1], "contrast", 1.0, (0.0, math.inf), True)
        self.saturation = _jitter_range(jitter[2], "saturation", 1.0, (0.0, math.inf), True)
        self.hue = _jitter_range(jitter[3], "hue", 0.0, (-0.5, 0.5), False)
        self.p_jitter = float(p_jitter)
        self.p_gray = float(p_gray)
        self.p_blur = float(p_blur)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.hsv_grad = hsv_grad

    @classmethod
    def eval_augment(cls, **kwargs) -> SimCLRAugment:
        """CSI's evaluation variant: crop scale fixed at 0.54 (see :func:`eval_augment`)."""
        return eval_augment(**kwargs)

    def extra_repr(self) -> str:
        return (
            f"crop_scale={self.crop_scale}, ratio=({self.ratio[0]:.4g}, {self.ratio[1]:.4g}), "
            f"jitter={self.jitter}, p_jitter={self.p_jitter}, p_gray={self.p_gray}, "
            + (f"p_blur={self.p_blur}, blur_sigma={self.blur_sigma}, " if self.p_blur > 0 else "")
            + f"hsv_grad={self.hsv_grad!r}"
        )

    def sample_params(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device=None,
        *,
        size: tuple[int, int] | None = None,
    ) -> AugmentParams:
        """Draw per-sample parameters for ``batch_size`` images.

        Args:
            batch_size: B.
            generator: source of randomness (drawn on its device); ``None``
                uses torch's global CPU RNG.
            device: where to put the parameters (default: the draw's device).
            size: ``(H, W)`` of the images, to round crops to whole pixels as
                CSI does; ``None`` draws continuous crops.  ``forward`` passes
                the input's size.

        The draws are made in a fixed order (jitter gate, order, contrast, hue,
        saturation, brightness, gray gate, crop; then, only when ``p_blur >
        0``, blur gate and sigma), so a seed gives the same parameters whatever
        the settings' values, and CSI's T (no blur) the same stream as before
        the blur existed.
        """
        n = int(batch_size)
        params = AugmentParams(
            jitter=_rand(n, generator) < self.p_jitter,
            contrast_first=_rand(n, generator) < 0.5,
            contrast=_uniform(n, self.contrast, generator),
            hue=_uniform(n, self.hue, generator),
            saturation=_uniform(n, self.saturation, generator),
            brightness=_uniform(n, self.brightness, generator),
            gray=_rand(n, generator) < self.p_gray,
            whbias=_sample_crop(n, self.crop_scale, self.ratio, size, generator),
        )
        if self.p_blur > 0:
            gate = _rand(n, generator) < self.p_blur
            params.blur_sigma = torch.where(gate, _uniform(n, self.blur_sigma, generator), 0.0)
        return params if device is None else params.to(device)

    def apply_color_jitter(self, x: Tensor, params: AugmentParams) -> Tensor:
        """Step 1: colour jitter on the samples with ``params.jitter``; the others pass through."""
        params = params.to(x.device)
        y = color_jitter(
            x, params.contrast, params.hue, params.saturation, params.brightness,
            params.contrast_first, hsv_grad=self.hsv_grad,
        )
        return torch.where(params.jitter.view(-1, 1, 1, 1), y, x)

    def apply_grayscale(self, x: Tensor, params: AugmentParams) -> Tensor:
        """Step 2: grayscale on the samples with ``params.gray``."""
        params = params.to(x.device)
        return torch.where(params.gray.view(-1, 1, 1, 1), grayscale(x), x)

    def apply_crop(self, x: Tensor, params: AugmentParams) -> Tensor:
        """Step 3: resized crop ``params.whbias`` back to the input size."""
        return resized_crop(x, params.whbias.to(x.device))

    def apply_blur(self, x: Tensor, params: AugmentParams) -> Tensor:
        """Step 4: Gaussian blur on the samples with ``params.blur_sigma > 0``, each with its own sigma.

        :meth:`apply` calls it only when this T has ``p_blur > 0``: a T without blur ignores the blur
        of parameters drawn by another one.
        """
        sigma = params.blur_sigma.to(x.device)
        y = gaussian_blur(x, torch.where(sigma > 0, sigma, 1.0))  # 1.0: any finite sigma for the unblurred
        return torch.where((sigma > 0).view(-1, 1, 1, 1), y, x)

    def apply(self, x: Tensor, params: AugmentParams) -> Tensor:
        """T with given parameters: jitter -> grayscale -> crop [-> blur].  Differentiable in ``x``.

        All samples go through every step and ``torch.where`` keeps the gated
        ones, so the call never synchronises with the device.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if params.batch_size != x.shape[0]:
            raise ValueError(f"params are for {params.batch_size} images, got a batch of {x.shape[0]}")
        params = params.to(x.device)
        x = self.apply_color_jitter(x, params)
        x = self.apply_grayscale(x, params)
        x = self.apply_crop(x, params)
        return self.apply_blur(x, params) if self.p_blur > 0 else x

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """T(x) with fresh per-sample parameters; ``(B, 3, H, W)`` in [0, 1] -> same shape."""
        if x.dim() != 4:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        n, size = x.shape[0], tuple(x.shape[-2:])
        params = draws.draw(("T", id(self), n, size), generator,
                            lambda g: self.sample_params(n, g, size=size), x.device)
        return self.apply(x, params)


def eval_augment(scale: float = EVAL_CROP_SCALE, **kwargs) -> SimCLRAugment:
    """CSI's evaluation transform: T with the crop's area fixed at ``scale`` (0.54).

    The aspect ratio, colour jitter (p=0.8) and grayscale (p=0.2) stay random,
    as in CSI's ``--resize_fix --resize_factor 0.54``.  ``kwargs`` go to
    :class:`SimCLRAugment`.
    """
    return SimCLRAugment(crop_scale=(scale, scale), **kwargs)


# --------------------------------------------------------------------------- #
# Shifts
# --------------------------------------------------------------------------- #
def hflip(x: Tensor) -> Tensor:
    """Mirror images left-right (last dimension)."""
    return x.flip(-1)


def random_hflip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Flip each image left-right with probability ``p``, independently (CSI flips before rotating)."""
    n = x.shape[0]
    flip = draws.draw(("flip", n, float(p)), generator, lambda g: _rand(n, g) < p, x.device)
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), hflip(x), x)


def rotate(x: Tensor, k: int) -> Tensor:
    """Rotate by ``k * 90`` degrees (``torch.rot90`` on dims (2, 3), counter-clockwise)."""
    return torch.rot90(x, int(k) % 4, dims=(2, 3))


def shift_batch(x: Tensor, num_shifts: int = 4) -> tuple[Tensor, Tensor]:
    """All K rotations of a batch, shift-major.

    Returns ``(shifted, labels)``: ``shifted[k * B + i] = rotate(x[i], k)``,
    shape ``(K * B, 3, H, W)``, and ``labels[k * B + i] = k`` (int64, on
    ``x.device``).  Rotations by 90 and 270 degrees swap H and W, so
    non-square images need ``num_shifts`` in (1, 2).
    """
    if not 1 <= num_shifts <= 4:
        raise ValueError(f"num_shifts must be in 1..4 (rotations), got {num_shifts}")
    if num_shifts > 2 and x.shape[-1] != x.shape[-2]:
        raise ValueError("rotations by 90 degrees need square images")
    shifted = torch.cat([rotate(x, k) for k in range(num_shifts)])
    labels = torch.arange(num_shifts, device=x.device).repeat_interleave(x.shape[0])
    return shifted, labels


# --------------------------------------------------------------------------- #
# Data-side crops of full-size images (CSI's ImageNet-30 pipeline)
# --------------------------------------------------------------------------- #
#: Crop area range of CSI's ImageNet-30 training crop (torchvision's ``RandomResizedCrop`` default).
TRAIN_CROP_SCALE = (0.08, 1.0)
#: Aspect-ratio range (width / height) of torchvision's ``RandomResizedCrop``, used by CSI.
CROP_RATIO = (3 / 4, 4 / 3)


def random_resized_crop_boxes(
    sizes,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = TRAIN_CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> Tensor:
    """Boxes of torchvision's ``RandomResizedCrop.get_params``, one per image, vectorised.

    CSI crops ImageNet-30 images on the data side with
    ``RandomResizedCrop(224)`` (alinlab/CSI, ``datasets/datasets.py``); this draws
    the same boxes for a batch of images of different sizes.  Per image of
    height H and width W: 10 trials of an area ``H W s`` with ``s ~ U(scale)``
    and an aspect ratio ``r`` log-uniform in ``ratio``; ``w = round(sqrt(A r))``,
    ``h = round(sqrt(A / r))`` (round half to even, as Python's ``round``); the
    first trial with ``0 < w <= W`` and ``0 < h <= H`` is used, at an offset
    uniform over the integer positions that fit.  When no trial fits,
    torchvision's fallback: the largest centred box whose aspect ratio lies in
    ``ratio`` (the whole image when its own ratio does).

    Args:
        sizes: ``(B, 2)`` integer ``(height, width)`` of each image.
        generator: source of randomness (drawn on its device, results moved to
            the CPU); ``None`` uses torch's global CPU RNG.
        scale: range of the crop's area fraction, ``0 < min <= max <= 1``;
            ``(0.54, 0.54)`` is CSI's evaluation crop (``--resize_fix --resize_factor 0.54``).
        ratio: range of the crop's aspect ratio (width / height).

    Returns:
        int64 ``(B, 4)`` on the CPU: ``(top, left, height, width)`` of each box,
        torchvision's ``(i, j, h, w)``.

    Draw order (fixed, so a seed reproduces the boxes): area ``(B, 10)``, log
    ratio ``(B, 10)``, vertical offset ``(B,)``, horizontal offset ``(B,)``, all
    float64.  The law of each box is torchvision's; the stream is not (torch's
    global RNG there).
    """
    sizes = torch.as_tensor(sizes).cpu()
    if sizes.dim() != 2 or sizes.shape[1] != 2 or sizes.is_floating_point() or (sizes < 1).any():
        raise ValueError(f"sizes must be positive integer (height, width) pairs of shape (B, 2), got {sizes!r}")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    b = sizes.shape[0]
    height, width = sizes[:, 0].double(), sizes[:, 1].double()
    trials = (b, _CROP_TRIALS)
    area = (height * width)[:, None] * (scale[0] + (scale[1] - scale[0]) * _rand(trials, generator, torch.float64).cpu())
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * _rand(trials, generator, torch.float64).cpu())
    u_top = _rand(b, generator, torch.float64).cpu()
    u_left = _rand(b, generator, torch.float64).cpu()
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # first trial that fits
    any_fit = fits.any(dim=1)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    n_top, n_left = height - h + 1, width - w + 1
    top = torch.minimum(torch.floor(u_top * n_top), n_top - 1)
    left = torch.minimum(torch.floor(u_left * n_left), n_left - 1)
    # torchvision's fallback: a centred box with the aspect ratio clamped into `ratio`
    lo, hi = min(ratio), max(ratio)
    in_ratio = width / height
    fw = torch.where(in_ratio > hi, torch.round(height * hi), width)
    fh = torch.where(in_ratio < lo, torch.round(width / lo), height)
    ftop, fleft = torch.div(height - fh, 2, rounding_mode="floor"), torch.div(width - fw, 2, rounding_mode="floor")
    out = torch.stack([torch.where(any_fit, top, ftop), torch.where(any_fit, left, fleft),
                       torch.where(any_fit, h, fh), torch.where(any_fit, w, fw)], dim=1)
    return out.to(torch.int64)


def random_flips(n: int, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """bool ``(n,)`` on the CPU: which of ``n`` images a ``RandomHorizontalFlip(p)`` mirrors."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return _rand(int(n), generator).cpu() < p


def no_crop_augment(**kwargs) -> SimCLRAugment:
    """T without its crop: colour jitter (p=0.8) and grayscale (p=0.2) only.

    CSI's T for ImageNet-30 (``get_simclr_augmentation`` with ``dataset ==
    'imagenet'``) has no resized crop, because each view was already cropped
    on the data side (:func:`random_resized_crop_boxes`).  Here the crop step
    stays in the pipeline as the identity (area and aspect ratio fixed at 1,
    so the window is the whole image, resampled at its own pixel centres):
    the draws, and so the random streams, are those of :class:`SimCLRAugment`.
    ``kwargs`` (jitter strengths, probabilities, ``hsv_grad``) go to it.
    """
    return SimCLRAugment(crop_scale=(1.0, 1.0), ratio=(1.0, 1.0), **kwargs)


def crop_flip_views(
    x: Tensor,
    generator: torch.Generator | None = None,
    *,
    views: int = 2,
    scale: tuple[float, float] = TRAIN_CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> Tensor:
    """CSI's data-side training view, made on the device, for images that have no data side.

    On ImageNet-30 every view CSI's F sees is a ``RandomResizedCrop(224)`` +
    ``RandomHorizontalFlip`` of its instance, made on the data side
    (:meth:`csigen.data.OneClassTask.train_view`), and T has no crop
    (:func:`no_crop_augment`).  G's images ``G(h)`` have no data side, so this
    gives each of their ``views`` views the same two steps on the device: a
    resized crop of area ``scale`` and aspect ratio ``ratio`` (CSI's GPU crop
    law, :meth:`SimCLRAugment.sample_params`; bilinear, differentiable, so
    gradients reach G) back to the input size, then a random flip.  Without
    it a synthetic instance's two views would differ in colour only, an
    easier positive pair than any real one.

    Args:
        x: ``(B, 3, H, W)`` float images.
        generator: source of randomness (drawn on its device).
        views: independent views per image.
        scale, ratio: the crop's area fraction and aspect-ratio ranges
            (``(1, 1)`` and ``(1, 1)``: no crop, flips only).

    Returns:
        ``(views * B, 3, H, W)``, stacked ``[view 1; view 2; ...]`` as
        :meth:`~csigen.data.OneClassTask.train_view`.  Draw order: the crops of
        all ``views * B`` rows, then their flips.
    """
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    x = x.repeat(views, 1, 1, 1)
    n, size = x.shape[0], tuple(x.shape[-2:])
    scale, ratio = (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1]))
    whbias = draws.draw(("crop", n, scale, ratio, size), generator,
                        lambda g: _sample_crop(n, scale, ratio, size, g), x.device)
    return random_hflip(resized_crop(x, whbias), generator=generator)
