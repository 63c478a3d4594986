"""The five networks of the method: F (ResNet18), G, D, E and D'.

Pixel-range convention (docs/design.md)
---------------------------------------
Every image tensor that enters or leaves a network here is float in
**[0, 1]**, shape ``(B, 3, H, W)``. Each network converts internally, and only
through the two helpers :func:`to_signed` / :func:`to_unit`:

* :class:`ResNet18` (F) normalises ``(x - 0.5) / 0.5`` (= ``to_signed``) as its
  first op, as CSI's ``NormalizeLayer`` does (for CIFAR *and* ImageNet-30).
* :class:`Generator` (G) ends in ``tanh`` and applies ``to_unit`` as its last
  op, so ``G(z)`` is directly an image in [0, 1].
* :class:`Encoder` (E) and :class:`Discriminator` (D) apply ``to_signed`` to
  their [0, 1] input as their first op.

Image sizes for G, E and D
--------------------------
``image_size`` is one of ``32, 64, 128, 224``. For 32, 64 and 128 the networks
work natively at that size (SNGAN's 32x32 design with one more up/down block
per doubling). For **224** (ImageNet-30) they work at a *native* size of 64:

* G generates 64x64 (4x4 bottom, 4 up-blocks) and upsamples bilinearly to
  224x224; E and D first resize their 224x224 input down to 64x64
  (bilinear, antialiased) and then run the 64x64 network.
* Why: 256-channel 3x3 convolutions at 224x224 cost about 30 GMAC each, so a
  native 224 generator (7x7 bottom, 5 up-blocks) would be > 10x the cost of
  the 64x64 one and would dominate a training step; the paper does not
  describe an ImageNet generator. Resizing D's input to the same native size
  also keeps the comparison fair: a 224 D could tell fake from real just by
  the missing high frequencies of the upsampled fakes. F still sees full
  224x224 images (real and synthetic alike).

Spectral normalisation uses the modern parametrisation API,
``torch.nn.utils.parametrizations.spectral_norm`` (one power iteration per
training-mode forward; weights live under ``parametrizations.weight.original``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "SUPPORTED_IMAGE_SIZES",
    "BasicBlock",
    "Discriminator",
    "Encoder",
    "Generator",
    "LatentDiscriminator",
    "ResNet18",
    "SmallF",
    "count_parameters",
    "load_csi_state_dict",
    "to_signed",
    "to_unit",
]

#: Image sizes accepted by Generator / Encoder / Discriminator, mapped to the
#: native size the convolutional stack works at (see module docstring).
SUPPORTED_IMAGE_SIZES: dict[int, int] = {32: 32, 64: 64, 128: 128, 224: 64}


# ----------------------------------------------------------------------------
# Pixel-range conversion: the one place where it happens.
# ----------------------------------------------------------------------------
def to_signed(x: torch.Tensor) -> torch.Tensor:
    """Map images from [0, 1] to [-1, 1]: ``(x - 0.5) / 0.5``."""
    return (x - 0.5) / 0.5


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Map images from [-1, 1] to [0, 1]: ``x * 0.5 + 0.5``."""
    return x * 0.5 + 0.5


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) scalar parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _native_size(image_size: int) -> int:
    if image_size not in SUPPORTED_IMAGE_SIZES:
        raise ValueError(
            f"image_size must be one of {sorted(SUPPORTED_IMAGE_SIZES)}, got {image_size!r}"
        )
    return SUPPORTED_IMAGE_SIZES[image_size]


# ----------------------------------------------------------------------------
# F: ResNet-18 feature extractor (CSI's architecture and parameter names).
# ----------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN (+ shortcut), ReLU.

    ``(B, in_planes, H, W) -> (B, planes, H / stride, W / stride)``. The
    projection shortcut (1x1 conv + BN) exists only when the shape changes; its
    modules are ``shortcut.0`` / ``shortcut.1`` as in CSI's CIFAR ResNet
    (CSI's ImageNet ResNet calls it ``downsample``; the loader renames).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)  # in place, as CSI: BatchNorm's backward does not need its output
        return F.relu(out, inplace=True)


class ResNet18(nn.Module):
    """Feature extractor F: ResNet-18 with CSI's SimCLR and shift heads.

    Args:
        variant: ``"cifar"`` (32x32 input: 3x3 stride-1 stem, no max-pool) or
            ``"imagenet"`` (224x224 input: 7x7 stride-2 stem + 3x3 max-pool,
            Kaiming fan-out init as torchvision/CSI).
        simclr_dim: output size of the SimCLR projection head (128).
        num_shifts: K, the number of shift classes (4 rotations).
        width: channels of the first stage (64, as CSI and the paper); the four
            stages have ``width * (1, 2, 4, 8)`` channels and the features
            ``8 * width``. Narrower networks (``TrainConfig.f_width``) are a
            CPU-scale departure from the paper: 32 costs about a quarter of the
            FLOPs of 64.

    Both variants normalise the [0, 1] input with ``to_signed`` first (CSI's
    ``NormalizeLayer`` does the same for ImageNet-30) and average-pool the last
    feature map to 1x1 (for 32x32 CIFAR input this is CSI's 4x4 average pool).

    Shapes: ``x`` (B, 3, H, W) in [0, 1] ->
    ``"penultimate"`` (B, 8 * width) = (B, 512), ``"simclr"`` (B, simclr_dim), ``"shift"`` (B, K).

    Parameter names follow CSI (``conv1``, ``bn1``, ``layer1..4`` of
    :class:`BasicBlock`, ``simclr_layer`` = Linear-ReLU-Linear,
    ``shift_cls_layer``), so :func:`load_csi_state_dict` loads official CSI
    checkpoints; CSI's unused ``linear`` and ``joint_distribution_layer`` heads
    are not built here.
    """

    def __init__(self, variant: str = "cifar", simclr_dim: int = 128, num_shifts: int = 4, width: int = 64):
        super().__init__()
        if variant not in ("cifar", "imagenet"):
            raise ValueError(f"variant must be 'cifar' or 'imagenet', got {variant!r}")
        if width < 1:
            raise ValueError(f"width must be a positive number of channels (64 as CSI), got {width!r}")
        self.variant = variant
        self.width = width
        self.last_dim = 8 * width
        self.simclr_dim = simclr_dim
        self.num_shifts = num_shifts

        if variant == "cifar":
            self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)

        widths, strides = tuple(width * m for m in (1, 2, 4, 8)), (1, 2, 2, 2)
        in_planes = width
        for i, (planes, stride) in enumerate(zip(widths, strides), start=1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(in_planes, planes, stride),
                                                     BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)

        self.simclr_layer = nn.Sequential(
            nn.Linear(self.last_dim, self.last_dim),
            nn.ReLU(),
            nn.Linear(self.last_dim, simclr_dim),
        )
        self.shift_cls_layer = nn.Linear(self.last_dim, num_shifts)

        if variant == "imagenet":  # as CSI's resnet_imagenet.py (torchvision init)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk: ``(B, 3, H, W)`` in [0, 1] -> ``(B, 8 * width)`` features (512 at width 64)."""
        out = to_signed(x)
        out = self.maxpool(F.relu(self.bn1(self.conv1(out))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(self.avgpool(out), 1)

    def forward(
        self,
        x: torch.Tensor,
        *,
        penultimate: bool = False,
        simclr: bool = False,
        shift: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Run the trunk once and return only the requested outputs.

        With no flag set, returns ``{"penultimate": (B, 8 * width)}``.
        """
        if not (penultimate or simclr or shift):
            penultimate = True
        features = self.penultimate(x)
        out: dict[str, torch.Tensor] = {}
        if penultimate:
            out["penultimate"] = features
        if simclr:
            out["simclr"] = self.simclr_layer(features)
        if shift:
            out["shift"] = self.shift_cls_layer(features)
        return out


_CSI_IGNORED_PREFIXES = ("linear.", "joint_distribution_layer.")


def load_csi_state_dict(model: ResNet18, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> ResNet18:
    """Load an official CSI (alinlab/CSI) ResNet-18 checkpoint into ``model``.

    ``state_dict`` is what CSI saves (``torch.load("last.model")``), possibly
    wrapped as ``{"state_dict": ...}``. The loader strips ``module.``
    prefixes (DataParallel), renames ImageNet's ``downsample`` shortcut to
    ``shortcut``, and drops CSI's ``linear.*`` / ``joint_distribution_layer.*``
    heads. Raises ``ValueError`` on a shape mismatch (e.g. a shift head trained
    with a different K: build ``ResNet18(num_shifts=K)``) and, when
    ``strict``, on missing or unknown keys. Returns ``model``.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        while key.startswith("module."):
            key = key[len("module."):]
        if key.startswith(_CSI_IGNORED_PREFIXES):
            continue
        key = key.replace(".downsample.", ".shortcut.")
        cleaned[key] = value

    own = model.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in cleaned.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        hint = ""
        if any(m.startswith("shift_cls_layer.") for m in mismatched):
            k_ckpt = cleaned["shift_cls_layer.weight"].shape[0]
            hint = f" (the checkpoint's shift head has K={k_ckpt}: build ResNet18(num_shifts={k_ckpt}))"
        elif any(m.startswith("conv1.") for m in mismatched):
            hint = " (stem mismatch: check ResNet18(variant=...) against the checkpoint)"
        raise ValueError("CSI checkpoint does not fit this ResNet18" + hint + ":\n  " + "\n  ".join(mismatched))

    unexpected = sorted(set(cleaned) - set(own))
    missing = sorted(set(own) - set(cleaned))
    if strict and (unexpected or missing):
        raise ValueError(
            f"CSI checkpoint keys do not match: missing {missing[:10]}"
            f"{'...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
            f"{'...' if len(unexpected) > 10 else ''}"
        )
    model.load_state_dict({k: v for k, v in cleaned.items() if k in own}, strict=False)
    return model


# ----------------------------------------------------------------------------
# SNGAN-style residual blocks for G, D and E.
# ----------------------------------------------------------------------------
def _xavier(module: nn.Module, gain: float) -> nn.Module:
    nn.init.xavier_uniform_(module.weight, gain)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


class SmallF(nn.Module):
    """A small stand-in for F with :class:`ResNet18`'s interface and heads, for CPU checks and tests.

    Two stride-2 conv-BatchNorm-ReLU layers (3 -> ``width // 2`` -> ``width``
    channels), global average pooling, then CSI's heads: ``simclr`` =
    Linear(width, width) -> ReLU -> Linear(width, ``simclr_dim``) and
    ``shift`` = Linear(width, ``num_shifts``). ``forward`` takes and returns
    what :meth:`ResNet18.forward` does: ``x`` (B, 3, H, W) in [0, 1] ->
    ``{"penultimate": (B, width), "simclr": (B, simclr_dim), "shift": (B, K)}``.

    Not part of any method of the paper: 16-bit convolutions on a CPU are
    30-50x slower than float32, so the CPU runs of ``bench/gpu_check.py`` and
    the precision, budget and distributed tests exercise the trainer's own
    code paths with this F in place of the ResNet-18.
    """

    def __init__(self, num_shifts: int = 4, simclr_dim: int = 128, width: int = 16, conv_bias: bool = True):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=conv_bias), nn.BatchNorm2d(width // 2),
            nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1, bias=conv_bias), nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.simclr_layer = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, simclr_dim))
        self.shift_cls_layer = nn.Linear(width, num_shifts)

    def forward(self, x: torch.Tensor, *, penultimate: bool = False, simclr: bool = False,
                shift: bool = False) -> dict[str, torch.Tensor]:
        features = self.trunk(to_signed(x))
        out = {"penultimate": features} if penultimate or not (simclr or shift) else {}
        if simclr:
            out["simclr"] = self.simclr_layer(features)
        if shift:
            out["shift"] = self.shift_cls_layer(features)
        return out


class _GBlock(nn.Module):
    """Up-sampling residual block: BN-ReLU-Up-Conv3x3, BN-ReLU-Conv3x3; shortcut Up + Conv1x1.

    ``(B, C_in, H, W) -> (B, C_out, 2H, 2W)`` (nearest-neighbour up-sampling).
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _xavier(nn.Conv2d(in_ch, out_ch, 3, padding=1), math.sqrt(2))
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = _xavier(nn.Conv2d(out_ch, out_ch, 3, padding=1), math.sqrt(2))
        self.shortcut = _xavier(nn.Conv2d(in_ch, out_ch, 1), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class _DBlock(nn.Module):
    """Pre-activation residual block (ReLU-Conv3x3-ReLU-Conv3x3 [-AvgPool2]).

    ``first=True`` is SNGAN's "optimised" first block (no leading ReLU,
    shortcut AvgPool then Conv1x1). Otherwise the shortcut is Conv1x1 (then
    AvgPool) when the shape changes and the identity when it does not.
    ``(B, C_in, H, W) -> (B, C_out, H', W')`` with H' = H/2 if ``down``.
    ``sn`` wraps every conv in spectral norm; ``bn`` adds BatchNorm before
    each ReLU (not used by default).
    """

    def __init__(self, in_ch: int, out_ch: int, down: bool, first: bool = False,
                 sn: bool = True, bn: bool = False):
        super().__init__()
        wrap = spectral_norm if sn else (lambda m: m)
        self.down, self.first = down, first
        self.conv1 = wrap(_xavier(nn.Conv2d(in_ch, out_ch, 3, padding=1), math.sqrt(2)))
        self.conv2 = wrap(_xavier(nn.Conv2d(out_ch, out_ch, 3, padding=1), math.sqrt(2)))
        self.norm1 = nn.BatchNorm2d(in_ch) if (bn and not first) else nn.Identity()
        self.norm2 = nn.BatchNorm2d(out_ch) if bn else nn.Identity()
        self.learnable_sc = first or down or in_ch != out_ch
        if self.learnable_sc:
            self.shortcut = wrap(_xavier(nn.Conv2d(in_ch, out_ch, 1), 1.0))

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(self.norm1(x))
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        return F.avg_pool2d(h, 2) if self.down else h

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        if not self.learnable_sc:
            return x
        if self.first:  # pool first: cheaper, as SNGAN's optimised block
            return self.shortcut(F.avg_pool2d(x, 2) if self.down else x)
        x = self.shortcut(x)
        return F.avg_pool2d(x, 2) if self.down else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._residual(x) + self._skip(x)


# ----------------------------------------------------------------------------
# G: generator.
# ----------------------------------------------------------------------------
class Generator(nn.Module):
    """SNGAN ResNet generator G (Miyato et al. 2018), output in [0, 1].

    ``z`` (B, z_dim) -> Linear to 4x4xC -> n up-blocks of C channels
    (:class:`_GBlock`) -> BN-ReLU-Conv3x3 to 3 channels -> tanh -> ``to_unit``.
    n = log2(native / 4): 3 for 32x32 (SNGAN's CIFAR design), 4 for 64, 5 for
    128. For ``image_size=224`` the network generates 64x64 and upsamples
    bilinearly to 224x224 (see the module docstring for why).
    Output ``(B, 3, image_size, image_size)`` in [0, 1].

    Initialisation: Xavier-uniform (gain sqrt(2) on residual convs, 1
    elsewhere), as common SNGAN ports.
    """

    def __init__(self, z_dim: int = 128, channels: int = 256, image_size: int = 32):
        super().__init__()
        self.z_dim, self.channels, self.image_size = z_dim, channels, image_size
        self.native_size = _native_size(image_size)
        self.bottom = 4
        n_up = int(math.log2(self.native_size // self.bottom))
        self.linear = _xavier(nn.Linear(z_dim, self.bottom * self.bottom * channels), 1.0)
        self.blocks = nn.Sequential(*[_GBlock(channels, channels) for _ in range(n_up)])
        self.bn = nn.BatchNorm2d(channels)
        self.conv_out = _xavier(nn.Conv2d(channels, 3, 3, padding=1), 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.linear(z).view(z.shape[0], self.channels, self.bottom, self.bottom)
        h = self.blocks(h)
        x = torch.tanh(self.conv_out(F.relu(self.bn(h))))
        if self.native_size != self.image_size:
            # bilinear interpolation is a convex combination: stays in [-1, 1]
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False)
        return to_unit(x)

    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """Draw ``(n, z_dim)`` latents from N(0, I) on ``device`` (default: the model's).

        The numbers are drawn on the generator's own device (torch's global
        CPU RNG when ``generator`` is None), in one call, and then moved to
        ``device``: a seeded CPU generator (the trainer's, whose state a
        checkpoint holds) gives the same latents for a model on any device,
        and PyTorch refuses to draw a CUDA tensor from a CPU generator.
        """
        if device is None:
            device = next(self.parameters()).device
        from csigen.draws import draw  # in a training step: moved with the step's other draws

        n, z_dim = int(n), self.z_dim

        def make(g):
            return torch.randn(n, z_dim, generator=g, device=g.device if g is not None else "cpu")

        return draw(("latent", n, z_dim), generator, make, device)


def _resize_to_native(x: torch.Tensor, native: int) -> torch.Tensor:
    if x.shape[-1] == native and x.shape[-2] == native:
        return x
    # in float32: under autocast x may be 16-bit (G's output), and the CPU has no 16-bit antialiased resize
    return F.interpolate(x.float(), size=(native, native), mode="bilinear", align_corners=False, antialias=True)


# ----------------------------------------------------------------------------
# D: image discriminator.
# ----------------------------------------------------------------------------
class Discriminator(nn.Module):
    """SNGAN ResNet discriminator D with spectral norm on every conv/linear.

    ``x`` (B, 3, S, S) in [0, 1] -> ``to_signed`` -> optimised first block
    3->C (down) -> (n_down - 1) blocks C->C (down) -> 2 blocks C->C ->
    ReLU -> global sum pool -> SN-Linear C->1 -> logits ``(B,)``.
    n_down = log2(native / 8): 2 for 32x32 (SNGAN's CIFAR design: 32->16->8,
    then two 8x8 blocks), 3 for 64, 4 for 128. ``image_size=224`` input is
    resized to 64x64 (antialiased bilinear) first.
    """

    def __init__(self, channels: int = 128, image_size: int = 32):
        super().__init__()
        self.channels, self.image_size = channels, image_size
        self.native_size = _native_size(image_size)
        n_down = int(math.log2(self.native_size // 8))
        blocks = [_DBlock(3, channels, down=True, first=True)]
        blocks += [_DBlock(channels, channels, down=True) for _ in range(n_down - 1)]
        blocks += [_DBlock(channels, channels, down=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.linear = spectral_norm(_xavier(nn.Linear(channels, 1), 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(_resize_to_native(to_signed(x), self.native_size))
        h = F.relu(h).sum(dim=(2, 3))
        return self.linear(h).squeeze(1)


# ----------------------------------------------------------------------------
# E: encoder.
# ----------------------------------------------------------------------------
class Encoder(nn.Module):
    """Encoder E, "symmetric to G": images -> latent h.

    ``x`` (B, 3, S, S) in [0, 1] -> ``to_signed`` -> first down-block 3->C ->
    (n - 1) down-blocks C->C (32->16->8->4 for 32x32, n = log2(native / 4)
    mirroring G's up-blocks) -> ReLU -> flatten 4x4xC -> Linear to z_dim
    (mirror of G's first Linear) -> ``(B, z_dim)``. ``image_size=224`` input is
    resized to 64x64 (antialiased bilinear) first.

    Normalisation: **no BatchNorm** (pre-activation blocks as D's, without
    spectral norm). With BN, E(x) would depend on the other images in the
    batch and differ between train and eval mode; without it, the code of an
    image (and hence its reconstruction G(E(x)), e.g. Figure 2's mixed
    inlier/outlier grids) is a function of that image alone.
    """

    def __init__(self, z_dim: int = 128, channels: int = 256, image_size: int = 32):
        super().__init__()
        self.z_dim, self.channels, self.image_size = z_dim, channels, image_size
        self.native_size = _native_size(image_size)
        self.bottom = 4
        n_down = int(math.log2(self.native_size // self.bottom))
        blocks = [_DBlock(3, channels, down=True, first=True, sn=False)]
        blocks += [_DBlock(channels, channels, down=True, sn=False) for _ in range(n_down - 1)]
        self.blocks = nn.Sequential(*blocks)
        self.linear = _xavier(nn.Linear(self.bottom * self.bottom * channels, z_dim), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(_resize_to_native(to_signed(x), self.native_size))
        return self.linear(torch.flatten(F.relu(h), 1))


# ----------------------------------------------------------------------------
# D': latent discriminator.
# ----------------------------------------------------------------------------
class LatentDiscriminator(nn.Module):
    """Latent discriminator D': MLP on latents, ``(B, z_dim) -> (B,)`` logits.

    ``num_layers`` Linear layers (z_dim -> hidden -> ... -> hidden -> 1) with
    LeakyReLU(0.2) between them; no normalisation.
    """

    def __init__(self, z_dim: int = 128, hidden: int = 512, num_layers: int = 3):
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        dims = [z_dim] + [hidden] * (num_layers - 1) + [1]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).squeeze(1)
