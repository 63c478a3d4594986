"""Tests for csigen.data: the procedural shapes set, the loaders and their errors."""

from __future__ import annotations

import json
import math
import os
import pickle
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from csigen import data
from csigen.data import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE_CLASSES,
    CIFAR100_CSI_SUPERCLASS,
    SHAPES_CLASSES,
    DataNotFoundError,
    OneClassTask,
    UnknownDatasetError,
    class_names,
    list_datasets,
    load_task,
    make_shapes,
    to_float,
)

CIFAR10_JPG = Path(os.environ.get("CSIGEN_CIFAR10_JPG", "/work/shared/data/cifar10-jpg"))


# --------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------


def test_shapes_classes_and_dtype():
    assert len(SHAPES_CLASSES) >= 6
    assert len(set(SHAPES_CLASSES)) == len(SHAPES_CLASSES)
    for c in range(len(SHAPES_CLASSES)):
        x = make_shapes(c, 5, seed=0)
        assert x.dtype == torch.uint8 and x.shape == (5, 3, 32, 32)
        assert x.float().std() > 10  # not blank
    assert make_shapes("star", 2, seed=0, size=48).shape == (2, 3, 48, 48)
    assert make_shapes(0, 0).shape == (0, 3, 32, 32)


def test_shapes_deterministic_and_seeded():
    a = make_shapes(2, 16, seed=7)
    b = make_shapes(2, 16, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, make_shapes(2, 16, seed=8))
    # Image i does not depend on how many are drawn.
    assert torch.equal(make_shapes(2, 4, seed=7), a[:4])
    # Images within a batch vary.
    assert (a[0] != a[1]).any()


def test_shapes_fast():
    # CPU time of this process, so that other load on the machine does not make it flaky.
    start = time.process_time()
    full = load_task("shapes", "ring")  # defaults: 600 train, 200 test per class
    assert time.process_time() - start < 1.0
    assert full.train_images.shape[0] == 600 and full.test_images.shape[0] == 200 * len(SHAPES_CLASSES)
    assert full.test_labels.bincount().tolist() == [200] * len(SHAPES_CLASSES)


def _fft_features(x: torch.Tensor) -> torch.Tensor:
    """Translation- and colour-invariant features: log |FFT| of the standardised grey image."""
    g = x.float().mean(1)
    g = (g - g.mean((1, 2), keepdim=True)) / (g.std((1, 2), keepdim=True) + 1e-6)
    return torch.log1p(torch.fft.fft2(g).abs()).flatten(1)


def test_shapes_classes_distinguishable():
    """Sanity check that the classes carry learnable signal: a 1-nearest-neighbour
    classifier on simple FFT features beats chance (1/C) by a wide margin."""
    n_cls = len(SHAPES_CLASSES)
    train = torch.cat([_fft_features(make_shapes(c, 50, seed=0)) for c in range(n_cls)])
    test = torch.cat([_fft_features(make_shapes(c, 25, seed=1)) for c in range(n_cls)])
    y_train = torch.arange(n_cls).repeat_interleave(50)
    y_test = torch.arange(n_cls).repeat_interleave(25)
    pred = y_train[torch.cdist(test, train).argmin(1)]
    acc = (pred == y_test).float().mean().item()
    assert acc > 0.45, acc  # chance is 1/8 = 0.125


def test_load_shapes_by_name_and_index():
    by_name = load_task("shapes", "CIRCLE", max_train=40, max_test=80)
    by_index = load_task("shapes", 0, max_train=40, max_test=80)
    assert isinstance(by_name, OneClassTask)
    assert by_name.inlier == 0 and by_name.inlier_name == "circle"
    assert torch.equal(by_name.train_images, by_index.train_images)
    assert torch.equal(by_name.test_images, by_index.test_images)
    t = by_name
    assert t.train_images.shape == (40, 3, 32, 32) and t.train_images.dtype == torch.uint8
    assert t.test_images.shape == (80, 3, 32, 32) and t.test_labels.dtype == torch.int64
    assert t.test_is_inlier.dtype == torch.bool
    assert int(t.test_is_inlier.sum()) == 80 // len(SHAPES_CLASSES)
    assert torch.equal(t.test_is_inlier, t.test_labels == 0)
    assert t.class_names == list(SHAPES_CLASSES) and t.image_size == 32
    # Train and test images come from different seeds.
    inlier_test = t.test_images[t.test_is_inlier]
    assert not any(torch.equal(inlier_test[0], x) for x in t.train_images)
    # The seed changes the data.
    assert not torch.equal(load_task("shapes", 0, max_train=4, seed=1).train_images, t.train_images[:4])
    line = t.describe()
    assert "\n" not in line and "circle" in line and "shapes" in line


def test_to_float():
    x = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8).expand(1, 3, 2, 2)
    y = to_float(x)
    assert y.dtype == torch.float32 and y.min() == 0.0 and y.max() == 1.0
    assert torch.allclose(y[0, 0, 1], torch.tensor([0.2, 0.4]))
    assert to_float(x, device="cpu").device.type == "cpu"
    with pytest.raises(TypeError, match="uint8"):
        to_float(y)


# --------------------------------------------------------------------------
# argument errors
# --------------------------------------------------------------------------


def test_list_datasets_and_class_names():
    assert set(list_datasets()) == {"cifar10", "cifar100", "imagenet30", "imagefolder", "shapes"}
    assert class_names("cifar10") == list(CIFAR10_CLASSES)
    assert class_names("CIFAR-100") == list(CIFAR100_COARSE_CLASSES)
    assert class_names("cifar100", cifar100_superclasses="torchvision") == list(CIFAR100_COARSE_CLASSES)
    assert class_names("shapes") == list(SHAPES_CLASSES)


def test_unknown_dataset():
    with pytest.raises(UnknownDatasetError) as info:
        load_task("cifar11", 0)
    msg = str(info.value)
    assert "cifar11" in msg and "cifar10" in msg and "shapes" in msg and "imagefolder" in msg
    assert isinstance(info.value, ValueError)


def test_unknown_class_name_suggests():
    with pytest.raises(ValueError) as info:
        load_task("shapes", "cirle")
    msg = str(info.value)
    assert "Did you mean 'circle'" in msg and "triangle" in msg
    # No data needed to reject a bad CIFAR class name.
    with pytest.raises(ValueError, match="airplane"):
        load_task("cifar10", "aeroplane", root="/nonexistent", download=False)


def test_index_out_of_range():
    with pytest.raises(ValueError) as info:
        load_task("shapes", len(SHAPES_CLASSES))
    assert f"0..{len(SHAPES_CLASSES) - 1}" in str(info.value)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        load_task("cifar10", 10, root="/nonexistent", download=False)
    with pytest.raises(ValueError, match=r"0\.\.19"):
        load_task("cifar100", -1, root="/nonexistent", download=False)


def test_bad_options():
    with pytest.raises(ValueError, match="cifar100_superclasses"):
        load_task("cifar100", 0, cifar100_superclasses="coarse")
    with pytest.raises(ValueError, match="max_train"):
        load_task("shapes", 0, max_train=0)
    with pytest.raises(ValueError, match="root"):
        load_task("imagefolder", 0)


# --------------------------------------------------------------------------
# imagefolder
# --------------------------------------------------------------------------


def _save(path: Path, arr: np.ndarray, mode: str | None = None, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if mode is not None:
        img = img.convert(mode)
    img.save(path, format=fmt)


def _tiny_tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 3)):
        for name in ("bee", "ant", "cat"):  # created unsorted; labels follow sorted names
            for i in range(n):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                arr[..., 0] = {"ant": 0, "bee": 40, "cat": 80}[name]  # class signature in the red channel
                p = root / split / name / f"{i:03d}"
                kind = i % 4
                if kind == 0:
                    _save(p.with_suffix(".png"), arr)
                elif kind == 1:
                    _save(p.with_suffix(".png"), arr, mode="RGBA")
                elif kind == 2:  # grey JPEG of another size
                    big = np.asarray(Image.fromarray(arr).resize((40, 48)))
                    _save(p.with_suffix(".jpg"), big, mode="L")
                else:
                    _save(p.with_suffix(".jpg"), arr)
    (root / "train" / "ant" / "notes.txt").write_text("not an image")


def test_imagefolder_tiny_tree(tmp_path):
    _tiny_tree(tmp_path)
    assert class_names("imagefolder", root=tmp_path) == ["ant", "bee", "cat"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = load_task("imagefolder", "Bee", root=tmp_path)
    resize_warnings = [w for w in caught if "resized" in str(w.message)]
    assert len(resize_warnings) == 1 and "were not 32x32" in str(resize_warnings[0].message)
    assert task.inlier == 1 and task.inlier_name == "bee"
    assert task.train_images.shape == (4, 3, 32, 32) and task.train_images.dtype == torch.uint8
    assert task.test_images.shape == (9, 3, 32, 32)
    assert task.test_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert task.test_is_inlier.tolist() == [False] * 3 + [True] * 3 + [False] * 3
    # Lossless PNG train image 0 keeps its pixels (RGB) and class signature.
    assert int(task.train_images[0, 0].float().mean().round()) == 40
    # Grey image (index 2) became RGB with equal channels.
    grey = task.train_images[2]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    # Image size option (explicit: no warning).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = load_task("imagefolder", 0, root=tmp_path, image_size=16, max_train=2, max_test=3)
    assert small.info["resized"] == 5
    assert small.train_images.shape == (2, 3, 16, 16) and small.test_images.shape == (3, 3, 16, 16)
    assert sorted(small.test_labels.tolist()) == [0, 1, 2]  # stratified


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="train"):
        load_task("imagefolder", 0, root=tmp_path / "missing")
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(DataNotFoundError, match="no class subfolders"):
        load_task("imagefolder", 0, root=tmp_path)
    (tmp_path / "train" / "a").mkdir()
    (tmp_path / "test" / "a").mkdir()
    with pytest.raises(DataNotFoundError, match="no images in"):
        load_task("imagefolder", "a", root=tmp_path)
    (tmp_path / "train" / "b").mkdir()
    with pytest.raises(DataNotFoundError, match="differ"):
        load_task("imagefolder", "a", root=tmp_path)
    (tmp_path / "test" / "b").mkdir()
    with pytest.raises(ValueError, match="Did you mean 'b'"):
        load_task("imagefolder", "bb", root=tmp_path)


@pytest.mark.skipif(not CIFAR10_JPG.is_dir(), reason="CIFAR-10 JPEG copy not available")
def test_imagefolder_cifar10_jpg():
    assert class_names("imagefolder", root=CIFAR10_JPG) == list(CIFAR10_CLASSES)
    task = load_task("imagefolder", "cat", root=CIFAR10_JPG, max_train=50, max_test=100)
    assert task.inlier == 3 and task.class_names == list(CIFAR10_CLASSES)
    assert task.train_images.shape == (50, 3, 32, 32)
    assert task.test_images.shape == (100, 3, 32, 32)
    assert task.test_labels.bincount(minlength=10).tolist() == [10] * 10
    assert int(task.test_is_inlier.sum()) == 10
    again = load_task("imagefolder", 3, root=CIFAR10_JPG, max_train=50, max_test=100)
    assert torch.equal(task.train_images, again.train_images)
    assert torch.equal(task.test_labels, again.test_labels)
    # The inlier test images really are cats: same pixels as the files of test/cat.
    first_cat = sorted((CIFAR10_JPG / "test" / "cat").iterdir())
    cats = {np.asarray(Image.open(f).convert("RGB")).tobytes() for f in first_cat[:1000]}
    for img in task.test_images[task.test_is_inlier][:3]:
        assert img.permute(1, 2, 0).numpy().tobytes() in cats


# --------------------------------------------------------------------------
# imagenet30
# --------------------------------------------------------------------------


def test_imagenet30_missing_folder(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_task("imagenet30", 0, root=tmp_path)
    msg = str(info.value)
    assert "one_class_train" in msg and "one_class_test" in msg
    assert "hendrycks/ss-ood" in msg and str(tmp_path) in msg


def _imagenet30_tree(root: Path, per_class: int = 3) -> None:
    """CSI's ImageNet-30 layout: 3 classes, 300x400 (portrait), 400x300 and 256x256 JPEGs.

    Training image 0 of every class is grey with a red band in its top 48 rows and a
    blue band in its bottom 48 rows: outside CSI's centre crop, inside the full image.
    """
    rng = np.random.default_rng(0)
    for split in ("one_class_train", "one_class_test"):
        for name in ("acorn", "airliner", "ambulance"):
            for i in range(per_class):
                w, h = ((300, 400), (400, 300), (256, 256))[i % 3]
                if split == "one_class_train" and i == 0:
                    arr = np.full((h, w, 3), 128, dtype=np.uint8)
                    arr[:48] = (255, 0, 0)
                    arr[-48:] = (0, 0, 255)
                else:
                    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                _save(root / split / name / f"{i}.JPEG", arr)


def _csi_transform(steps):
    from torchvision import transforms as T

    return T.Compose([*steps, T.PILToTensor()])


def _files(root: Path, split: str, name: str | None = None) -> list[Path]:
    return sorted((root / split).glob(f"{name or '*'}/*.JPEG"))


@pytest.fixture(scope="module")
def in30(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet30")
    _imagenet30_tree(root)
    return root, load_task("imagenet30", "airliner", root=root)


def test_imagenet30_layout_sizes_and_csi_test_transform(in30):
    from torchvision import transforms as T

    root, task = in30
    assert task.dataset == "imagenet30" and task.inlier == 1 and task.image_size == 224 and task.has_full_images
    assert task.train_images.shape == (3, 3, 224, 224) and task.test_images.shape == (9, 3, 224, 224)
    assert task.train_images.dtype == task.test_images.dtype == torch.uint8
    # CSI's test transform, pixel for pixel: Resize(256) + CenterCrop(224) with PIL, as torchvision does it.
    test_tf = _csi_transform([T.Resize(256), T.CenterCrop(224)])
    want = torch.stack([test_tf(Image.open(f).convert("RGB")) for f in _files(root, "one_class_test")])
    assert torch.equal(task.test_images, want)
    train = _files(root, "one_class_train", "airliner")
    assert torch.equal(task.train_images, torch.stack([test_tf(Image.open(f).convert("RGB")) for f in train]))
    # The stores hold the whole Resize(256) image (shorter side 256, aspect ratio kept), uint8, unpadded.
    full = task.train_full
    assert full.sizes.tolist() == [[341, 256], [256, 341], [256, 256]]
    assert full.data.dtype == torch.uint8 and full.nbytes == 3 * (341 * 256 * 2 + 256 * 256)
    resize = _csi_transform([T.Resize(256)])
    assert torch.equal(torch.from_numpy(full.image(1).copy()).permute(2, 0, 1), resize(Image.open(train[1])))
    assert len(task.test_full) == 9 and task.info["resize"] == 256
    small = load_task("imagenet", "acorn", root=root, image_size=64, max_test=3)
    assert small.train_images.shape == (3, 3, 64, 64) and small.test_images.shape == (3, 3, 64, 64)
    assert min(small.train_full.sizes[0].tolist()) == data.imagenet_resize_size(64) == 73


def test_imagenet30_train_view_is_csi_random_resized_crop(in30):
    """train_view = torchvision's RandomResizedCrop(224) + hflip of the Resize(256) image, for the drawn boxes."""
    from torchvision.transforms import functional as TF

    from csigen.augment import random_flips, random_resized_crop_boxes

    root, task = in30
    idx = torch.tensor([2, 0, 1])
    x = task.train_view(idx, torch.Generator().manual_seed(5), views=2)
    assert x.shape == (6, 3, 224, 224) and x.dtype == torch.float32
    g = torch.Generator().manual_seed(5)  # the documented draw order: all boxes, then all flips
    boxes = random_resized_crop_boxes(task.train_full.sizes[idx.repeat(2)], g)
    flips = random_flips(6, g)
    files = _files(root, "one_class_train", "airliner")
    for row, (i, box, flip) in enumerate(zip(idx.repeat(2).tolist(), boxes.tolist(), flips.tolist())):
        img = TF.resize(Image.open(files[i]).convert("RGB"), 256)
        crop = TF.resized_crop(img, *box, [224, 224])
        want = TF.pil_to_tensor(TF.hflip(crop) if flip else crop)
        assert torch.equal((x[row] * 255).round().to(torch.uint8), want), row
    # the two views of an image are independent crops
    assert not torch.equal(x[:3], x[3:])


def test_imagenet30_train_view_scale_is_the_crop_area_range(in30):
    """train_view(scale=...) draws its boxes with that area range (TrainConfig.train_crop_min)."""
    from csigen.augment import random_resized_crop_boxes

    root, task = in30
    idx = torch.tensor([2, 0, 1])
    x = task.train_view(idx, torch.Generator().manual_seed(5), views=2, scale=(0.6, 1.0))
    boxes = random_resized_crop_boxes(task.train_full.sizes[idx.repeat(2)], torch.Generator().manual_seed(5),
                                      scale=(0.6, 1.0))
    sizes = task.train_full.sizes[idx.repeat(2)].double()
    assert ((boxes[:, 2] * boxes[:, 3]).double() / (sizes[:, 0] * sizes[:, 1]) >= 0.55).all()
    assert not torch.equal(x, task.train_view(idx, torch.Generator().manual_seed(5), views=2))


def test_imagenet30_train_view_seeded_and_fresh_each_step(in30):
    _, task = in30
    g = torch.Generator().manual_seed(0)
    first, second = task.train_view([0, 1], g), task.train_view([0, 1], g)
    assert not torch.equal(first[0], second[0]) and not torch.equal(first[1], second[1])
    again = torch.Generator().manual_seed(0)
    assert torch.equal(task.train_view([0, 1], again), first) and torch.equal(task.train_view([0, 1], again), second)
    assert not torch.equal(task.train_view([0, 1], torch.Generator().manual_seed(1)), first)
    # not the centre crop, and every value on the uint8 grid (CSI feeds PIL's uint8 pixels)
    assert not torch.equal(to_float(task.train_images[:2]), first)
    assert torch.equal((first * 255).round() / 255, first)
    with pytest.raises(IndexError, match="0..2"):
        task.train_view([3], g)


def test_imagenet30_crops_reach_the_whole_image(in30):
    """The red (top) and blue (bottom) bands lie outside the centre crop; training crops reach them."""
    _, task = in30

    def has(colour: int, x: torch.Tensor) -> torch.Tensor:  # per image: some strongly red / blue pixels
        other = [c for c in range(3) if c != colour]
        mask = (x[:, colour] > 0.7) & (x[:, other[0]] < 0.3) & (x[:, other[1]] < 0.3)
        return mask.flatten(1).any(dim=1)

    centre = to_float(task.train_images[:1])
    assert not has(0, centre).any() and not has(2, centre).any()
    views = task.train_view(torch.zeros(48, dtype=torch.int64), torch.Generator().manual_seed(0))
    red, blue = has(0, views), has(2, views)
    assert red.any() and blue.any() and not (red | blue).all()
    # and together the boxes reach every row and column of the full image, never beyond it
    from csigen.augment import random_resized_crop_boxes

    boxes = random_resized_crop_boxes(torch.tensor([[341, 256]]).repeat(3000, 1), torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert int(h.min()) > 0 and int(w.min()) > 0
    rows, cols = torch.zeros(341, dtype=torch.bool), torch.zeros(256, dtype=torch.bool)
    for t, lf, hh, ww in boxes.tolist():
        rows[t:t + hh], cols[lf:lf + ww] = True, True
    assert rows.all() and cols.all() and int((top + h).max()) == 341 and int((left + w).max()) == 256


def test_random_resized_crop_boxes_follow_torchvision():
    from torchvision import transforms as T

    from csigen.augment import random_resized_crop_boxes

    n = 4000
    torch.manual_seed(0)
    ref = torch.tensor([T.RandomResizedCrop.get_params(torch.zeros(1, 256, 341), [0.08, 1.0], [3 / 4, 4 / 3])
                        for _ in range(n)], dtype=torch.float64)
    ours = random_resized_crop_boxes(torch.tensor([[256, 341]]).repeat(n, 1), torch.Generator().manual_seed(0))
    ours = ours.double()
    for a in (ref, ours):
        assert ((a[:, 0] + a[:, 2]) <= 256).all() and ((a[:, 1] + a[:, 3]) <= 341).all() and (a >= 0).all()
    area = lambda a: a[:, 2] * a[:, 3] / (256 * 341)
    assert abs(float(area(ours).mean() - area(ref).mean())) < 0.015  # std of each mean ~0.004
    assert abs(float((ours[:, 3] / ours[:, 2]).log().mean() - (ref[:, 3] / ref[:, 2]).log().mean())) < 0.015
    # torchvision's fallback when no trial fits: the centred box with the ratio clamped into [3/4, 4/3]
    got = random_resized_crop_boxes([[256, 1000], [1000, 256], [256, 341]], torch.Generator(), scale=(1.0, 1.0))
    assert got.tolist() == [[0, 329, 256, 341], [329, 0, 341, 256], [0, 0, 256, 341]]
    assert got.tolist() == [list(T.RandomResizedCrop.get_params(torch.zeros(1, h, w), [1.0, 1.0], [3 / 4, 4 / 3]))
                            for h, w in ((256, 1000), (1000, 256), (256, 341))]
    with pytest.raises(ValueError, match="scale"):
        random_resized_crop_boxes([[10, 10]], None, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="sizes"):
        random_resized_crop_boxes([10, 10], None)


def test_imagenet30_eval_view_crops_fixed_area(in30):
    from csigen.augment import random_resized_crop_boxes

    _, task = in30
    x = task.eval_view([0, 4, 8], torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 224, 224)
    assert torch.equal(x, task.eval_view([0, 4, 8], torch.Generator().manual_seed(0)))
    assert not torch.equal(x, to_float(task.test_images[[0, 4, 8]]))
    # CSI's --resize_fix --resize_factor 0.54: the area is 0.54 of the whole Resize(256) image
    boxes = random_resized_crop_boxes(task.test_full.sizes.repeat(20, 1), torch.Generator(), scale=(0.54, 0.54))
    frac = boxes[:, 2] * boxes[:, 3] / task.test_full.sizes.repeat(20, 1).prod(dim=1)
    assert (frac - 0.54).abs().max() < 0.01
    assert task.eval_view([1], torch.Generator(), split="train").shape == (1, 3, 224, 224)
    with pytest.raises(ValueError, match="split"):
        task.eval_view([0], split="val")


def test_small_datasets_views_are_the_stored_images():
    task = load_task("shapes", "circle", max_train=8, max_test=16)
    assert not task.has_full_images and task.train_full is None
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    x = task.train_view([3, 1], g, views=2)
    assert torch.equal(x, to_float(task.train_images[[3, 1, 3, 1]]))
    assert torch.equal(task.eval_view([2], g), to_float(task.test_images[[2]]))
    assert torch.equal(g.get_state(), state)  # nothing drawn


def test_no_crop_augment_leaves_geometry_alone():
    from csigen.augment import no_crop_augment

    x = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    identity = no_crop_augment(p_jitter=0.0, p_gray=0.0)
    torch.testing.assert_close(identity(x, generator=torch.Generator().manual_seed(1)), x, atol=1e-6, rtol=0)
    assert not torch.allclose(no_crop_augment()(x, generator=torch.Generator().manual_seed(1)), x)


def test_trainer_imagenet30_step_at_224(in30):
    """Trainer._batch draws two CSI crops per image from aug_gen (seeded, resumable); one ResNet-18 step
    at 224 feeds exactly those two views, rotated, to a T without a crop (CSI's ImageNet step)."""
    from csigen.augment import shift_batch
    from csigen.config import make_config
    from csigen.train import Trainer

    root, task = in30
    config = make_config("smoke", dataset="imagenet30", inlier="airliner", data_root=str(root), variant="csi",
                         batch_size=2, max_steps=2, device="cpu", checkpoint_every_steps=None)
    trainer = Trainer(config, None, task=task, progress=False)
    start = trainer.aug_gen.get_state()
    x0, y0 = trainer._batch()
    assert x0.shape == y0.shape == (2, 3, 224, 224) and x0.dtype == torch.float32
    assert not any(torch.equal(x0[0], c) for c in to_float(task.train_images))  # a random crop, not the centre
    assert not torch.equal(x0[0], y0[0]) and not torch.equal(x0[1], y0[1])  # two independent crops per image
    trainer.step = 1
    state = trainer.state_dict()
    x1, y1 = trainer._batch()
    twin = Trainer(config, None, task=task, progress=False)
    a, b = twin._batch()
    assert torch.equal(a, x0) and torch.equal(b, y0)  # same seed, same crops
    twin.load_state_dict(state)
    a, b = twin._batch()
    assert torch.equal(a, x1) and torch.equal(b, y1)  # resumed: the crops of the step it resumes at
    # T has no crop of its own (the identity window), and the views reach it unflipped, only rotated
    assert trainer.augment.crop_scale == (1.0, 1.0) and trainer.augment.ratio == (1.0, 1.0)
    seen, real_T = [], trainer.augment

    def T(x, generator=None):
        seen.append(x.detach().clone())
        return real_T(x, generator=generator)

    trainer.augment = T
    trainer.step = 0
    trainer.aug_gen.set_state(start)
    record = trainer.train_step()
    assert math.isfinite(record["csi"]) and trainer.step == 1
    assert len(seen) == 1 and torch.equal(seen[0], torch.cat([shift_batch(x0, 4)[0], shift_batch(y0, 4)[0]]))


def test_trainer_imagenet30_t_takes_the_blur_too(in30):
    """train_blur_p on full-size images: T (no crop there) blurs last, as on 32x32 images."""
    from csigen.config import make_config
    from csigen.train import Trainer

    root, _ = in30
    task = load_task("imagenet30", "airliner", root=root, image_size=32, max_test=3)
    config = make_config("smoke", dataset="imagenet30", inlier="airliner", data_root=str(root), variant="csi",
                         batch_size=2, max_steps=1, device="cpu", checkpoint_every_steps=None, train_blur_p=0.5)
    trainer = Trainer(config, None, task=task, progress=False)
    assert trainer.augment.crop_scale == (1.0, 1.0) and trainer.augment.p_blur == 0.5
    assert math.isfinite(float(trainer.run_step()["csi"]))


def test_trainer_imagenet30_gan_block_views(in30):
    """variant full on ImageNet-30 images (at 32 px, for speed): G(h)'s views get the data side's crop and
    flip on the device (csi_s, joint); the GAN block gets both real views."""
    from csigen.augment import crop_flip_views
    from csigen.config import make_config
    from csigen.train import Trainer

    root, _ = in30
    task = load_task("imagenet30", "airliner", root=root, image_size=32, max_test=3)
    config = make_config("smoke", dataset="imagenet30", inlier="airliner", data_root=str(root),
                         variant="full", batch_size=2, gan_every=1, max_steps=1, device="cpu",
                         checkpoint_every_steps=None)
    trainer = Trainer(config, None, task=task, progress=False)
    assert trainer.synthetic_views.func is crop_flip_views and trainer.augment.crop_scale == (1.0, 1.0)
    assert trainer.synthetic_views.keywords == {"scale": (0.08, 1.0)}  # train_crop_min: CSI's 0.08 by default
    views, blocks = [], []

    def counting_views(x, generator=None):
        views.append(tuple(x.shape))
        return crop_flip_views(x, generator)

    real_block = trainer._gan_block

    def block(X, kw, X2=None):
        blocks.append((X.shape, None if X2 is None else X2.shape))
        return real_block(X, kw, X2)

    trainer.synthetic_views, trainer._gan_block = counting_views, block
    record = trainer.train_step()
    assert blocks == [((2, 3, 32, 32), (2, 3, 32, 32))]
    assert views == [(2, 3, 32, 32)] * 2  # L_CSI-S (Eq. 6) and L_JOINT (Eq. 5)
    assert all(math.isfinite(record[k]) for k in ("csi", "d", "csi_s", "rec", "joint"))


class _TinyF(torch.nn.Module):
    """A small stand-in for F (evaluation tests at 224 px)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 5, stride=8)
        self.simclr_layer, self.shift_cls_layer = torch.nn.Linear(4, 3), torch.nn.Linear(4, 4)

    def forward(self, x, *, simclr=False, shift=False):
        h = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return {"simclr": self.simclr_layer(h), "shift": self.shift_cls_layer(h)}


def test_imagenet30_evaluation_crops_the_full_images(in30, monkeypatch):
    """evaluate_model on ImageNet-30: every draw of every chunk is a fresh eval_view of the full images
    (training and test images), and T has no crop; not T's 0.54 crop of the centre crop."""
    from csigen import score as S
    from csigen.config import make_config
    from csigen.train import evaluate_model

    root, task = in30
    config = make_config("smoke", dataset="imagenet30", inlier="airliner", data_root=str(root),
                         eval_samples=2, eval_batch_size=4, eval_crop_scale=0.5, device="cpu")
    calls, augments = [], []
    real_view, real_extract = task.eval_view, S.extract_features

    def eval_view(indices, generator=None, device=None, *, split="test", scale=None):
        calls.append((split, torch.as_tensor(indices).tolist(), scale, generator))
        return real_view(indices, generator, device, split=split, scale=scale)

    def extract(model, images, augment, **kw):
        augments.append((augment.crop_scale, augment.ratio))
        return real_extract(model, images, augment, **kw)

    monkeypatch.setattr(task, "eval_view", eval_view)
    monkeypatch.setattr(S, "extract_features", extract)
    torch.manual_seed(0)
    ev = evaluate_model(_TinyF(), task, config, device=torch.device("cpu"))
    assert augments == [((1.0, 1.0), (1.0, 1.0))] * 2
    train_calls = [c for c in calls if c[0] == "train"]
    test_calls = [c for c in calls if c[0] == "test"]
    assert [c[1] for c in train_calls] == [[0, 1, 2]] * 2  # one chunk, R = 2 draws
    assert [c[1] for c in test_calls] == [[0, 1, 2, 3]] * 2 + [[4, 5, 6, 7]] * 2 + [[8]] * 2
    assert all(c[2] == 0.5 for c in calls)
    assert train_calls[0][3] is not train_calls[1][3]  # each draw its own generator
    assert len(ev["arrays"]["scores"]) == 9 and math.isfinite(ev["auroc"])


def test_eval_features_small_datasets_unchanged():
    """32x32 data: eval_features is extract_features on the stored images with T's 0.54 crop, as before."""
    from csigen import score as S
    from csigen.augment import SimCLRAugment
    from csigen.config import make_config
    from csigen.train import eval_features

    task = load_task("shapes", "circle", max_train=6, max_test=5)
    config = make_config("smoke", dataset="shapes", inlier="circle", eval_samples=2, eval_batch_size=4)
    torch.manual_seed(0)
    F = _TinyF()
    got = eval_features(F, task, config, "test", device=torch.device("cpu"), seed=3)
    want = S.extract_features(F, task.test_images, SimCLRAugment(crop_scale=(0.54, 0.54)), num_samples=2,
                              num_shifts=4, batch_size=4, device="cpu", seed=3)
    assert torch.equal(got.simclr, want.simclr) and torch.equal(got.shift, want.shift)


def test_eval_feature_pair_is_eval_features_of_both_splits_with_the_same_settings():
    from csigen.config import make_config
    from csigen.train import eval_feature_pair, eval_features

    task = load_task("shapes", "stripes", max_train=6, max_test=5)
    config = make_config("smoke", dataset="shapes", inlier="stripes", eval_samples=2, eval_batch_size=4)
    torch.manual_seed(0)
    F, cpu = _TinyF(), torch.device("cpu")
    train, test = eval_feature_pair(F, task, config, device=cpu, seed=3, num_samples=3)
    for split, got in (("train", train), ("test", test)):
        want = eval_features(F, task, config, split, device=cpu, seed=3, num_samples=3)
        assert got.simclr.shape[0] == len(task.train_images if split == "train" else task.test_images)
        assert torch.equal(got.simclr, want.simclr) and torch.equal(got.shift, want.shift)
    other = eval_features(F, task, config, "test", device=cpu, seed=4, num_samples=3)
    assert not torch.equal(test.simclr, other.simclr)  # the seed reaches the draws


# --------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# --------------------------------------------------------------------------


def test_cifar10_missing_raises(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_task("cifar10", "airplane", root=tmp_path, download=False)
    msg = str(info.value)
    assert str(tmp_path) in msg and "download=True" in msg
    assert "cifar-10-python.tar.gz" in msg and "imagefolder" in msg and "CSIGEN_DATA" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_cifar10_download_failure_wrapped(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets

    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(DataNotFoundError, match="download failed"):
        load_task("cifar10", 0, root=tmp_path, download=True)


def _fake_cifar10(root: Path, n_per_batch: int = 20) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = [i % 10 for i in range(n_per_batch)]
        x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        x[:, 0] = labels  # pixel (0, 0) red = label
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": x, "labels": labels}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, fh)


def test_cifar10_fake_pickles(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    _fake_cifar10(tmp_path)
    # torchvision checks md5 sums even with download=False (reference.md section 4).
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    task = load_task("cifar10", "cat", root=tmp_path, download=False)
    assert task.inlier == 3 and task.train_images.shape == (10, 3, 32, 32)  # 2 per batch x 5 batches
    assert (task.train_images[:, 0, 0, 0] == 3).all()
    assert task.test_images.shape == (20, 3, 32, 32)
    assert torch.equal(task.test_images[:, 0, 0, 0].long(), task.test_labels)
    assert int(task.test_is_inlier.sum()) == 2
    sub = load_task("cifar10", 3, root=tmp_path, download=False, max_train=4, max_test=10)
    assert sub.train_images.shape[0] == 4 and sub.test_labels.bincount(minlength=10).tolist() == [1] * 10


def test_cifar100_csi_superclass_list():
    assert len(CIFAR100_CSI_SUPERCLASS) == 20
    assert all(len(row) == 5 for row in CIFAR100_CSI_SUPERCLASS)
    flat = sorted(i for row in CIFAR100_CSI_SUPERCLASS for i in row)
    assert flat == list(range(100))
    assert len(CIFAR100_COARSE_CLASSES) == 20
    assert data.load_task.__doc__ and "issue 21" in data.load_task.__doc__


def _fake_cifar100(root: Path) -> dict:
    """Tiny CIFAR-100 pickles: one image per fine label, coarse label = fine // 5."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = list(range(100))
    coarse = [f // 5 for f in fine]
    x = np.zeros((100, 3072), dtype=np.uint8)
    x[:, 0] = fine  # pixel (0, 0) red = fine label
    for name in ("train", "test"):
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": x, "fine_labels": fine, "coarse_labels": coarse}, fh)
    return {"fine": np.array(fine), "coarse": np.array(coarse)}


def test_cifar100_both_superclass_modes(tmp_path):
    _fake_cifar100(tmp_path)
    csi = load_task("cifar100", 0, root=tmp_path, download=False)
    assert csi.inlier_name == "aquatic_mammals" and csi.info["superclasses"] == "csi"
    assert sorted(csi.train_images[:, 0, 0, 0].tolist()) == list(CIFAR100_CSI_SUPERCLASS[0])
    assert csi.test_images.shape == (100, 3, 32, 32)
    fine_of_test = csi.test_images[:, 0, 0, 0].long()
    for s, row in enumerate(CIFAR100_CSI_SUPERCLASS):
        assert sorted(fine_of_test[csi.test_labels == s].tolist()) == list(row)

    tv = load_task("cifar100", "aquatic_mammals", root=tmp_path, download=False,
                   cifar100_superclasses="torchvision")
    assert tv.inlier == 0 and tv.info["superclasses"] == "torchvision"
    assert sorted(tv.train_images[:, 0, 0, 0].tolist()) == [0, 1, 2, 3, 4]  # coarse label read from pickle
    assert torch.equal(tv.test_labels, tv.test_images[:, 0, 0, 0].long() // 5)
    assert "superclasses=torchvision" in tv.describe()


def test_cifar100_missing_raises(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar-100-python"):
        load_task("cifar100", 0, root=tmp_path, download=False)


def test_default_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CSIGEN_DATA", str(tmp_path))
    assert data.default_data_root() == tmp_path
    with pytest.raises(DataNotFoundError, match=str(tmp_path)):
        load_task("cifar10", 0, download=False)
    monkeypatch.delenv("CSIGEN_DATA")
    assert data.default_data_root() == Path("~/.cache/csigen/data").expanduser()


def test_the_cli_chooses_the_cifar100_grouping(tmp_path, capsys):
    from csigen.cli import build_parser, main

    _fake_cifar100(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "cifar100", "--data-root", str(tmp_path / "data"), "--no-download",
                 "--inlier", "aquatic_mammals", "--cifar100-superclasses", "torchvision", "--variant", "csi",
                 "--preset", "smoke", "--max-steps", "1", "--batch-size", "2", "--eval-samples", "1",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["config"]["cifar100_superclasses"] == "torchvision" and result["inlier"] == 0
    sweep_args = build_parser().parse_args(["sweep", "--dataset", "cifar100", "--cifar100-superclasses", "csi"])
    assert sweep_args.cifar100_superclasses == "csi"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--cifar100-superclasses", "coarse"])
