"""FID of a generator G with torch-fidelity, under one protocol for every variant.

The paper reports FID (lower is better) for CSI + G (69.5) and for the full
model (54.1) on CIFAR-10, without saying in which mode G was run, against
which reference, or with how many samples. csigen measures both variants with
**one protocol** (:data:`FID_PROTOCOL`, ``"csigen-fid-1"``), recorded in every
``fid.json``:

* **G's mode: eval mode, with G's BatchNorm statistics re-estimated on prior
  samples only.** In training G always normalises with the statistics of the
  batch at hand, and G's *running* averages mix whatever batches it saw:
  ``csi+g``'s come from G(h) alone, ``full``'s from G(h) and G(E(x)) (every
  GAN block runs G on both). Eval mode with those running averages would
  measure the two variants under different normalisations. So, before
  measuring, a copy of G gets fresh running statistics: 4,096 latents
  h ~ N(0, I) (seeded, in batches of 128, CSI's batch) pass through G in
  training mode with a cumulative average (``torch.optim.swa_utils.update_bn``);
  the copy is then put in eval mode. The result depends on G's weights only,
  not on the mix of inputs seen in training, and is identical for both
  variants. :func:`generator_for_evaluation` returns G in this mode (and
  :func:`generator_eval_mode` puts G itself in it for a ``with`` block);
  Figure 2-style reconstructions G(E(x)) use it too (:func:`reconstruct`). Other
  readings, one argument away (``bn_mode``): ``"running"`` (eval mode with the
  training running averages) and ``"batch"`` (batch statistics of each
  generated batch, which depend on the batch size).
* **Reference: the inlier class's training images, all of them** (5,000 for a
  CIFAR-10 class), the distribution G was trained to model in the paper's
  one-class setting; a run's ``max_train`` subset is not used, so runs with
  different subsets share a reference. Alternatives: the class's test images
  (``reference="test"``) or every class's training images
  (``reference="all-train"``, the whole dataset). The numbers differ between
  references, so a reported FID names its reference.
* **5,000 generated samples** (:data:`DEFAULT_NUM_SAMPLES`), as many as a
  CIFAR-10 class has training images, at G's native size; latents
  z ~ N(0, I) drawn by torch-fidelity from ``rng_seed=seed`` (0). G runs in
  fp32; its [0, 1] output is rounded to uint8, and torch-fidelity resizes
  every image to 299x299 itself (TF1-compatible bilinear resize).
* **Features:** torch-fidelity's ``inception-v3-compat`` extractor with its
  Inception weights ``pt_inception-2015-12-05`` (the TF Inception-v3 of the
  original FID code), 2048-d pool features. The weights file's sha256 is
  recorded; only a file whose sha256 starts with the hash tag in
  torch-fidelity's download URL (``...-6726825d.pth``, torch.hub's naming
  convention, checked by ``load_state_dict_from_url(check_hash=True)``)
  counts as the real Inception (``real_inception``). A value measured with
  other weights is stored with ``"not_a_fid": true`` and never shown as a FID.

FID is biased **upwards** for small sample counts (the covariance of 2048-d
features is poorly estimated from few images), so an FID from a few hundred
samples is much larger than, and not comparable to, the paper's numbers.
Compare FIDs only at equal sample counts and equal references.

Offline use: the Inception weights download once to
``torch.hub.get_dir()/checkpoints``. Without internet, pass
``weights_path=...`` (``--weights``) or set ``CSIGEN_FID_WEIGHTS``.
:func:`make_offline_inception_weights` writes a *randomly initialised*
extractor so that the real code path runs in tests and CI with no download;
the numbers it gives are **not** FIDs.

Run records (``python -m csigen fid --run DIR``, :func:`fid_of_run`):
``DIR/fid.json`` holds the latest measurement of the run's G (from
``checkpoint.pt``, or ``weights.pt`` once the run finished slim: :mod:`csigen.disk`);
``DIR/fid_records.json`` keeps every measurement made on
the run (other sample counts, references, G snapshots), so nothing computed
is lost and a repeated request is answered from it. G snapshots
(``TrainConfig.g_snapshot_every_steps``) are written by
:func:`maybe_save_g_snapshot` to ``DIR/g_snapshots/step_<NNNNNN>.pt`` (G's
``state_dict`` only); :func:`fid_over_training` measures each of them.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import functools
import hashlib
import io
import json
import math
import os
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

__all__ = [
    "BN_MODES",
    "DEFAULT_FEATURE_LAYER",
    "DEFAULT_NUM_SAMPLES",
    "ENV_WEIGHTS",
    "FID_FILE",
    "FID_PROTOCOL",
    "FID_RECORDS_FILE",
    "FID_SCHEMA_VERSION",
    "G_SNAPSHOT_DIR",
    "REFERENCES",
    "InceptionWeightsUnavailable",
    "UInt8Generator",
    "UInt8ImageDataset",
    "describe_fid",
    "fid_between",
    "fid_of_generator",
    "fid_of_run",
    "fid_over_training",
    "fid_sample_size_bias",
    "frechet_distance",
    "g_snapshot_every",
    "g_snapshot_path",
    "generator_eval_mode",
    "generator_for_evaluation",
    "inception_features",
    "is_real_inception",
    "list_g_snapshots",
    "load_fid_records",
    "load_g_snapshot",
    "make_offline_inception_weights",
    "maybe_save_g_snapshot",
    "notebook_weights",
    "real_inception_hash_prefix",
    "reconstruct",
    "reference_images",
    "run_with_g_snapshots",
    "save_g_snapshot",
    "sha256_of_file",
    "to_uint8",
]

#: Inception layer of the standard FID (torch-fidelity's default for "inception-v3-compat").
DEFAULT_FEATURE_LAYER = "2048"
#: Environment variable naming a weights file used when ``weights_path`` is None.
ENV_WEIGHTS = "CSIGEN_FID_WEIGHTS"
#: How G's BatchNorm layers normalise during a measurement (see the module docstring).
BN_MODES = ("prior", "running", "batch")
#: Reference sets of a run: the inlier class's training images (protocol), its test images, every class's
#: training images.
REFERENCES = ("train", "test", "all-train")

#: The measurement protocol, stated once; every fid.json records it (see the module docstring).
FID_PROTOCOL: dict[str, Any] = {
    "name": "csigen-fid-1",
    "bn_mode": "prior",
    "bn_mode_text": "G in eval mode with BatchNorm statistics re-estimated on prior samples h ~ N(0, I) only "
                    "(cumulative average over bn_samples latents in batches of bn_batch_size, training-mode "
                    "forward passes), identical for csi+g and full",
    "bn_samples": 4096,
    "bn_batch_size": 128,
    "bn_seed": 0,
    "samples": 5000,
    "latents": "z ~ N(0, I), drawn by torch-fidelity with rng_seed = seed (default 0)",
    "reference": "train",
    "reference_text": "every training image of the inlier class (not the run's max_train subset)",
    "feature_extractor": "inception-v3-compat",
    "feature_layer": DEFAULT_FEATURE_LAYER,
    "weights": "torch-fidelity's pt_inception-2015-12-05 (weights-inception-2015-12-05-6726825d.pth)",
    "precision": "fp32; G's [0, 1] output rounded to uint8; torch-fidelity resizes to 299x299",
    "library": "torch-fidelity calculate_metrics(fid=True)",
}
#: Generated samples per FID (the protocol's count; see the module docstring).
DEFAULT_NUM_SAMPLES = FID_PROTOCOL["samples"]
#: Version of the fid.json / fid_records.json layout.
FID_SCHEMA_VERSION = 1
#: File names inside a run folder.
FID_FILE = "fid.json"
FID_RECORDS_FILE = "fid_records.json"
G_SNAPSHOT_DIR = "g_snapshots"

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

    ``which``: ``"train"`` (default, the task's inlier training images),
    ``"test"`` (the inlier class's test images) or ``"cifar10-train"`` (the
    whole CIFAR-10 training set, returned as torch-fidelity's registered name;
    torch-fidelity downloads it). For a run folder, :func:`fid_of_run` loads
    the protocol's reference itself (every training image of the class).
    """
    if which == "train":
        return task.train_images
    if which == "test":
        return task.test_images[torch.as_tensor(task.test_is_inlier, dtype=torch.bool)]
    if which == "cifar10-train":
        return "cifar10-train"
    raise ValueError(f"which must be 'train', 'test' or 'cifar10-train', got {which!r}")


# ----------------------------------------------------------------------------
# G's mode for every measurement (the protocol's first point)
# ----------------------------------------------------------------------------
def _bn_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _prior_batches(z_dim: int, samples: int, batch_size: int, seed: int, device) -> Iterator[torch.Tensor]:
    """``ceil(samples / batch_size)`` batches of latents h ~ N(0, I), drawn on the CPU (seeded), then moved."""
    gen = torch.Generator().manual_seed(int(seed))
    for _ in range(math.ceil(samples / batch_size)):
        yield torch.randn(batch_size, z_dim, generator=gen).to(device)


def generator_for_evaluation(G: nn.Module, *, bn_mode: str = FID_PROTOCOL["bn_mode"],
                             bn_samples: int = FID_PROTOCOL["bn_samples"],
                             bn_batch_size: int = FID_PROTOCOL["bn_batch_size"],
                             bn_seed: int = FID_PROTOCOL["bn_seed"], device=None) -> nn.Module:
    """A copy of G in the protocol's mode, for FID, samples and reconstructions G(E(x)).

    ``G`` itself (weights, running statistics, mode, device) is not changed.

    Args:
        G: a generator with ``z_dim`` and ``forward(z) -> (B, 3, H, W)``
            (:class:`csigen.models.Generator`).
        bn_mode: ``"prior"`` (the protocol): reset every BatchNorm's running
            statistics, pass ``bn_samples`` latents h ~ N(0, I) (seeded by
            ``bn_seed``, in batches of ``bn_batch_size``, rounded up to whole
            batches) through G in training mode with a cumulative average
            (``torch.optim.swa_utils.update_bn``), then eval mode: the result
            depends on G's weights only. ``"running"``: eval mode with the
            running averages accumulated in training. ``"batch"``: every
            forward normalises with its own batch's statistics (as in training;
            the output then depends on the batch size).
        device: where the copy lives (default: G's device).

    Returns:
        The copy, in eval mode, with ``requires_grad=False``; its
        ``fid_mode`` attribute records the settings.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    if bn_mode == "prior" and (int(bn_samples) < 1 or int(bn_batch_size) < 2):
        raise ValueError(f"bn_samples must be >= 1 and bn_batch_size >= 2 (BatchNorm needs a batch), got "
                         f"{bn_samples} and {bn_batch_size}")
    device = torch.device(device) if device is not None else next(G.parameters()).device
    G_eval = copy.deepcopy(G).to(device)
    for p in G_eval.parameters():
        p.grad = None
        p.requires_grad_(False)
    if bn_mode == "prior":
        torch.optim.swa_utils.update_bn(
            _prior_batches(int(G.z_dim), int(bn_samples), int(bn_batch_size), int(bn_seed), device), G_eval)
    elif bn_mode == "batch":
        for bn in _bn_layers(G_eval):  # no running statistics: BatchNorm uses batch statistics in eval mode too
            bn.track_running_stats = False
            bn.running_mean = bn.running_var = bn.num_batches_tracked = None
    G_eval.eval()
    G_eval.fid_mode = _mode_settings(bn_mode, bn_samples, bn_batch_size, bn_seed)
    return G_eval


@contextlib.contextmanager
def generator_eval_mode(G: nn.Module, *, bn_mode: str = FID_PROTOCOL["bn_mode"],
                        bn_samples: int = FID_PROTOCOL["bn_samples"],
                        bn_batch_size: int = FID_PROTOCOL["bn_batch_size"],
                        bn_seed: int = FID_PROTOCOL["bn_seed"]):
    """``with generator_eval_mode(G): G(z)`` runs G itself in the protocol's mode; restored on exit.

    Inside the block G is in eval mode and its BatchNorm layers hold the
    statistics :func:`generator_for_evaluation` computes (or none, for
    ``bn_mode="batch"``); on exit G's own running statistics, flags and mode
    come back, so training can continue. Yields G.
    """
    prepared = generator_for_evaluation(G, bn_mode=bn_mode, bn_samples=bn_samples, bn_batch_size=bn_batch_size,
                                        bn_seed=bn_seed)
    names = ("running_mean", "running_var", "num_batches_tracked")
    layers = list(zip(_bn_layers(G), _bn_layers(prepared)))
    saved = [(bn.track_running_stats, [getattr(bn, n) for n in names]) for bn, _ in layers]
    was_training = G.training
    try:
        for bn, ready in layers:
            bn.track_running_stats = ready.track_running_stats
            for n in names:
                setattr(bn, n, getattr(ready, n))
        G.eval()
        yield G
    finally:
        for (bn, _), (track, buffers) in zip(layers, saved):
            bn.track_running_stats = track
            for n, value in zip(names, buffers):
                setattr(bn, n, value)
        G.train(was_training)


def _in_mode(G: nn.Module, mode: dict[str, Any], device=None) -> nn.Module:
    """G if it is already a :func:`generator_for_evaluation` copy with these settings, else such a copy."""
    same_device = device is None or next(G.parameters()).device == torch.device(device)
    if getattr(G, "fid_mode", None) == mode and same_device:
        return G
    return generator_for_evaluation(G, device=device, **mode)


def _mode_settings(bn_mode: str, bn_samples: int, bn_batch_size: int, bn_seed: int) -> dict[str, Any]:
    if bn_mode != "prior":
        return {"bn_mode": bn_mode}
    return {"bn_mode": bn_mode, "bn_samples": int(bn_samples), "bn_batch_size": int(bn_batch_size),
            "bn_seed": int(bn_seed)}


def reconstruct(G: nn.Module, E: nn.Module, images: torch.Tensor, *, batch_size: int = 256,
                bn_mode: str = FID_PROTOCOL["bn_mode"], bn_samples: int = FID_PROTOCOL["bn_samples"],
                bn_batch_size: int = FID_PROTOCOL["bn_batch_size"],
                bn_seed: int = FID_PROTOCOL["bn_seed"]) -> torch.Tensor:
    """Reconstructions G(E(x)) (Figure 2) with G in the FID protocol's mode.

    Args:
        G: the run's generator (or a :func:`generator_for_evaluation` copy,
            used as is when its settings match).
        E: the run's encoder (no BatchNorm; run in eval mode and restored).
        images: uint8 or [0, 1] float ``(N, 3, H, W)``.
        batch_size: images per forward pass.
        bn_mode, bn_samples, bn_batch_size, bn_seed: as in :func:`generator_for_evaluation`.

    Returns:
        ``(N, 3, H, W)`` float images in [0, 1] on the CPU.
    """
    device = next(E.parameters()).device
    G_eval = _in_mode(G, _mode_settings(bn_mode, bn_samples, bn_batch_size, bn_seed), device)
    x = torch.as_tensor(images)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    was_training = E.training
    E.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                out.append(G_eval(E(x[start:start + batch_size].to(device))).float().cpu())
    finally:
        E.train(was_training)
    return torch.cat(out) if out else x.new_zeros((0, *x.shape[1:]))


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
        torch.hub.download_url_to_file(URL_INCEPTION_V3, str(path), hash_prefix=real_inception_hash_prefix(),
                                       progress=verbose)
    except Exception as exc:  # URLError, HTTPError, socket errors, a corrupt download (hash mismatch), ...
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


def real_inception_hash_prefix() -> str:
    """The sha256 prefix of torch-fidelity's real Inception weights, read from torch-fidelity's source.

    torch-fidelity downloads ``weights-inception-2015-12-05-6726825d.pth``;
    by torch.hub's naming convention the hex digits after the last ``-`` are
    the start of the file's sha256 (``torch.hub.load_state_dict_from_url``
    verifies them with ``check_hash=True``). The full sha256 of that file is
    ``6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2`` by
    public records; only the prefix can be checked against torch-fidelity
    itself, so the prefix (32 bits) is what decides ``real_inception``.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    match = torch.hub.HASH_REGEX.search(os.path.basename(URL_INCEPTION_V3))
    if match is None or len(match.group(1)) < 8:
        raise RuntimeError(f"torch-fidelity's weights URL {URL_INCEPTION_V3!r} carries no sha256 tag; "
                           "csigen cannot tell real Inception weights from others with this version")
    return match.group(1)


def is_real_inception(sha256: str) -> bool:
    """Whether a weights file with this sha256 is torch-fidelity's real Inception (pt_inception-2015-12-05)."""
    return sha256.lower().startswith(real_inception_hash_prefix())


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of_file(path) -> str:
    """Hex sha256 of a file (cached per path, size and modification time)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


def make_offline_inception_weights(path, seed: int = 0) -> Path:
    """Write a *randomly initialised* torch-fidelity Inception-v3 state dict to ``path``.

    For tests and offline demos only: passing the file as ``weights_path``
    runs torch-fidelity's real code path with no download (FID of a set with
    itself is ~0, of different sets > 0), but the numbers it gives are **not
    FIDs** and must never be reported as such (its sha256 is not the real
    one, so run records mark them ``"not_a_fid": true``).

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
            f"(the protocol uses {DEFAULT_NUM_SAMPLES} generated images vs the class's training images)",
            stacklevel=3,
        )


def _fidelity_device(device):
    """The context torch-fidelity runs in: ``device`` (None: the CPU) made CUDA's current device.

    torch-fidelity moves its models and batches with a bare ``.cuda()``, i.e. to the current
    device: without this, ``cuda:1`` would compute on cuda:0 (perhaps beside another run).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


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
    with _fidelity_device(device):
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
    bn_mode: str = FID_PROTOCOL["bn_mode"],
    bn_samples: int = FID_PROTOCOL["bn_samples"],
    bn_batch_size: int = FID_PROTOCOL["bn_batch_size"],
    bn_seed: int = FID_PROTOCOL["bn_seed"],
) -> float:
    """FID between ``num_samples`` images of ``G`` and ``reference_images`` (lower is better).

    G is measured in the protocol's mode (:func:`generator_for_evaluation`):
    a copy with BatchNorm statistics re-estimated on prior samples, in eval
    mode; ``G`` itself is not changed.

    Args:
        G: a generator with ``z_dim`` and ``forward(z) -> (B, 3, H, W)`` in [0, 1]
            (:class:`csigen.models.Generator`).
        reference_images: uint8 ``(N, 3, H, W)`` tensor (the protocol: every
            training image of the inlier class, see :func:`fid_of_run`), a
            Dataset of uint8 ``(3, H, W)`` tensors, or a torch-fidelity dataset
            name such as ``"cifar10-train"``.
        num_samples: generated samples (5,000 by default; fewer are biased upwards).
        batch_size: images per Inception forward pass.
        device: where G and Inception run; default G's device. A CUDA device
            runs them on the GPU (torch-fidelity's ``cuda=True``, which uses
            the current CUDA device); anything else on the CPU.
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
        bn_mode, bn_samples, bn_batch_size, bn_seed: G's mode, see
            :func:`generator_for_evaluation` (defaults: the protocol's).

    Raises:
        InceptionWeightsUnavailable (a RuntimeError): no weights and no internet.
    """
    from torch_fidelity import GenerativeModelModuleWrapper

    if isinstance(reference_images, torch.Tensor):
        _check_count("the reference images", reference_images.shape[0], feature_layer)
    _check_count("the generated samples", int(num_samples), feature_layer)
    device = torch.device(device) if device is not None else next(G.parameters()).device
    run_device = device if device.type == "cuda" else torch.device("cpu")
    G_eval = _in_mode(G, _mode_settings(bn_mode, bn_samples, bn_batch_size, bn_seed), run_device)
    wrapped = GenerativeModelModuleWrapper(UInt8Generator(G_eval), int(G.z_dim), "normal", 0, make_eval=True)
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

    Used for the FID of reconstructions ``G(E(x))`` (:func:`reconstruct`)
    against ``x`` and for sanity checks (a set against itself gives ~0).
    ``device`` defaults to the CPU; the other arguments are as in
    :func:`fid_of_generator`.
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


# ----------------------------------------------------------------------------
# G snapshots: G's state_dict every k training steps
# ----------------------------------------------------------------------------
_SNAPSHOT_RE = re.compile(r"^step_(\d+)\.pt$")


def g_snapshot_path(run_dir, step: int) -> Path:
    """``run_dir/g_snapshots/step_<NNNNNN>.pt``."""
    return Path(run_dir) / G_SNAPSHOT_DIR / f"step_{int(step):06d}.pt"


def list_g_snapshots(run_dir) -> dict[int, Path]:
    """The G snapshots of a run, ``{step: path}`` in increasing step order (empty if none)."""
    folder = Path(run_dir) / G_SNAPSHOT_DIR
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = _SNAPSHOT_RE.match(path.name)
            if match:
                found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def save_g_snapshot(G: nn.Module, path) -> Path:
    """Write G's ``state_dict`` (CPU copies, contiguous) atomically to ``path``; nothing else is stored."""
    from csigen.checkpoint import atomic_write_bytes

    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in G.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_g_snapshot(path) -> dict[str, torch.Tensor]:
    """A snapshot's G ``state_dict`` (on the CPU), loaded with ``weights_only=True``."""
    from csigen.checkpoint import CheckpointError

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"G snapshot {str(path)!r} cannot be read ({type(exc).__name__}: {exc}); "
                              "delete it (the run's other snapshots and checkpoint are unaffected)") from exc


def _remove_snapshots_after(run_dir, step: int) -> None:
    for s, path in list_g_snapshots(run_dir).items():
        if s > step:
            path.unlink(missing_ok=True)


def maybe_save_g_snapshot(trainer) -> Path | None:
    """Called by :meth:`csigen.train.Trainer.fit` after every step: G's weights every k steps.

    With ``config.g_snapshot_every_steps = k`` (``None``: never; variants
    without G and trainers without ``out_dir``: never) G's ``state_dict`` is
    written to ``out_dir/g_snapshots/step_<NNNNNN>.pt`` when ``trainer.step``
    (steps done) is a multiple of k. The final G is in ``checkpoint.pt`` (``weights.pt`` once finished).

    Resume: snapshots up to the step training resumes from are kept; any
    snapshot of a later step belongs to an abandoned timeline (a restart, a
    resume from an earlier checkpoint, a rollback) and is deleted the first
    time this runs for a trainer, and whenever a snapshot is written, so the
    folder always describes the run that continues.
    """
    every = getattr(trainer.config, "g_snapshot_every_steps", None)
    G = trainer.nets.G
    if not every or G is None or trainer.out_dir is None:
        return None
    if not getattr(trainer, "_g_snapshots_pruned", False):
        _remove_snapshots_after(trainer.out_dir, trainer.step - 1)
        trainer._g_snapshots_pruned = True
    if trainer.step % int(every):
        return None
    path = save_g_snapshot(G, g_snapshot_path(trainer.out_dir, trainer.step))
    _remove_snapshots_after(trainer.out_dir, trainer.step)
    return path


# ----------------------------------------------------------------------------
# FID of a run folder: fid.json and fid_records.json
# ----------------------------------------------------------------------------
def _protocol_name(bn_mode, bn_samples, bn_batch_size, bn_seed, feature_layer) -> str:
    """The protocol's name, with every deviation from it listed (samples and reference are recorded apart)."""
    used = {"bn_mode": bn_mode, "feature_layer": str(feature_layer)}
    if bn_mode == "prior":
        used |= {"bn_samples": int(bn_samples), "bn_batch_size": int(bn_batch_size), "bn_seed": int(bn_seed)}
    changed = [f"{k}={v}" for k, v in used.items() if FID_PROTOCOL[k] != v]
    return FID_PROTOCOL["name"] + (f" (modified: {', '.join(changed)})" if changed else "")


def _load_run(run_dir: Path):
    from csigen.checkpoint import load_checkpoint
    from csigen.config import TrainConfig
    from csigen.disk import has_run_weights, run_weights_file

    if not has_run_weights(run_dir):
        raise FileNotFoundError(
            f"no checkpoint.pt or weights.pt in {str(run_dir)!r}: FID needs a trained csi+g or full run "
            "(`python -m csigen train --variant full ... --out DIR`); check the folder")
    state = load_checkpoint(run_weights_file(run_dir), map_location="cpu")  # checkpoint.pt, else weights.pt
    config = TrainConfig.from_dict(state["config"])
    if not config.uses_generator:
        raise ValueError(
            f"run {str(run_dir)!r} is variant {config.variant!r}, which has no generator G: FID measures G, so "
            "it needs a 'csi+g' or 'full' run")
    return state, config


def _reference_for_run(config, reference: str, max_reference: int | None, seed: int) -> dict[str, Any]:
    """The run's reference: ``images`` (uint8), ``description``, ``image_size`` and ``inlier_name``."""
    from csigen import data as D

    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    common = {"root": config.data_root, "download": config.download, "seed": config.seed,
                  "cifar100_superclasses": config.cifar100_superclasses}
    if reference == "all-train":
        names = D.class_names(config.dataset, root=config.data_root,
                              cifar100_superclasses=config.cifar100_superclasses)
        tasks = [D.load_task(config.dataset, c, max_train=None, max_test=len(names), **common)
                 for c in range(len(names))]
        task, images = tasks[0], torch.cat([t.train_images for t in tasks])
        what = f"training images of every {config.dataset} class"
    else:
        task = D.load_task(config.dataset, config.inlier, max_train=None,
                           max_test=config.max_test if reference == "train" else None, **common)
        images = reference_images(task, reference)
        split = "training" if reference == "train" else "test"
        what = f"{split} images of {config.dataset} class {task.inlier_name!r}"
    description = f"{images.shape[0]} {what}"
    if max_reference is not None and max_reference < images.shape[0]:
        keep = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(int(seed)))[:max_reference]
        description = f"{max_reference} of the {description} (seeded random subset)"
        images = images[keep.sort().values]
    return {"images": images, "description": description, "image_size": task.image_size,
            "inlier_name": task.inlier_name}


def _read_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / FID_RECORDS_FILE
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text())["records"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{str(path)!r} is not a csigen FID record file ({exc}); move it away and re-run") from exc


def load_fid_records(run_dir) -> list[dict[str, Any]]:
    """Every FID measurement stored for a run (``fid_records.json``), oldest first; ``[]`` if none."""
    return _read_records(Path(run_dir))


def describe_fid(record: dict[str, Any]) -> str:
    """One line for a stored record that says whether it is a FID (only real Inception values are)."""
    where = f"{record.get('variant')} G at step {record.get('step')} ({record.get('source')})"
    setting = (f"{record.get('samples')} samples vs {record.get('reference_description')}, "
               f"protocol {record.get('protocol')}")
    if record.get("not_a_fid", True) or not record.get("real_inception", False):
        return (f"NOT a FID: {record['fid']:.4g} measured with Inception weights that are not torch-fidelity's "
                f"real pt_inception-2015-12-05 (sha256 {str(record.get('weights_sha256'))[:12]}...): {where}; "
                f"{setting}")
    return f"FID {record['fid']:.2f}: {where}; {setting}"


def fid_of_run(run_dir, *, step: int | None = None, samples: int = DEFAULT_NUM_SAMPLES,
               reference: str = FID_PROTOCOL["reference"], max_reference: int | None = None,
               weights_path=None, device: str = "auto", seed: int = 0, batch_size: int = 100,
               feature_layer: str = DEFAULT_FEATURE_LAYER, bn_mode: str = FID_PROTOCOL["bn_mode"],
               bn_samples: int = FID_PROTOCOL["bn_samples"], bn_batch_size: int = FID_PROTOCOL["bn_batch_size"],
               bn_seed: int = FID_PROTOCOL["bn_seed"], force: bool = False, verbose: bool = False,
               _reference=None) -> dict[str, Any]:
    """FID of a ``csi+g`` or ``full`` run's G under :data:`FID_PROTOCOL`; stored in the run's records.

    Args:
        run_dir: a run folder written by ``csigen train`` / :func:`csigen.train.run`.
        step: ``None`` measures the run's G (``checkpoint.pt``, or ``weights.pt`` of a slim finished run; written
            to ``fid.json``); an int measures ``g_snapshots/step_<step>.pt``.
        samples: generated samples (protocol: 5,000).
        reference: ``"train"`` (protocol: every training image of the inlier
            class), ``"test"`` (its test images) or ``"all-train"`` (every
            class's training images).
        max_reference: use a seeded random subset of at most this many
            reference images (smoke tests; the record says so).
        weights_path: Inception weights (default ``$CSIGEN_FID_WEIGHTS`` or
            torch-fidelity's, downloaded once). Weights other than the real
            ones give a record with ``"not_a_fid": true``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        seed: torch-fidelity's ``rng_seed`` (latents) and the reference subset's seed.
        feature_layer: ``"2048"`` (FID); ``"64"`` only with non-real weights (tests).
        bn_mode, bn_samples, bn_batch_size, bn_seed: G's mode (defaults: the protocol).
        force: measure again even if an identical measurement is stored.

    Returns:
        The record: ``fid``, ``not_a_fid``, ``real_inception``, ``samples``,
        ``reference``, ``reference_description``, ``reference_size``,
        ``weights_sha256``, ``protocol`` (name, with deviations listed),
        ``protocol_details``, ``step``, ``source``, ``schema_version`` and
        provenance (run, variant, dataset, inlier, preset, device, seconds,
        date, versions). Written atomically to ``fid_records.json`` (all
        measurements) and, for ``step=None``, to ``fid.json``.

    Raises:
        ValueError: a ``csi`` run (no G), bad arguments, or ``feature_layer``
            other than ``"2048"`` with the real weights (that would be stored
            as a FID without being one).
        FileNotFoundError: no checkpoint or no such snapshot.
        InceptionWeightsUnavailable: no weights and no internet.
    """
    from csigen import __version__, models
    from csigen.checkpoint import atomic_write_json, check_writable
    from csigen.train import resolve_device

    run_dir = Path(run_dir)
    if int(samples) < 2:
        raise ValueError(f"samples must be at least 2, got {samples}")
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if max_reference is not None and max_reference < 2:
        raise ValueError(f"max_reference must be at least 2 (or None: every reference image), got {max_reference}")
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    state, config = _load_run(run_dir)
    if step is None:
        from csigen.disk import run_weights_file

        g_state, g_step, source = state["nets"]["G"], int(state["step"]), run_weights_file(run_dir).name
    else:
        path = g_snapshot_path(run_dir, step)
        if not path.exists():
            have = list(list_g_snapshots(run_dir))
            raise FileNotFoundError(
                f"no G snapshot for step {step} in {str(run_dir)!r} (snapshots: {have or 'none'}; they are written "
                "every g_snapshot_every_steps steps when that config field is set)")
        g_state, g_step, source = load_g_snapshot(path), int(step), path.relative_to(run_dir).as_posix()
    weights = _resolve_weights(weights_path, verbose)
    sha = sha256_of_file(weights)
    real = is_real_inception(sha)
    feature_layer = str(feature_layer)
    if real and feature_layer != DEFAULT_FEATURE_LAYER:
        raise ValueError(f"feature_layer={feature_layer!r} with the real Inception weights is not a FID; use "
                         f"{DEFAULT_FEATURE_LAYER!r} (other layers are for tests with random weights)")
    protocol = _protocol_name(bn_mode, bn_samples, bn_batch_size, bn_seed, feature_layer)
    key = {"source": source, "step": g_step, "samples": int(samples), "reference": reference,
           "max_reference": max_reference, "weights_sha256": sha, "feature_layer": feature_layer,
           "protocol": protocol, "seed": int(seed)}
    records = _read_records(run_dir)
    stored = [r for r in records if all(r.get(k) == v for k, v in key.items())]
    if stored and not force:
        record = stored[-1]
    else:
        ref = _reference() if _reference is not None else _reference_for_run(config, reference, max_reference, seed)
        images = ref["images"]
        dev = resolve_device(device)
        G = models.Generator(z_dim=config.z_dim, channels=config.g_channels, image_size=ref["image_size"])
        G.load_state_dict(g_state)
        t0 = time.perf_counter()
        value = fid_of_generator(G.to(dev), images, num_samples=int(samples), batch_size=batch_size, device=dev,
                                 seed=seed, weights_path=weights, verbose=verbose, feature_layer=feature_layer,
                                 bn_mode=bn_mode, bn_samples=bn_samples, bn_batch_size=bn_batch_size,
                                 bn_seed=bn_seed)
        import torch_fidelity

        details = {k: v for k, v in FID_PROTOCOL.items() if bn_mode == "prior" or not k.startswith("bn_")}
        details |= _mode_settings(bn_mode, bn_samples, bn_batch_size, bn_seed) | {"feature_layer": feature_layer}
        record = {
            "fid": value,
            "not_a_fid": not real,
            "real_inception": real,
            **key,
            "reference_description": ref["description"],
            "reference_size": int(images.shape[0]),
            "protocol_details": details,
            "weights_path": str(weights),
            "finished_run": int(state["step"]) >= int(state.get("total_steps", state["step"])),
            "run": str(run_dir),
            "dataset": config.dataset,
            "inlier": str(config.inlier),
            "inlier_name": ref["inlier_name"],
            "variant": config.variant,
            "preset": config.preset,
            "run_seed": config.seed,
            "device": str(dev),
            "seconds": time.perf_counter() - t0,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "csigen_version": __version__,
            "torch_fidelity_version": torch_fidelity.__version__,
            "schema_version": FID_SCHEMA_VERSION,
        }
        check_writable(run_dir)
        records = [r for r in records if not all(r.get(k) == v for k, v in key.items())] + [record]
        atomic_write_json(run_dir / FID_RECORDS_FILE, {"schema_version": FID_SCHEMA_VERSION, "records": records})
    if step is None:
        atomic_write_json(run_dir / FID_FILE, record)
    return record


def fid_over_training(run_dir, *, include_final: bool = True, **kwargs):
    """FID of every G snapshot of a run (and of the final G), as a pandas DataFrame, one row per step.

    Each measurement goes through :func:`fid_of_run` (same arguments), so it is
    stored in ``fid_records.json`` and answered from there when repeated; the
    reference is loaded once. The final G (``checkpoint.pt`` or ``weights.pt``) is added when
    its step has no snapshot. Columns: step, fid, not_a_fid, real_inception,
    source, samples, reference_size, protocol.
    """
    import pandas as pd

    run_dir = Path(run_dir)
    state, config = _load_run(run_dir)
    snapshots = list(list_g_snapshots(run_dir))
    final = include_final and int(state["step"]) not in snapshots
    if not snapshots and not final:
        raise FileNotFoundError(f"no G snapshots in {str(run_dir)!r}: set g_snapshot_every_steps when training")
    reference = functools.lru_cache(maxsize=1)(functools.partial(
        _reference_for_run, config, kwargs.get("reference", FID_PROTOCOL["reference"]),
        kwargs.get("max_reference"), kwargs.get("seed", 0)))  # loaded once, and only if something is measured
    rows = [fid_of_run(run_dir, step=step, _reference=reference, **kwargs)
            for step in snapshots + ([None] if final else [])]
    columns = ["step", "fid", "not_a_fid", "real_inception", "source", "samples", "reference_size", "protocol"]
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)


# ----------------------------------------------------------------------------
# Notebook helpers (notebook 06): features once, the Fréchet distance, its bias with few samples,
# the snapshot cadence and the weights a notebook measures with
# ----------------------------------------------------------------------------
def inception_features(images, *, weights_path=None, feature_layer: str = DEFAULT_FEATURE_LAYER,
                       batch_size: int = 100, device=None, verbose: bool = False) -> torch.Tensor:
    """The features FID compares: torch-fidelity's ``inception-v3-compat`` extractor on uint8 images.

    The same pipeline :func:`fid_between` runs (uint8 -> 299x299 TF1-compatible
    resize -> Inception-v3 -> the ``feature_layer`` features), returned instead of
    reduced to a number, so one pass serves many distances (:func:`frechet_distance`,
    :func:`fid_sample_size_bias`).

    Args:
        images: uint8 (or [0, 1] float) ``(N, 3, H, W)``.
        weights_path: Inception weights (default ``$CSIGEN_FID_WEIGHTS`` or
            torch-fidelity's, downloaded once).
        feature_layer: ``"2048"`` (FID's pool features) or a test layer such as ``"64"``.
        batch_size: images per forward pass.
        device: ``"cuda[:N]"`` runs on the GPU; anything else (default) on the CPU.

    Returns:
        ``(N, d)`` float features on the CPU (d = 2048 for the default layer).
    """
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    weights = _resolve_weights(weights_path, verbose)
    cuda = device is not None and torch.device(device).type == "cuda"
    layer = str(feature_layer)
    dataset = UInt8ImageDataset(images)
    if len(dataset) < 1:
        raise ValueError("inception_features needs at least one image")
    with _fidelity_device(device):
        extractor = create_feature_extractor("inception-v3-compat", [layer], cuda=cuda, verbose=verbose,
                                             feature_extractor_weights_path=str(weights))
        features = get_featuresdict_from_dataset(dataset, extractor, int(batch_size), cuda, True, verbose)
    return features[layer].cpu()


def frechet_distance(features_a, features_b) -> float:
    """The Fréchet distance between Gaussian fits of two feature sets; FID for Inception pool features.

    ``FID = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` (Heusel et
    al. 2017), with ``mu`` the mean and ``S`` the (unbiased) covariance of each
    set. Computed by torch-fidelity's own functions (``fid_features_to_statistics``,
    ``fid_statistics_to_metric``), so it equals :func:`fid_between` on the images
    whose :func:`inception_features` these are.

    Args:
        features_a: ``(N_a, d)`` features, ``N_a >= 2``.
        features_b: ``(N_b, d)`` features, ``N_b >= 2``, the same ``d``.
    """
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    stats = []
    for name, f in (("features_a", features_a), ("features_b", features_b)):
        f = torch.as_tensor(f).detach().cpu().double()
        if f.dim() != 2 or f.shape[0] < 2:
            raise ValueError(f"{name} must be (N, d) with N >= 2 (a covariance needs two samples), got "
                             f"shape {tuple(f.shape)}")
        stats.append(fid_features_to_statistics(f))
    if stats[0]["mu"].shape != stats[1]["mu"].shape:
        raise ValueError(f"the feature sets differ in dimension: {stats[0]['mu'].shape[0]} vs "
                         f"{stats[1]['mu'].shape[0]} (use the same feature_layer for both)")
    return float(fid_statistics_to_metric(stats[0], stats[1], False)["frechet_inception_distance"])


def fid_sample_size_bias(features, counts, *, repeats: int = 3, seed: int = 0):
    """FID's bias with few samples: the distance between two disjoint halves of one set, at several counts.

    The two halves are samples of the same distribution, so the true distance
    is 0 and whatever is measured is the estimator's error, which is mostly
    an upward bias that shrinks as the count grows. For each repeat ``r`` a
    permutation (seeded by ``(seed, r)``) splits ``features`` into halves A and
    B; for each ``n`` in ``counts``, ``frechet_distance(A[:n], B[:n])``.

    Args:
        features: ``(N, d)`` features of one image set (:func:`inception_features`).
        counts: sample counts per half, each in ``[2, N // 2]``.
        repeats: random splits per count.

    Returns:
        A pandas DataFrame with columns ``samples``, ``repeat`` and ``fid``, one
        row per count and repeat.
    """
    import pandas as pd

    f = torch.as_tensor(features).detach().cpu()
    half = f.shape[0] // 2
    counts = [int(n) for n in counts]
    if not counts or min(counts) < 2 or max(counts) > half:
        raise ValueError(f"counts must lie in [2, {half}] (half of the {f.shape[0]} feature rows), got {counts}")
    if int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rows = []
    for r in range(int(repeats)):
        perm = torch.randperm(f.shape[0], generator=torch.Generator().manual_seed(int(seed) * 1000 + r))
        a, b = f[perm[:half]], f[perm[half:2 * half]]
        rows += [{"samples": n, "repeat": r, "fid": frechet_distance(a[:n], b[:n])} for n in counts]
    return pd.DataFrame(rows, columns=["samples", "repeat", "fid"])


def g_snapshot_every(config, n_train: int, snapshots: int) -> int | None:
    """The ``g_snapshot_every_steps`` that spreads ``snapshots`` G snapshots over a run of ``config``.

    The run's length is :class:`csigen.train.Trainer`'s: ``epochs`` x
    ``n_train // min(batch_size, n_train)`` steps, at most ``max_steps``.
    Returns ``ceil(total / snapshots)`` (the last snapshot falls on the final
    step when it divides evenly), or None for ``snapshots == 0`` (no snapshots).
    """
    if isinstance(snapshots, bool) or not isinstance(snapshots, int) or snapshots < 0:
        raise ValueError(f"snapshots must be a non-negative integer (0: none), got {snapshots!r}")
    if snapshots == 0:
        return None
    if int(n_train) < 1:
        raise ValueError(f"n_train must be positive, got {n_train}")
    return max(1, math.ceil(config.planned_steps(int(n_train)) / snapshots))


def notebook_weights(folder, *, smoke: bool, verbose: bool = True) -> Path:
    """The Inception weights file a notebook measures with; check it with ``is_real_inception(sha256_of_file(p))``.

    ``$CSIGEN_FID_WEIGHTS`` when set. Otherwise, in smoke mode, a randomly
    initialised file (:func:`make_offline_inception_weights`, written once to
    ``folder/offline-inception.pt``; nothing is downloaded); else torch-fidelity's
    real weights (downloaded once), falling back to the random file when they
    cannot be had (offline), with a printed note. Values measured with the random
    file are not FIDs (:func:`describe_fid` says so).
    """
    env = os.environ.get(ENV_WEIGHTS) or None
    if env is not None:
        return _resolve_weights(env, verbose=False)
    offline = Path(folder) / "offline-inception.pt"
    if not smoke:
        try:
            return _download_default_weights(verbose)
        except InceptionWeightsUnavailable as exc:
            if verbose:
                print(f"The real Inception weights are unavailable ({exc}). Falling back to RANDOM weights: "
                      "every number below is NOT a FID.")
    if not offline.exists():
        make_offline_inception_weights(offline)
    return offline


def run_with_g_snapshots(config, run_dir, *, task=None, replay_dir=None, progress: bool = False) -> Path:
    """A folder holding G snapshots of ``config``'s run, training what is missing; returns the folder.

    ``config.g_snapshot_every_steps`` must be set. ``run_dir`` itself when it
    can have them: a new or interrupted run is trained there by
    :func:`csigen.train.run` (snapshots every k steps), a finished run with
    snapshots is only read. A run that finished *without* snapshots (e.g.
    trained by notebook 02 or 03) cannot grow them afterwards, so its training
    is replayed in ``replay_dir`` (default ``run_dir/../g-snapshots/<name>``):
    the same config and seed (on a CPU the same G, step by step), training only,
    left slim (``weights.pt``). The replay has no ``config.json`` or
    ``result.json``, so :func:`csigen.results.collect` and ``csigen figures``
    never count it as a second run.
    """
    from csigen.disk import CHECKPOINT_FILE, finish_run_files, has_run_weights
    from csigen.train import Trainer, run

    if not getattr(config, "g_snapshot_every_steps", None):
        raise ValueError("config.g_snapshot_every_steps is not set: pass a config with it (e.g. "
                         "make_config(..., g_snapshot_every_steps=k)), or use fid_of_run for the final G only")
    if not config.uses_generator:
        raise ValueError(f"variant {config.variant!r} has no generator G: G snapshots need 'csi+g' or 'full'")
    run_dir = Path(run_dir)
    if not (run_dir / "result.json").exists() or list_g_snapshots(run_dir):
        run(config, run_dir, task=task, progress=progress)
        if list_g_snapshots(run_dir):
            return run_dir
    replay = Path(replay_dir) if replay_dir is not None else run_dir.parent / "g-snapshots" / run_dir.name
    if not has_run_weights(replay) or (replay / CHECKPOINT_FILE).exists():  # new, or interrupted: (re)sume
        trainer = Trainer(config, replay, task=task, progress=progress).fit(resume=True)
        finish_run_files(trainer, replay)
    return replay
