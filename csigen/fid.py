"""FID of a generator G (and between two image sets) with torch-fidelity.

The paper reports FID (lower is better) for CSI + G (69.5) and for the full
model (54.1), but does not say against which reference statistics nor with
how many samples. **Our choice**, used by default everywhere in csigen:

* **Reference = the inlier class's training images**, the distribution G was
  trained to model (all 5,000 images of one CIFAR-10 class), passed as
  ``task.train_images`` (see :func:`reference_images`).
* **10,000 generated samples** (``num_samples=10000``) against those 5,000
  real images, at the native 32x32 size; torch-fidelity's Inception resizes
  every image to 299x299 itself (TF1-compatible bilinear resize).
* **Features:** torch-fidelity's default ``inception-v3-compat`` extractor
  (the TF Inception-v3 of the original FID code, 2048-d pool features).
* Latents ``z ~ N(0, I)`` drawn by torch-fidelity from ``rng_seed=seed``;
  G runs in eval mode (BatchNorm running statistics).

Alternatives, one argument away: the class's **test** images
(``reference_images(task, "test")``, 1,000 images for CIFAR-10) or the
**whole CIFAR-10 training set** (``reference_images="cifar10-train"``, a
dataset torch-fidelity downloads and registers itself). The numbers differ
between these choices, so a reported FID must name its reference.

FID is biased **upwards** for small sample counts (the covariance of 2048-d
features is poorly estimated from few images), so an FID from a few hundred
samples (the smoke mode of the notebooks) is much larger than, and not
comparable to, the paper's numbers. Compare FIDs only at equal sample counts
and equal references.

Offline use: the Inception weights (``pt_inception-2015-12-05``) download once
to ``torch.hub.get_dir()/checkpoints``. Without internet, pass
``weights_path=...`` or set the environment variable ``CSIGEN_FID_WEIGHTS``.
:func:`make_offline_inception_weights` writes a *randomly initialised*
extractor so that the real code path runs in tests and CI with no download;
the numbers it gives are **not** FIDs.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

__all__ = [
    "DEFAULT_FEATURE_LAYER",
    "DEFAULT_NUM_SAMPLES",
    "ENV_WEIGHTS",
    "InceptionWeightsUnavailable",
    "UInt8Generator",
    "UInt8ImageDataset",
    "fid_between",
    "fid_of_generator",
    "make_offline_inception_weights",
    "reference_images",
    "to_uint8",
]

#: Generated samples per FID (our documented default; see the module docstring).
DEFAULT_NUM_SAMPLES = 10_000
#: Inception layer of the standard FID (torch-fidelity's default for "inception-v3-compat").
DEFAULT_FEATURE_LAYER = "2048"
#: Environment variable naming a weights file used when ``weights_path`` is None.
ENV_WEIGHTS = "CSIGEN_FID_WEIGHTS"

_WEIGHTS_HELP = (
    "torch-fidelity needs the Inception weights (pt_inception-2015-12-05); download them once with "
    "internet, or pass weights_path=... (or set the environment variable CSIGEN_FID_WEIGHTS)"
)


class InceptionWeightsUnavailable(RuntimeError):
    """The Inception-v3 weights could be neither found nor downloaded."""


# ----------------------------------------------------------------------------
# uint8 adapters: torch-fidelity works on uint8 (B, 3, H, W) images.
# ----------------------------------------------------------------------------
def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` images in [0, 1] (float) or uint8 -> uint8 in [0, 255] (rounded, clamped)."""
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"expected float images in [0, 1] or uint8, got dtype {images.dtype}")
    return (images.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


class UInt8Generator(nn.Module):
    """Calls ``G(z)`` (images in [0, 1]) and returns uint8 ``(B, 3, H, W)``, as torch-fidelity wants.

    ``z`` is moved to G's device and the images come back on ``z``'s device,
    so G stays where it is.
    """

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        device = next(self.generator.parameters()).device
        with torch.no_grad():
            x = self.generator(z.to(device))
        return to_uint8(x).to(z.device)


class UInt8ImageDataset(Dataset):
    """A uint8 ``(N, 3, H, W)`` tensor as a Dataset of uint8 ``(3, H, W)`` tensors (torch-fidelity input)."""

    def __init__(self, images: torch.Tensor):
        images = to_uint8(torch.as_tensor(images))
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        self.images = images.cpu().contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def reference_images(task, which: str = "train"):
    """Reference set for FID from a :class:`~csigen.data.OneClassTask`.

    ``which``: ``"train"`` (default, the inlier class's training images),
    ``"test"`` (the inlier class's test images) or ``"cifar10-train"`` (the
    whole CIFAR-10 training set, returned as torch-fidelity's registered name;
    torch-fidelity downloads it).
    """
    if which == "train":
        return task.train_images
    if which == "test":
        return task.test_images[torch.as_tensor(task.test_is_inlier, dtype=torch.bool)]
    if which == "cifar10-train":
        return "cifar10-train"
    raise ValueError(f"which must be 'train', 'test' or 'cifar10-train', got {which!r}")


# ----------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------
def _default_weights_file() -> Path:
    """Where torch.hub caches torch-fidelity's Inception weights (same file torch-fidelity uses)."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL_INCEPTION_V3)


def _download_default_weights(verbose: bool = False) -> Path:
    """Return the cached official weights file, downloading it if needed; clear error offline."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    path = _default_weights_file()
    if path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(URL_INCEPTION_V3, str(path), progress=verbose)
    except Exception as exc:  # URLError, HTTPError, socket errors, ...
        raise InceptionWeightsUnavailable(
            f"could not download {URL_INCEPTION_V3} ({type(exc).__name__}: {exc}). {_WEIGHTS_HELP}."
        ) from exc
    return path


def _resolve_weights(weights_path, verbose: bool = False) -> Path:
    """``weights_path`` -> env ``CSIGEN_FID_WEIGHTS`` -> official weights (downloaded once)."""
    if weights_path is None:
        weights_path = os.environ.get(ENV_WEIGHTS) or None
    if weights_path is None:
        return _download_default_weights(verbose)
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise InceptionWeightsUnavailable(f"Inception weights file {str(path)!r} does not exist. {_WEIGHTS_HELP}.")
    return path


def make_offline_inception_weights(path, seed: int = 0) -> Path:
    """Write a *randomly initialised* torch-fidelity Inception-v3 state dict to ``path``.

    For tests and offline demos only: passing the file as ``weights_path``
    runs torch-fidelity's real code path with no download (FID of a set with
    itself is ~0, of different sets > 0), but the numbers it gives are **not
    FIDs** and must never be reported as such.

    The extractor (``FeatureExtractorInceptionV3``) is built with an empty
    state dict, its convolutions and linear layer get Kaiming-normal weights
    (fan-in, ReLU gain) and zero biases, BatchNorm keeps its defaults, and
    ``state_dict()`` (exactly the keys the extractor loads) is saved.
    Deterministic for a given ``seed``. Returns the path.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, *args, **kwargs):  # skip loading: we initialise instead
            return None

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({}, path)
    model = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
                if module.bias is not None:
                    module.bias.zero_()
    torch.save(model.state_dict(), path)
    return path


# ----------------------------------------------------------------------------
# FID
# ----------------------------------------------------------------------------
def _as_input(images):
    """uint8 tensor -> Dataset; a Dataset or a torch-fidelity registered name passes through."""
    if isinstance(images, (str, Dataset)):
        return images
    return UInt8ImageDataset(images)


def _check_count(name: str, n: int, feature_layer: str) -> None:
    if n < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {n} for {name}")
    dim = int(feature_layer) if str(feature_layer).isdigit() else 1008
    if n < dim:  # rank-deficient covariance
        warnings.warn(
            f"FID from {n} images ({name}) is biased upwards and not comparable to the paper's "
            f"(we use {DEFAULT_NUM_SAMPLES} generated vs 5,000 real)",
            stacklevel=3,
        )


def _calculate_fid(input1, input2, *, batch_size, device, seed, weights_path, cache, verbose, feature_layer,
                   **extra) -> float:
    import torch_fidelity

    weights = _resolve_weights(weights_path, verbose)
    device = torch.device(device) if device is not None else torch.device("cpu")
    kwargs = dict(
        input1=input1,
        input2=input2,
        fid=True,
        cuda=device.type == "cuda",
        batch_size=int(batch_size),
        verbose=verbose,
        cache=cache,
        rng_seed=int(seed),
        save_cpu_ram=True,  # in-memory tensors: no DataLoader worker processes
        feature_extractor_weights_path=str(weights),
        feature_layer_fid=str(feature_layer),
        **extra,
    )
    if cache:
        # torch-fidelity's cache names ignore the weights file: keep one cache per weights file.
        tag = hashlib.sha1(str(weights.resolve()).encode()).hexdigest()[:10]
        kwargs["cache_root"] = os.path.join(os.path.dirname(torch.hub.get_dir()), "fidelity_cache", f"csigen-{tag}")
    metrics = torch_fidelity.calculate_metrics(**kwargs)
    return float(metrics["frechet_inception_distance"])


def fid_of_generator(
    G: nn.Module,
    reference_images,
    *,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    batch_size: int = 100,
    device=None,
    seed: int = 0,
    weights_path=None,
    cache: bool = False,
    verbose: bool = False,
    feature_layer: str = DEFAULT_FEATURE_LAYER,
) -> float:
    """FID between ``num_samples`` images of ``G`` and ``reference_images`` (lower is better).

    Args:
        G: a generator with ``z_dim`` and ``forward(z) -> (B, 3, H, W)`` in [0, 1]
            (:class:`csigen.models.Generator`). It is run in eval mode and left
            in its previous mode and on its device afterwards.
        reference_images: uint8 ``(N, 3, H, W)`` tensor (our default: the inlier
            class's training images, see :func:`reference_images`), a Dataset of
            uint8 ``(3, H, W)`` tensors, or a torch-fidelity dataset name such as
            ``"cifar10-train"``.
        num_samples: generated samples (10,000 by default; fewer are biased upwards).
        batch_size: images per Inception forward pass.
        device: where Inception runs; default G's device. A CUDA device runs G
            and Inception on the GPU (torch-fidelity's ``cuda=True``, which uses the
            current CUDA device); anything else runs them on the CPU.
        seed: torch-fidelity's ``rng_seed`` for the latents ``z ~ N(0, I)``.
        weights_path: Inception weights file; default ``$CSIGEN_FID_WEIGHTS`` or
            the official weights (downloaded once).
        cache: let torch-fidelity cache statistics of named datasets (kept per
            weights file).
        verbose: torch-fidelity's progress output.
        feature_layer: Inception layer whose features FID compares; ``"2048"``
            (the standard FID, default). The cheaper ``"64"`` (after the first
            pooling, a tenth of the compute and a 64x64 covariance) is for tests
            and smoke runs only: it is not the FID the literature reports.

    Raises:
        InceptionWeightsUnavailable (a RuntimeError): no weights and no internet.
    """
    from torch_fidelity import GenerativeModelModuleWrapper

    if isinstance(reference_images, torch.Tensor):
        _check_count("the reference images", reference_images.shape[0], feature_layer)
    _check_count("the generated samples", int(num_samples), feature_layer)
    was_training = G.training
    original_device = next(G.parameters()).device
    if device is None:
        device = original_device
    G.eval()
    try:
        wrapped = GenerativeModelModuleWrapper(UInt8Generator(G), int(G.z_dim), "normal", 0, make_eval=True)
        return _calculate_fid(
            wrapped,
            _as_input(reference_images),
            input1_model_num_samples=int(num_samples),
            batch_size=batch_size,
            device=device,
            seed=seed,
            weights_path=weights_path,
            cache=cache,
            verbose=verbose,
            feature_layer=feature_layer,
        )
    finally:
        G.to(original_device)  # torch-fidelity moves the model to the GPU when cuda=True
        G.train(was_training)


def fid_between(
    images_a,
    images_b,
    *,
    batch_size: int = 100,
    device=None,
    weights_path=None,
    cache: bool = False,
    verbose: bool = False,
    feature_layer: str = DEFAULT_FEATURE_LAYER,
) -> float:
    """FID between two image sets (uint8 or [0, 1] float ``(N, 3, H, W)``, Datasets or dataset names).

    Used for the FID of reconstructions ``G(E(x))`` against ``x`` and for
    sanity checks (a set against itself gives ~0). ``device`` defaults to the
    CPU; the other arguments are as in :func:`fid_of_generator`.
    """
    for name, images in (("images_a", images_a), ("images_b", images_b)):
        if isinstance(images, torch.Tensor):
            _check_count(name, images.shape[0], feature_layer)
    return _calculate_fid(
        _as_input(images_a),
        _as_input(images_b),
        batch_size=batch_size,
        device=device,
        seed=0,
        weights_path=weights_path,
        cache=cache,
        verbose=verbose,
        feature_layer=feature_layer,
    )
