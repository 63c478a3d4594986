"""One-class anomaly-detection tasks: CIFAR-10, CIFAR-100 (20 superclasses),
ImageNet-30, any ImageFolder tree, and a built-in procedural ``shapes`` set.

A *task* is the protocol of CSI (Tack et al., 2020) and of the paper: train on
the images of one class (the *inlier*), test on the whole test split, where the
inlier's test images are positives and every other class is an outlier.

Every loader returns a :class:`OneClassTask` whose images are **uint8 tensors
of shape (N, 3, H, W)** held in memory. :func:`to_float` is the single place
where they become float tensors in [0, 1] (see ``docs/design.md``).

ImageNet-30 follows CSI's data pipeline (alinlab/CSI, ``datasets/datasets.py``,
``get_transform_imagenet`` and ``get_simclr_eval_transform_imagenet``):

* every image is decoded once and resized as torchvision's ``Resize(256)``
  does (PIL bilinear, shorter side 256, aspect ratio kept, the *whole* image);
  those uint8 pixels are kept, ragged, in :class:`FullImages`
  (``task.train_full``, ``task.test_full``; about 3 x 256 x 340 bytes an
  image, e.g. 0.34 GB for a class's 1300 training images and 0.8 GB for the
  3000 test images);
* ``train_images`` / ``test_images`` are CSI's *test* transform,
  ``Resize(256)`` + ``CenterCrop(224)``, sliced from those pixels;
* training (:meth:`OneClassTask.train_view`): each step, each image gets
  ``RandomResizedCrop(224)`` (area 0.08-1, ratio 3/4-4/3, torchvision's box
  law) of the full resized image and a random horizontal flip, made on the
  CPU with PIL from the trainer's seeded generator (exactly CSI's pixels for
  a given box; resumable, device independent), then moved to the device as
  uint8;
* evaluation crops (:meth:`OneClassTask.eval_view`): CSI's ``ood_pre``
  evaluation replaces the centre crop by ``RandomResizedCrop(224,
  scale=(0.54, 0.54))`` + flip of the full image, and its T has no crop of
  its own (``csigen.augment.no_crop_augment``).

For the 32x32 datasets CSI's data side is ``ToTensor()`` only, so the views
are the stored images and T crops on the device.
Chosen over lazy decoding (CSI's DataLoader decodes every JPEG every epoch):
the resized pixels cost a few hundred MB, and a step's crops take
milliseconds on one CPU core. As CSI's step, ``Trainer._batch`` gives each
of an image's two T-views its own data-side crop (``train_view(...,
views=2)``) and the trainer's T has no crop; the evaluation crops each draw
from the full images (``csigen.train.eval_features``). See ``docs/design.md``,
"ImageNet-30 input pipeline".

Quick start::

    from csigen.data import load_task, to_float
    task = load_task("shapes", "circle")          # no download, < 1 s
    task = load_task("cifar10", "airplane")       # torchvision download
    task = load_task("imagefolder", "cat", root="/data/cifar10-jpg")
    print(task.describe())
    x = to_float(task.train_images[:128], device="cuda")

Data roots default to ``$CSIGEN_DATA`` or ``~/.cache/csigen/data``.
"""

from __future__ import annotations

import difflib
import os
import pickle
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_COARSE_CLASSES",
    "CIFAR100_CSI_SUPERCLASS",
    "IMG_EXTENSIONS",
    "SHAPES_CLASSES",
    "DataNotFoundError",
    "FullImages",
    "OneClassTask",
    "UnknownDatasetError",
    "class_names",
    "default_data_root",
    "imagenet_resize_size",
    "list_datasets",
    "load_task",
    "load_task_for",
    "make_shapes",
    "resize_shorter_side",
    "to_float",
]


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class DataNotFoundError(FileNotFoundError):
    """The files of a dataset are not where the loader looked for them.

    The message says where they were expected and how to get them.
    """


class UnknownDatasetError(ValueError):
    """The dataset name is not one of :func:`list_datasets`."""


# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

_DATASETS = ("cifar10", "cifar100", "imagenet30", "imagefolder", "shapes")

# Accepted spellings -> canonical name ("imagenet" is CSI's own name for ImageNet-30).
_ALIASES = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "imagenet30": "imagenet30",
    "imagenet": "imagenet30",
    "imagefolder": "imagefolder",
    "folder": "imagefolder",
    "shapes": "shapes",
}

#: CIFAR-10 classes in the official label order.
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

#: The 20 CIFAR-100 coarse (superclass) names, in the official label order.
CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)

#: CSI's hard-coded grouping of the 100 fine CIFAR-100 labels into 20
#: "superclasses" (data reproduced from alinlab/CSI, ``datasets/datasets.py``,
#: ``CIFAR100_SUPERCLASS``). Row k is the set of fine labels CSI treats as
#: superclass k. It is *not* identical to the official coarse labels: several
#: rows hold a neighbouring fine index (e.g. row 0 has 31 "elephant" where the
#: official "aquatic_mammals" has 30 "dolphin"); the CSI authors acknowledge
#: this in alinlab/CSI issue 21. CSI's Table 1 was computed with this list; the
#: paper says only "the pre-defined superclass" and reuses CSI's 89.6, so
#: csigen presumes it used CSI's list too, the default here for comparability.
CIFAR100_CSI_SUPERCLASS = (
    (4, 31, 55, 72, 95),
    (1, 33, 67, 73, 91),
    (54, 62, 70, 82, 92),
    (9, 10, 16, 29, 61),
    (0, 51, 53, 57, 83),
    (22, 25, 40, 86, 87),
    (5, 20, 26, 84, 94),
    (6, 7, 14, 18, 24),
    (3, 42, 43, 88, 97),
    (12, 17, 38, 68, 76),
    (23, 34, 49, 60, 71),
    (15, 19, 21, 32, 39),
    (35, 63, 64, 66, 75),
    (27, 45, 77, 79, 99),
    (2, 11, 36, 46, 98),
    (28, 30, 44, 78, 93),
    (37, 50, 65, 74, 80),
    (47, 52, 56, 59, 96),
    (8, 13, 48, 58, 90),
    (41, 69, 81, 85, 89),
)

#: Classes of the built-in procedural dataset (see :func:`make_shapes`).
SHAPES_CLASSES = ("circle", "square", "triangle", "cross", "ring", "star", "stripes", "checker")

#: File endings read by the ImageFolder loaders (as torchvision's ImageFolder).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_SHAPES_TRAIN_PER_CLASS = 600
_SHAPES_TEST_PER_CLASS = 200

_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
_IMAGENET30_HELP = (
    "ImageNet-30 (Hendrycks et al., 2019, 'Using self-supervised learning can improve model "
    "robustness and uncertainty') is distributed by https://github.com/hendrycks/ss-ood "
    "(links 'ImageNet-30 train' and 'ImageNet-30 test'; the alinlab/CSI README links the same "
    "files). Extract them so that the layout is\n"
    "    {root}/one_class_train/<class>/*.JPEG\n"
    "    {root}/one_class_test/<class>/*.JPEG\n"
    "(30 class folders in each, CSI's layout), then pass root='{root}' or set CSIGEN_DATA so "
    "that $CSIGEN_DATA/imagenet30 is that folder."
)


# --------------------------------------------------------------------------
# The task object
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FullImages:
    """Images of different sizes in one flat uint8 buffer (the ImageNet-30 store).

    Image ``i`` is ``data[offsets[i] : offsets[i] + h * w * 3]`` in (H, W, 3)
    order (PIL's), with ``(h, w) = sizes[i]``. One buffer, no padding: memory
    is exactly the pixels' bytes (:attr:`nbytes`).

    Attributes:
        data: uint8 ``(total,)``.
        offsets: int64 ``(N,)``, start of each image in ``data``.
        sizes: int64 ``(N, 2)``, ``(height, width)`` of each image.
    """

    data: torch.Tensor = field(repr=False)
    offsets: torch.Tensor = field(repr=False)
    sizes: torch.Tensor = field(repr=False)

    def __post_init__(self) -> None:
        if self.data.dtype != torch.uint8 or self.data.dim() != 1:
            raise TypeError(f"FullImages.data must be a 1-D uint8 tensor, got {self.data.dtype} {tuple(self.data.shape)}")
        if self.sizes.dim() != 2 or self.sizes.shape[1] != 2 or self.offsets.shape != self.sizes.shape[:1]:
            raise ValueError("FullImages needs offsets (N,) and sizes (N, 2)")

    def __len__(self) -> int:
        return int(self.sizes.shape[0])

    def __repr__(self) -> str:
        return f"FullImages({len(self)} images, {self.nbytes / 2**20:.1f} MiB)"

    @property
    def nbytes(self) -> int:
        """Bytes held by the pixels."""
        return int(self.data.numel())

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as a read-only uint8 ``(h, w, 3)`` numpy view (no copy)."""
        h, w = (int(v) for v in self.sizes[i])
        start = int(self.offsets[i])
        view = self.data.numpy()[start:start + h * w * 3].reshape(h, w, 3)
        view.flags.writeable = False
        return view

    def center_crop(self, size: int) -> torch.Tensor:
        """uint8 ``(N, 3, size, size)``: torchvision's ``CenterCrop(size)`` of every image."""
        out = np.empty((len(self), 3, size, size), dtype=np.uint8)
        for i in range(len(self)):
            img = self.image(i)
            h, w = img.shape[:2]
            if h < size or w < size:
                raise ValueError(f"image {i} is {h}x{w}, smaller than the {size}x{size} centre crop")
            top, left = round((h - size) / 2.0), round((w - size) / 2.0)  # torchvision's rounding
            out[i] = img[top:top + size, left:left + size].transpose(2, 0, 1)
        return torch.from_numpy(out)

    def resized_crops(self, indices, boxes, flips, size: int) -> torch.Tensor:
        """uint8 ``(B, 3, size, size)``: crop ``boxes[b]`` of image ``indices[b]``, resized, flipped.

        ``boxes`` is ``(B, 4)`` ``(top, left, height, width)``, ``flips`` bool
        ``(B,)``. Each crop is resized to ``size x size`` by PIL's bilinear
        filter (antialiased) unless it already has that size, then mirrored
        where ``flips``: torchvision's ``RandomResizedCrop(size)`` followed by
        ``RandomHorizontalFlip`` for those parameters, pixel for pixel.
        """
        from PIL import Image

        indices = torch.as_tensor(indices).reshape(-1).tolist()
        boxes = torch.as_tensor(boxes).reshape(-1, 4).tolist()
        flips = torch.as_tensor(flips).reshape(-1).tolist()
        if not len(indices) == len(boxes) == len(flips):
            raise ValueError(f"indices, boxes and flips disagree: {len(indices)}, {len(boxes)}, {len(flips)}")
        for i, (top, left, h, w) in zip(indices, boxes):
            height, width = self.sizes[i].tolist()
            if not (0 <= top and 0 <= left and 0 < h and 0 < w and top + h <= height and left + w <= width):
                raise ValueError(f"box {(top, left, h, w)} does not fit image {i} of size {(height, width)}")
        out = np.empty((len(indices), 3, size, size), dtype=np.uint8)

        def one(b: int) -> None:
            top, left, h, w = boxes[b]
            crop = Image.fromarray(np.ascontiguousarray(self.image(indices[b])[top:top + h, left:left + w]))
            if crop.size != (size, size):
                crop = crop.resize((size, size), Image.BILINEAR)
            arr = np.asarray(crop)
            out[b] = (arr[:, ::-1] if flips[b] else arr).transpose(2, 0, 1)

        if len(indices) >= 16 and (os.cpu_count() or 1) > 1:  # PIL's resize releases the GIL
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                list(pool.map(one, range(len(indices))))
        else:
            for b in range(len(indices)):
                one(b)
        return torch.from_numpy(out)


@dataclass
class OneClassTask:
    """One-class train/test split held in memory as uint8 tensors.

    Attributes:
        dataset: canonical dataset name (see :func:`list_datasets`).
        inlier: index of the inlier class (superclass for CIFAR-100).
        inlier_name: its name.
        class_names: names of all classes, indexed like ``test_labels``.
        train_images: uint8 ``(N, 3, H, W)``, inlier training images only.
        test_images: uint8 ``(M, 3, H, W)``, the whole (possibly subsampled) test split.
        test_labels: int64 ``(M,)``, original class (or superclass) index of each test image.
        image_size: H (= W), the network's input size.
        info: free-form provenance (root, superclass mode, subsampling, ...).
        train_full, test_full: ImageNet-30 only (else ``None``): the same images
            resized as CSI's ``Resize(256)`` (whole image, aspect ratio kept), from
            which :meth:`train_view` and :meth:`eval_view` crop; ``train_images``
            and ``test_images`` are their ``CenterCrop(224)`` (CSI's test transform).
    """

    dataset: str
    inlier: int
    inlier_name: str
    class_names: list[str]
    train_images: torch.Tensor = field(repr=False)
    test_images: torch.Tensor = field(repr=False)
    test_labels: torch.Tensor = field(repr=False)
    image_size: int = 32
    info: dict = field(default_factory=dict, repr=False)
    train_full: FullImages | None = field(default=None, repr=False)
    test_full: FullImages | None = field(default=None, repr=False)

    @property
    def has_full_images(self) -> bool:
        """True when views are cropped from full images on the data side (ImageNet-30).

        Then CSI's T has no crop of its own (``csigen.augment.no_crop_augment``).
        """
        return self.train_full is not None

    def train_view(self, indices, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None, *, views: int = 1,
                   scale: tuple[float, float] | None = None) -> torch.Tensor:
        """CSI's data-side training transform of training images ``indices``, as float in [0, 1].

        ImageNet-30 (:attr:`has_full_images`): ``RandomResizedCrop(image_size)``
        (area 0.08-1, aspect ratio 3/4-4/3) of the full ``Resize(256)`` image and
        ``RandomHorizontalFlip``, drawn from ``generator`` (boxes by
        :func:`csigen.augment.random_resized_crop_boxes`, then flips by
        :func:`csigen.augment.random_flips`, for all ``views * B`` crops at once),
        cropped and resized on the CPU with PIL, moved to ``device`` as uint8.
        Other datasets: the stored images (CSI's data side is ``ToTensor()``);
        nothing is drawn.

        Args:
            indices: ``(B,)`` indices into the training images.
            generator: seeded generator (the trainer passes its augmentation
                generator, so a resumed run draws the same crops); ``None`` uses
                torch's global CPU RNG.
            device: where the result goes (default CPU).
            views: independent views per image, stacked ``[view 1; view 2; ...]``
                (CSI makes two per image, one for each T-view).
            scale: area range of the full-size images' crop (default CSI's
                :data:`csigen.augment.TRAIN_CROP_SCALE`; ``TrainConfig.train_crop_min``).

        Returns:
            float32 ``(views * B, 3, image_size, image_size)`` in [0, 1].
        """
        idx = self._index(indices, self.train_images.shape[0], "train")
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        if self.train_full is None:
            return to_float(self.train_images[idx.to(self.train_images.device)].repeat(views, 1, 1, 1), device)
        from csigen.augment import TRAIN_CROP_SCALE

        crop = TRAIN_CROP_SCALE if scale is None else (float(scale[0]), float(scale[1]))
        return to_float(self._random_crops(self.train_full, idx.repeat(views), crop, generator), device)

    def eval_view(self, indices, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None, *, split: str = "test",
                  scale: float | tuple[float, float] | None = None) -> torch.Tensor:
        """CSI's data-side evaluation transform of ``split`` images ``indices``, as float in [0, 1].

        ImageNet-30: CSI's ``ood_pre`` evaluation (``get_simclr_eval_transform_imagenet``,
        run with ``--resize_fix --resize_factor 0.54``) crops every draw from the
        full ``Resize(256)`` image: ``RandomResizedCrop(image_size, scale=(s, s))``
        with ``s = scale`` (default 0.54, ``csigen.augment.EVAL_CROP_SCALE``; a pair
        gives a range) and a random flip; T then only jitters colours
        (:func:`csigen.augment.no_crop_augment`). CSI applies this to the
        training images too (its score's reference features). Other datasets:
        the stored images (T's 0.54 crop happens on the device); nothing is drawn.

        CSI reseeds its RNG for every image, so all images of one size share the
        R crop boxes; here each image draws its own (the same law per image).

        Returns:
            float32 ``(B, 3, image_size, image_size)`` in [0, 1].
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        images = self.train_images if split == "train" else self.test_images
        full = self.train_full if split == "train" else self.test_full
        idx = self._index(indices, images.shape[0], split)
        if full is None:
            return to_float(images[idx.to(images.device)], device)
        from csigen.augment import EVAL_CROP_SCALE

        s = EVAL_CROP_SCALE if scale is None else scale
        s = (float(s), float(s)) if isinstance(s, (int, float)) else (float(s[0]), float(s[1]))
        return to_float(self._random_crops(full, idx, s, generator), device)

    def _random_crops(self, full: FullImages, idx: torch.Tensor, scale, generator) -> torch.Tensor:
        from csigen.augment import CROP_RATIO, random_flips, random_resized_crop_boxes

        boxes = random_resized_crop_boxes(full.sizes[idx], generator, scale=scale, ratio=CROP_RATIO)
        flips = random_flips(idx.shape[0], generator)
        return full.resized_crops(idx, boxes, flips, self.image_size)

    @staticmethod
    def _index(indices, n: int, split: str) -> torch.Tensor:
        idx = torch.as_tensor(indices).reshape(-1).cpu()
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise TypeError(f"indices must be integers, got {idx.dtype}")
        idx = idx.long()
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"{split} indices must be in 0..{n - 1}, got {idx.min()}..{idx.max()}")
        return idx % n if idx.numel() else idx

    @property
    def test_is_inlier(self) -> torch.Tensor:
        """bool ``(M,)``: True for the inlier class's test images (AUROC label 1)."""
        return self.test_labels == self.inlier

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> str:
        """One-line summary, e.g. for logs and notebook output."""
        n_in = int(self.test_is_inlier.sum())
        n_test = int(self.test_labels.numel())
        extra = ""
        if self.dataset == "cifar100":
            extra = f", superclasses={self.info.get('superclasses', '?')}"
        return (
            f"{self.dataset}: inlier {self.inlier} ({self.inlier_name}) of {self.num_classes} classes; "
            f"train {self.train_images.shape[0]} x 3x{self.image_size}x{self.image_size}; "
            f"test {n_test} ({n_in} inlier / {n_test - n_in} outlier){extra}"
        )

    def __str__(self) -> str:
        return self.describe()


# --------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------


def to_float(images_uint8: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Convert uint8 images to float32 in [0, 1], optionally moving them to ``device``.

    This is the single uint8 -> float conversion of the kit; the transfer happens
    before the conversion, so only the compact uint8 bytes cross the bus.
    """
    if not isinstance(images_uint8, torch.Tensor):
        images_uint8 = torch.as_tensor(np.asarray(images_uint8))
    if images_uint8.dtype != torch.uint8:
        raise TypeError(
            f"to_float expects a uint8 tensor (as stored in OneClassTask), got {images_uint8.dtype}; "
            "images that are already float need no conversion."
        )
    if device is not None:
        images_uint8 = images_uint8.to(device, non_blocking=True)
    return images_uint8.float().div_(255.0)


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_task`."""
    return list(_DATASETS)


def default_data_root() -> Path:
    """``$CSIGEN_DATA`` if set, else ``~/.cache/csigen/data``."""
    return Path(os.environ.get("CSIGEN_DATA") or "~/.cache/csigen/data").expanduser()


def class_names(dataset: str, root: str | os.PathLike | None = None, cifar100_superclasses: str = "csi") -> list[str]:
    """Class names of ``dataset`` in label order.

    For ``imagefolder`` and ``imagenet30`` they are the sorted folder names under
    ``root/<train folder>`` (so ``root`` must exist). For ``cifar100`` both
    superclass modes use the 20 official coarse names.
    """
    ds = _canonical_dataset(dataset)
    _check_superclass_mode(cifar100_superclasses)
    if ds == "cifar10":
        return list(CIFAR10_CLASSES)
    if ds == "cifar100":
        return list(CIFAR100_COARSE_CLASSES)
    if ds == "shapes":
        return list(SHAPES_CLASSES)
    if ds == "imagenet30":
        base = _imagenet30_root(root)
        _check_imagenet30_layout(base)
        return _folder_classes(base / "one_class_train", ds)
    base = _imagefolder_root(root)
    _check_imagefolder_layout(base)
    return _folder_classes(base / "train", ds)


# --------------------------------------------------------------------------
# load_task
# --------------------------------------------------------------------------


def load_task(
    dataset: str,
    inlier: int | str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = True,
    cifar100_superclasses: str = "csi",
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> OneClassTask:
    """Load the one-class task of ``dataset`` with inlier class ``inlier``.

    Args:
        dataset: one of :func:`list_datasets` (case-insensitive; ``-``/``_`` ignored;
            ``"imagenet"`` is accepted for ImageNet-30 as in CSI).
        inlier: class index, or class name (case-insensitive).
        root: data folder. ``cifar10``/``cifar100``: the torchvision root that holds
            ``cifar-10-batches-py`` / ``cifar-100-python`` (default
            :func:`default_data_root`). ``imagenet30``: the folder that holds
            ``one_class_train`` and ``one_class_test`` (default
            ``default_data_root()/imagenet30``). ``imagefolder``: required, a folder
            with ``train/<class>/`` and ``test/<class>/``. Unused by ``shapes``.
        download: CIFAR only: download through torchvision when missing.
        cifar100_superclasses: ``"csi"`` (default) groups the 100 fine labels by CSI's
            hard-coded list :data:`CIFAR100_CSI_SUPERCLASS`, which is what CSI's CIFAR-100
            numbers use (and, presumably, the paper's: it says only "the pre-defined
            superclass"); ``"torchvision"`` uses the official
            ``coarse_labels`` stored in the CIFAR-100 pickle files. The two differ
            because CSI's list has wrong entries (a known bug, alinlab/CSI issue 21).
        max_train: keep at most this many training images (seeded random subset, kept in
            file order). For ``shapes`` it is the number generated (default 600).
        max_test: keep at most this many test images, stratified per class (seeded).
            For ``shapes`` it is the total generated (default 200 per class).
        seed: seed of the subsampling (and of the ``shapes`` generator).
        image_size: output side. Defaults: 32 (CIFAR, shapes, imagefolder), 224
            (imagenet30). ImageFolder images of another size are resized (with the
            default size a warning gives their count). ImageNet-30 images are resized as CSI's
            ``Resize(256)`` (shorter side ``round(256/224 * image_size)``, whole image, kept in
            ``task.train_full`` / ``task.test_full``); ``train_images`` / ``test_images`` are their
            ``CenterCrop(image_size)``, and training crops come from the whole image
            (:meth:`OneClassTask.train_view`, see the module docstring).

    Raises:
        UnknownDatasetError: unknown ``dataset``.
        ValueError: unknown class name or index out of range, bad option values.
        DataNotFoundError: data files missing (message says where to put them).
    """
    ds = _canonical_dataset(dataset)
    _check_superclass_mode(cifar100_superclasses)
    for name, value in (("max_train", max_train), ("max_test", max_test), ("image_size", image_size)):
        if value is not None and (not _is_int(value) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    if ds == "shapes":
        return _load_shapes(inlier, max_train, max_test, seed, image_size or 32)
    if ds in ("cifar10", "cifar100"):
        return _load_cifar(ds, inlier, root, download, cifar100_superclasses, max_train, max_test, seed,
                           image_size)
    if ds == "imagenet30":
        base = _imagenet30_root(root)
        _check_imagenet30_layout(base)
        return _load_folder_task(ds, inlier, base, "one_class_train", "one_class_test", max_train, max_test,
                                 seed, image_size or 224, full_images=True)
    base = _imagefolder_root(root)
    _check_imagefolder_layout(base)
    return _load_folder_task(ds, inlier, base, "train", "test", max_train, max_test, seed,
                             image_size or 32, full_images=False, explicit_size=image_size is not None)


def load_task_for(config) -> OneClassTask:
    """The task a run of ``config`` (a :class:`csigen.config.TrainConfig`) trains and is scored on.

    The one place that maps a config's data fields (dataset, inlier, data_root,
    download, max_train, max_test, seed, cifar100_superclasses) onto
    :func:`load_task`; :class:`csigen.train.Trainer` and the notebooks both use it,
    so a notebook always looks at the data its run was trained on.
    """
    return load_task(config.dataset, config.inlier, root=config.data_root, download=config.download,
                     max_train=config.max_train, max_test=config.max_test, seed=config.seed,
                     cifar100_superclasses=config.cifar100_superclasses)


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _canonical_dataset(dataset: str) -> str:
    if not isinstance(dataset, str):
        raise UnknownDatasetError(f"dataset must be a string, one of {', '.join(_DATASETS)}; got {dataset!r}")
    key = dataset.strip().lower().replace("-", "").replace("_", "")
    if key in _ALIASES:
        return _ALIASES[key]
    close = difflib.get_close_matches(key, list(_ALIASES), n=1)
    hint = f" Did you mean '{_ALIASES[close[0]]}'?" if close else ""
    raise UnknownDatasetError(
        f"Unknown dataset {dataset!r}.{hint} Valid choices: {', '.join(_DATASETS)}."
    )


def _check_superclass_mode(mode: str) -> None:
    if mode not in ("csi", "torchvision"):
        raise ValueError(
            f"cifar100_superclasses must be 'csi' (CSI's hard-coded list, the default) or 'torchvision' "
            f"(official coarse labels); got {mode!r}"
        )


def _resolve_inlier(inlier: int | str, names: Sequence[str], dataset: str) -> int:
    n = len(names)
    if _is_int(inlier):
        idx = int(inlier)
        if not 0 <= idx < n:
            raise ValueError(
                f"Inlier index {idx} is out of range for {dataset}: valid indices are 0..{n - 1} "
                f"({n} classes)."
            )
        return idx
    if isinstance(inlier, str):
        text = inlier.strip()
        lowered = [c.lower() for c in names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        if text.lstrip("-").isdigit():
            return _resolve_inlier(int(text), names, dataset)
        close = difflib.get_close_matches(text.lower(), lowered, n=1, cutoff=0.6)
        hint = f" Did you mean '{names[lowered.index(close[0])]}'?" if close else ""
        raise ValueError(
            f"Unknown class {inlier!r} for {dataset}.{hint} Valid names: {', '.join(names)} "
            f"(or an index 0..{n - 1})."
        )
    raise TypeError(f"inlier must be a class index (int) or a class name (str), got {type(inlier).__name__}")


# --------------------------------------------------------------------------
# Subsampling
# --------------------------------------------------------------------------


def _subsample(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded random subset of size min(n, k) (all if k is None)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))


def _stratified_subsample(labels: np.ndarray, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded subset of size min(n, k) with per-class shares kept.

    Each class gets ``floor(k * n_c / n)`` images; the rest go to the classes with
    the largest remainders (lowest class index first on ties).
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if k is None or k >= n:
        return np.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    exact = k * counts / n
    quota = np.floor(exact).astype(np.int64)
    remainder = exact - quota
    order = np.lexsort((classes, -remainder))
    for j in order[: k - int(quota.sum())]:
        quota[j] += 1
    keep = []
    for c, q in zip(classes, quota):
        members = np.flatnonzero(labels == c)
        keep.append(members[np.sort(rng.choice(members.shape[0], size=int(q), replace=False))])
    return np.sort(np.concatenate(keep))


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    return np.random.default_rng([int(seed), 0]), np.random.default_rng([int(seed), 1])


def _resize_tensor(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 (N, 3, H, W) to (N, 3, size, size) (bilinear, antialiased)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                          align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# --------------------------------------------------------------------------


def _cifar_root(root) -> Path:
    return Path(root).expanduser() if root is not None else default_data_root()


def _cifar_missing(ds: str, base: Path, download: bool, cause: BaseException | None = None) -> DataNotFoundError:
    folder = "cifar-10-batches-py" if ds == "cifar10" else "cifar-100-python"
    url = _CIFAR10_URL if ds == "cifar10" else _CIFAR100_URL
    name = "CIFAR-10" if ds == "cifar10" else "CIFAR-100"
    what = (f"the download failed ({type(cause).__name__}: {cause})" if cause is not None and download
            else "download=False")
    return DataNotFoundError(
        f"{name} not found under {base} (expected {base / folder}/) and {what}.\n"
        f"To fix: call load_task('{ds}', ..., download=True) on a machine with internet access "
        f"(torchvision downloads {url}), or download that archive yourself and extract it into {base} so that "
        f"{base / folder} exists. Pass root=... or set the CSIGEN_DATA environment variable to use another "
        f"folder.\nOffline alternative: an ImageFolder copy (train/<class>/*.jpg, test/<class>/*.jpg) loads with "
        f"load_task('imagefolder', inlier, root='/path/to/copy')."
    )


def _load_cifar(ds, inlier, root, download, superclasses, max_train, max_test, seed, image_size) -> OneClassTask:
    names = list(CIFAR10_CLASSES if ds == "cifar10" else CIFAR100_COARSE_CLASSES)
    idx = _resolve_inlier(inlier, names, ds)
    base = _cifar_root(root)
    if ds == "cifar10":
        train_x, train_y, test_x, test_y = _read_cifar10(base, download)
    else:
        train_x, train_y, test_x, test_y = _read_cifar100(base, download, superclasses)

    rng_train, rng_test = _rngs(seed)
    train_x = train_x[train_y == idx]
    train_x = train_x[_subsample(train_x.shape[0], max_train, rng_train)]
    keep = _stratified_subsample(test_y, max_test, rng_test)
    test_x, test_y = test_x[keep], test_y[keep]

    train = torch.from_numpy(np.ascontiguousarray(train_x)).permute(0, 3, 1, 2).contiguous()
    test = torch.from_numpy(np.ascontiguousarray(test_x)).permute(0, 3, 1, 2).contiguous()
    size = image_size or 32
    train, test = _resize_tensor(train, size), _resize_tensor(test, size)
    info = {"root": str(base), "max_train": max_train, "max_test": max_test, "seed": seed}
    if ds == "cifar100":
        info["superclasses"] = superclasses
    return OneClassTask(ds, idx, names[idx], names, train, test,
                        torch.from_numpy(test_y.astype(np.int64)), size, info)


def _read_cifar10(base: Path, download: bool):
    """(train_x NHWC uint8, train_y, test_x, test_y) through torchvision.datasets.CIFAR10."""
    if not download and not (base / "cifar-10-batches-py").is_dir():
        raise _cifar_missing("cifar10", base, download)
    from torchvision.datasets import CIFAR10

    out = []
    for train in (True, False):
        try:
            split = CIFAR10(str(base), train=train, download=download)
        except Exception as err:  # offline download (URLError), corrupt files (RuntimeError), ...
            raise _cifar_missing("cifar10", base, download, err) from err
        out += [np.asarray(split.data, dtype=np.uint8), np.asarray(split.targets, dtype=np.int64)]
    return tuple(out)


def _read_cifar100(base: Path, download: bool, superclasses: str):
    """(train_x NHWC uint8, train_superclass, test_x, test_superclass) from the pickles.

    torchvision's CIFAR100 exposes only fine labels, so the pickle files are read
    here directly (they also hold ``coarse_labels``); torchvision is used only to
    download them.
    """
    folder = base / "cifar-100-python"
    files = [folder / "train", folder / "test"]
    if not all(f.is_file() for f in files):
        if not download:
            raise _cifar_missing("cifar100", base, download)
        from torchvision.datasets import CIFAR100

        try:
            CIFAR100(str(base), train=True, download=True)
        except Exception as err:
            raise _cifar_missing("cifar100", base, download, err) from err
    fine_to_csi = np.full(100, -1, dtype=np.int64)
    for s, row in enumerate(CIFAR100_CSI_SUPERCLASS):
        fine_to_csi[list(row)] = s
    out = []
    for f in files:
        with open(f, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
        x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        if superclasses == "csi":
            y = fine_to_csi[np.asarray(entry["fine_labels"], dtype=np.int64)]
        else:
            y = np.asarray(entry["coarse_labels"], dtype=np.int64)
        out += [x, y]
    return tuple(out)


# --------------------------------------------------------------------------
# Folders (ImageFolder, ImageNet-30)
# --------------------------------------------------------------------------


def _imagefolder_root(root) -> Path:
    if root is None:
        raise ValueError(
            "dataset 'imagefolder' needs root=..., a folder with train/<class>/ and test/<class>/ "
            "subfolders of images (e.g. root='/path/to/cifar10-jpg')."
        )
    return Path(root).expanduser()


def _imagenet30_root(root) -> Path:
    return Path(root).expanduser() if root is not None else default_data_root() / "imagenet30"


def _check_imagefolder_layout(base: Path) -> None:
    missing = [s for s in ("train", "test") if not (base / s).is_dir()]
    if missing:
        raise DataNotFoundError(
            f"ImageFolder dataset at {base}: missing folder(s) {', '.join(str(base / m) for m in missing)}. "
            f"Expected layout: {base}/train/<class>/*.jpg and {base}/test/<class>/*.jpg "
            f"(one subfolder per class, the same class names in both)."
        )


def _check_imagenet30_layout(base: Path) -> None:
    missing = [s for s in ("one_class_train", "one_class_test") if not (base / s).is_dir()]
    if missing:
        raise DataNotFoundError(
            f"ImageNet-30 not found: missing {', '.join(str(base / m) for m in missing)}.\n"
            + _IMAGENET30_HELP.format(root=base)
        )


def _folder_classes(split_dir: Path, ds: str) -> list[str]:
    names = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise DataNotFoundError(
            f"{ds}: {split_dir} has no class subfolders; expected {split_dir}/<class>/<image files>."
        )
    return names


def _list_images(folder: Path) -> list[str]:
    """Image files under ``folder``, recursively, in torchvision ImageFolder's order."""
    found = []
    for dirpath, dirnames, filenames in sorted(os.walk(folder, followlinks=True)):
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if f.lower().endswith(IMG_EXTENSIONS) and not f.startswith(".")]
    return found


def _load_folder_task(ds, inlier, base: Path, train_sub, test_sub, max_train, max_test, seed, size,
                      full_images: bool, explicit_size: bool = False) -> OneClassTask:
    train_dir, test_dir = base / train_sub, base / test_sub
    names = _folder_classes(train_dir, ds)
    test_names = _folder_classes(test_dir, ds)
    if test_names != names:
        only_train = sorted(set(names) - set(test_names))
        only_test = sorted(set(test_names) - set(names))
        raise DataNotFoundError(
            f"{ds} at {base}: class folders differ between {train_sub}/ and {test_sub}/ "
            f"(only in {train_sub}: {only_train or '-'}; only in {test_sub}: {only_test or '-'}). "
            f"Both must hold the same class subfolders."
        )
    idx = _resolve_inlier(inlier, names, ds)

    train_files = _list_images(train_dir / names[idx])
    if not train_files:
        raise DataNotFoundError(
            f"{ds}: no images in {train_dir / names[idx]} (looked for {', '.join(IMG_EXTENSIONS)})."
        )
    test_files, test_y = [], []
    for c, name in enumerate(names):
        files = _list_images(test_dir / name)
        if not files:
            raise DataNotFoundError(
                f"{ds}: no images in {test_dir / name} (looked for {', '.join(IMG_EXTENSIONS)}); every class "
                f"needs test images."
            )
        test_files += files
        test_y += [c] * len(files)
    test_y = np.asarray(test_y, dtype=np.int64)

    rng_train, rng_test = _rngs(seed)
    train_files = [train_files[i] for i in _subsample(len(train_files), max_train, rng_train)]
    keep = _stratified_subsample(test_y, max_test, rng_test)
    test_files, test_y = [test_files[i] for i in keep], test_y[keep]

    info = {"root": str(base), "max_train": max_train, "max_test": max_test, "seed": seed}
    if full_images:
        short = imagenet_resize_size(size)
        train_full, n_resized = _decode_full_images(train_files, short)
        test_full, n_resized_test = _decode_full_images(test_files, short)
        info.update(resized=n_resized + n_resized_test, resize=short, full_images_bytes=train_full.nbytes
                    + test_full.nbytes)
        return OneClassTask(ds, idx, names[idx], names, train_full.center_crop(size), test_full.center_crop(size),
                            torch.from_numpy(test_y), size, info, train_full=train_full, test_full=test_full)
    prepare = _resize_exact(size)
    train_x, n_resized = _decode_images(train_files, size, prepare)
    test_x, n_resized_test = _decode_images(test_files, size, prepare)
    n_resized += n_resized_test
    if n_resized and not explicit_size:
        warnings.warn(
            f"{n_resized} of {len(train_files) + len(test_files)} images in {base} were not {size}x{size} "
            f"and were resized to {size}x{size}.", stacklevel=3,
        )
    info["resized"] = n_resized
    return OneClassTask(ds, idx, names[idx], names, torch.from_numpy(train_x), torch.from_numpy(test_x),
                        torch.from_numpy(test_y), size, info)


def _resize_exact(size: int) -> Callable:
    from PIL import Image

    def prepare(img):
        if img.size != (size, size):
            return img.resize((size, size), Image.BILINEAR), True
        return img, False

    prepare.draft_size = (size, size)
    return prepare


def imagenet_resize_size(image_size: int = 224) -> int:
    """Shorter side of CSI's ``Resize(256)`` for network input ``image_size``: ``round(image_size * 256 / 224)``."""
    return round(int(image_size) * 256 / 224)


def resize_shorter_side(width: int, height: int, short: int) -> tuple[int, int]:
    """``(width, height)`` after torchvision's ``Resize(short)``: shorter side ``short``, long side truncated."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def _decode_full_images(files: list[str], short: int) -> tuple[FullImages, int]:
    """Decode ``files`` as torchvision's ``ImageFolder`` + ``Resize(short)``; returns the store and the number resized.

    Pass 1 reads the headers for the sizes, so that one buffer of exactly the
    output's bytes is allocated; pass 2 decodes on a thread pool (PIL releases
    the GIL) straight into it. Every image is decoded in full (no JPEG draft
    scaling) and resized with PIL's bilinear filter, as CSI's transform does,
    so the pixels are CSI's.
    """
    from PIL import Image

    def header(path: str) -> tuple[int, int]:
        try:
            with Image.open(path) as img:
                return img.size
        except (OSError, ValueError) as err:
            raise DataNotFoundError(f"Cannot read image {path}: {err}") from err

    workers = min(16, max(2, 2 * (os.cpu_count() or 1)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        source = list(pool.map(header, files))
    target = [resize_shorter_side(w, h, short) for w, h in source]
    lengths = np.array([w * h * 3 for w, h in target], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(files) else lengths
    data = np.empty(int(lengths.sum()), dtype=np.uint8)

    def decode(i: int) -> None:
        try:
            with Image.open(files[i]) as img:
                if img.mode == "P":
                    img = img.convert("RGBA")
                img = img.convert("RGB") if img.mode != "RGB" else img
                if img.size != target[i]:
                    img = img.resize(target[i], Image.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
        except (OSError, ValueError) as err:
            raise DataNotFoundError(f"Cannot read image {files[i]}: {err}") from err
        w, h = target[i]
        if arr.shape != (h, w, 3):
            raise DataNotFoundError(f"Image {files[i]} decoded to {arr.shape}, but its header says {source[i]}")
        data[offsets[i]:offsets[i] + lengths[i]] = arr.reshape(-1)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(decode, range(len(files))))
    sizes = torch.tensor([(h, w) for w, h in target], dtype=torch.int64).reshape(-1, 2)
    store = FullImages(torch.from_numpy(data), torch.from_numpy(offsets), sizes)
    return store, sum(1 for s, t in zip(source, target) if s != t)


def _decode_images(files: list[str], size: int, prepare: Callable) -> tuple[np.ndarray, int]:
    """Decode ``files`` into one (n, 3, size, size) uint8 array; returns it and the number resized.

    JPEGs are decoded in batches by ``torchvision.io.decode_jpeg`` (libjpeg in C++, several
    times faster than a PIL loop for 32x32 files, same pixels); other files go through PIL
    (``convert("RGB")``, so L/RGBA/P/CMYK modes become RGB). ImageNet-30 has its own
    decoder, :func:`_decode_full_images`.
    """
    from PIL import Image

    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    resized = np.zeros(len(files), dtype=bool)

    def finish(i: int, img) -> None:
        img, resized[i] = prepare(img)
        out[i] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)

    def pil_one(i: int) -> None:
        try:
            with Image.open(files[i]) as img:
                # JPEG: let libjpeg decode at a reduced scale that still covers the target size.
                img.draft("RGB", prepare.draft_size)
                if img.mode == "P":
                    img = img.convert("RGBA")
                finish(i, img.convert("RGB") if img.mode != "RGB" else img)
        except (OSError, ValueError) as err:
            raise DataNotFoundError(f"Cannot read image {files[i]}: {err}") from err

    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # a torchvision without image I/O: a plain PIL loop (threads do not help small files)
        for i in range(len(files)):
            pil_one(i)
        return out, int(resized.sum())

    def read_decode(chunk: list[int]) -> list[torch.Tensor] | None:
        raw = []
        for i in chunk:
            with open(files[i], "rb") as fh:
                raw.append(torch.frombuffer(bytearray(fh.read()), dtype=torch.uint8))
        try:
            return decode_jpeg(raw, mode=ImageReadMode.RGB)
        except RuntimeError:  # an unusual or broken file: PIL decodes (or names) it below
            return None

    jpeg = [i for i, f in enumerate(files) if f.lower().endswith((".jpg", ".jpeg"))]
    other = sorted(set(range(len(files))) - set(jpeg))
    chunks = [jpeg[s:s + 512] for s in range(0, len(jpeg), 512)]
    # File reads and decode_jpeg both release the GIL, so threads scale with cores.
    # torchvision >= 0.29 flags its image I/O as deprecated (in favour of TorchCodec);
    # the call works and falls back to PIL if it ever goes away, so that warning is muted here.
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=min(8, max(2, os.cpu_count() or 1))) as pool:
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                                category=DeprecationWarning)
        for chunk, decoded in zip(chunks, pool.map(read_decode, chunks)):
            if decoded is None:
                other += chunk
                continue
            for i, t in zip(chunk, decoded):
                if t.shape[1:] == (size, size):
                    out[i] = t.numpy()
                else:
                    finish(i, Image.fromarray(t.permute(1, 2, 0).numpy()))
    for i in other:
        pil_one(i)
    return out, int(resized.sum())


# --------------------------------------------------------------------------
# Procedural shapes
# --------------------------------------------------------------------------


def _load_shapes(inlier, max_train, max_test, seed, size) -> OneClassTask:
    names = list(SHAPES_CLASSES)
    idx = _resolve_inlier(inlier, names, "shapes")
    n_cls = len(names)
    n_train = max_train if max_train is not None else _SHAPES_TRAIN_PER_CLASS
    total_test = max_test if max_test is not None else _SHAPES_TEST_PER_CLASS * n_cls
    per_class = [total_test // n_cls + (1 if c < total_test % n_cls else 0) for c in range(n_cls)]
    train = make_shapes(idx, n_train, seed=2 * int(seed), size=size)
    test = torch.cat([make_shapes(c, n, seed=2 * int(seed) + 1, size=size) for c, n in enumerate(per_class)])
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(per_class)])
    info = {"seed": seed, "train_seed": 2 * int(seed), "test_seed": 2 * int(seed) + 1}
    return OneClassTask("shapes", idx, names[idx], names, train, test, labels, size, info)


def make_shapes(class_index: int | str, n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """Generate ``n`` images of one procedural class as uint8 ``(n, 3, size, size)``.

    Classes (:data:`SHAPES_CLASSES`): filled circle, square, equilateral triangle,
    plus-shaped cross, ring (annulus), five-pointed star, and two full-frame
    textures, stripes and a checkerboard. Every image draws a random background
    (solid colour, linear gradient, or either with pixel noise), a foreground colour
    that differs from the background by at least 0.3 in every channel, a random
    position and size, and a small tilt of at most 15 degrees (textures: random
    period and phase, the same tilt). Shapes stand upright as objects in photos
    do, so a 90-degree rotation is a distribution shift, the premise of CSI's
    shifted instances (Eq. 2-3); a circle and a ring are the exceptions a
    teacher can point at.
    Edges are anti-aliased from a signed distance, everything is vectorised over
    the batch with numpy (about 0.3 s of CPU for 2200 images at 32x32).

    Deterministic: the same ``(class_index, n, seed, size)`` gives identical bytes,
    and image i does not depend on n.
    """
    if isinstance(class_index, str):
        class_index = _resolve_inlier(class_index, SHAPES_CLASSES, "shapes")
    if not _is_int(class_index) or not 0 <= int(class_index) < len(SHAPES_CLASSES):
        raise ValueError(
            f"class_index must be 0..{len(SHAPES_CLASSES) - 1} or a name in {SHAPES_CLASSES}, got {class_index!r}"
        )
    if not _is_int(n) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    c = int(class_index)
    if n == 0:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    f32 = np.float32
    # One generator per image index, so image i does not depend on n.
    params = np.empty((n, 16), dtype=np.float64)
    noise = np.zeros((n, 3, size, size), dtype=f32)
    for i in range(n):
        rng = np.random.default_rng([int(seed), c, i, 0x5EED])
        params[i] = rng.random(16)
        if params[i, 14] >= 0.5:  # background kinds 2 and 3 carry pixel noise (see bg_kind below)
            noise[i] = rng.random((3, size, size), dtype=f32)
    noise -= np.where(params[:, 14] >= 0.5, f32(0.5), f32(0.0)).astype(f32)[:, None, None, None]
    p = params.astype(f32)

    coords = ((np.arange(size, dtype=f32) + 0.5) / size) * 2 - 1  # pixel centres in [-1, 1]
    ys, xs = coords[None, :, None], coords[None, None, :]  # (1, S, 1), (1, 1, S)
    px = 2.0 / size  # one pixel in normalised units

    # Geometry: centre, radius (normalised), rotation.
    cx = (p[:, 0] * 0.5 - 0.25)[:, None, None]
    cy = (p[:, 1] * 0.5 - 0.25)[:, None, None]
    r = (0.40 + 0.30 * p[:, 2])[:, None, None]
    theta = ((p[:, 3] - 0.5) * (np.pi / 6))[:, None, None]  # upright, tilted by at most 15 degrees
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    dx, dy = xs - cx, ys - cy
    u = (cos_t * dx + sin_t * dy) / r  # shape-local coordinates, radius 1
    v = (-sin_t * dx + cos_t * dy) / r

    name = SHAPES_CLASSES[c]
    if name in ("stripes", "checker"):
        period = (5.0 + 5.0 * p[:, 4])[:, None, None] * px  # 5..10 pixels
        su = np.sin(2 * np.pi * (u * r) / period)
        if name == "stripes":
            alpha = np.clip(0.5 + 2.0 * su, 0.0, 1.0)
        else:
            sv = np.sin(2 * np.pi * (v * r) / period)
            alpha = np.clip(0.5 + 12.0 * su * sv, 0.0, 1.0)
    else:
        rho = np.sqrt(u * u + v * v)
        if name == "circle":
            sd = rho - 1.0
        elif name == "square":
            sd = np.maximum(np.abs(u), np.abs(v)) - 0.8
        elif name == "triangle":
            angles = -np.pi / 2 + 2 * np.pi * np.arange(3) / 3
            sd = np.max(np.stack([u * np.cos(a) + v * np.sin(a) for a in angles]), axis=0) - 0.5
        elif name == "cross":
            w = 0.3
            sd = np.minimum(np.maximum(np.abs(u) - 1.0, np.abs(v) - w), np.maximum(np.abs(u) - w, np.abs(v) - 1.0))
        elif name == "ring":
            sd = np.abs(rho - 0.72) - 0.22
        else:  # star: radius oscillates between 0.38 and 1.05 over 5 points
            phi = np.arctan2(v, u)
            t = (phi * 5 / (2 * np.pi)) % 1.0
            tri = np.abs(2 * t - 1)  # 1 at the points, 0 between
            sd = (rho - (0.38 + 0.67 * tri)) * 0.8
        alpha = np.clip(0.5 - sd * r / px, 0.0, 1.0)  # anti-aliased over ~1 pixel

    # Colours.
    c0 = p[:, 5:8]  # background base colour
    c1 = np.clip(c0 + (p[:, 8:11] - 0.5) * 0.8, 0.0, 1.0)
    fg = (c0 + 0.3 + 0.4 * p[:, 11:14]) % 1.0  # >= 0.3 away from c0 in every channel (circularly)
    bg_kind = np.floor(p[:, 14] * 4).astype(np.int64)  # 0 solid, 1 gradient, 2 noise, 3 gradient + noise
    grad_angle = (p[:, 15] * 2 * np.pi)[:, None, None]
    t_grad = np.clip((np.cos(grad_angle) * xs + np.sin(grad_angle) * ys) * 0.5 + 0.5, 0.0, 1.0)
    t_grad = t_grad * ((bg_kind == 1) | (bg_kind == 3))[:, None, None]
    bg = c0[:, :, None, None] + (c1 - c0)[:, :, None, None] * t_grad[:, None]
    img = bg * (1 - alpha[:, None]) + fg[:, :, None, None] * alpha[:, None]
    img = img + f32(0.25) * noise  # uniform noise, std 0.07, on noisy kinds only (zeros elsewhere)
    out = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return torch.from_numpy(out)
