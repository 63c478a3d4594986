"""Tests for csigen.data: the procedural shapes set, the loaders and their errors."""

from __future__ import annotations

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


def test_imagenet30_center_crop(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("one_class_train", "one_class_test"):
        for name in ("acorn", "airliner"):
            for i, (w, h) in enumerate(((300, 260), (260, 400))):
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                _save(tmp_path / split / name / f"{i}.JPEG", arr)
    task = load_task("imagenet", "airliner", root=tmp_path, image_size=64)
    assert task.dataset == "imagenet30" and task.inlier == 1
    assert task.train_images.shape == (2, 3, 64, 64) and task.test_images.shape == (4, 3, 64, 64)
    assert load_task("imagenet30", 0, root=tmp_path).train_images.shape == (2, 3, 224, 224)


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
