"""The helpers behind notebooks 06 (FID) and 07 (Figure 2 and its browser).

csigen.fid: :func:`~csigen.fid.inception_features`, :func:`~csigen.fid.frechet_distance`,
:func:`~csigen.fid.fid_sample_size_bias`, :func:`~csigen.fid.g_snapshot_every`,
:func:`~csigen.fid.notebook_weights`, :func:`~csigen.fid.run_with_g_snapshots`;
csigen.figures: :func:`~csigen.figures.eq11_nearest`, :class:`~csigen.figures.Figure2Run`,
:func:`~csigen.figures.load_figure2_run`, :func:`~csigen.figures.figure2_runs`;
csigen.widgets: :func:`~csigen.widgets.figure2_browser`, :func:`~csigen.widgets.latent_interpolation`.
Smoke-sized runs on the built-in shapes data; FIDs with random Inception weights at layer "64".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from csigen import fid, figures, widgets
from csigen import score as S
from csigen.config import make_config

N = 8  # images per FID set
LAYER = "64"
pytestmark = pytest.mark.filterwarnings("ignore:FID from")  # tiny sets: the bias warning is expected

PNG_MAGIC = b"\x89PNG"


def _config(**kw):
    base = {"dataset": "shapes", "inlier": "circle", "variant": "csi+g", "max_steps": 2, "batch_size": 2,
            "gan_every": 2, "max_train": 8, "max_test": 16, "eval_samples": 1, "checkpoint_every_steps": None}
    return make_config("smoke", **(base | kw))


@pytest.fixture(scope="module")
def task():
    from csigen.data import load_task

    return load_task("shapes", "circle", max_train=8, max_test=16)


# ----------------------------------------------------------------------------
# csigen.fid
# ----------------------------------------------------------------------------
def test_frechet_distance_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=g)
    assert fid.frechet_distance(a, a + 0.5) == pytest.approx(5 * 0.25, rel=1e-6)  # equal covariances: d c^2
    assert fid.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    b = 2.0 * torch.randn(200, 5, generator=g) + 1.0
    x, y = a.double().numpy(), b.double().numpy()
    ca, cb = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(ca)  # (S_a S_b)^(1/2) has the trace of (S_a^(1/2) S_b S_a^(1/2))^(1/2)
    root_a = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root_a @ cb @ root_a)
    expected = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(inner).sum()
    assert fid.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        fid.frechet_distance(a[:1], b)
    with pytest.raises(ValueError, match="differ in dimension"):
        fid.frechet_distance(a, b[:, :3])


def test_inception_features_give_torch_fidelitys_fid(weights):
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (N, 3, 32, 32), generator=gen, dtype=torch.uint8)
    b = torch.randint(0, 128, (N, 3, 32, 32), generator=gen, dtype=torch.uint8)
    fa = fid.inception_features(a, weights_path=weights, feature_layer=LAYER, batch_size=N)
    fb = fid.inception_features(b, weights_path=weights, feature_layer=LAYER, batch_size=N)
    assert fa.shape == (N, 64) and fb.shape == (N, 64)
    direct = fid.fid_between(a, b, weights_path=weights, feature_layer=LAYER, batch_size=N)
    assert fid.frechet_distance(fa, fb) == pytest.approx(direct, rel=1e-5, abs=1e-6)


def test_fid_sample_size_bias_falls_with_the_sample_count():
    features = torch.randn(400, 8, generator=torch.Generator().manual_seed(0))  # one distribution: true value 0
    table = fid.fid_sample_size_bias(features, [10, 50, 200], repeats=3, seed=0)
    assert list(table.columns) == ["samples", "repeat", "fid"] and len(table) == 9
    means = table.groupby("samples")["fid"].mean()
    assert means[10] > means[50] > means[200] > 0
    assert table.equals(fid.fid_sample_size_bias(features, [10, 50, 200], repeats=3, seed=0))  # seeded
    with pytest.raises(ValueError, match=r"\[2, 200\]"):
        fid.fid_sample_size_bias(features, [201])
    with pytest.raises(ValueError, match="repeats"):
        fid.fid_sample_size_bias(features, [10], repeats=0)


def test_g_snapshot_every_spreads_the_snapshots_over_the_run():
    smoke = make_config("smoke")  # 1 epoch, at most 4 steps of 4 images
    assert [fid.g_snapshot_every(smoke, 32, k) for k in (1, 2, 3, 4, 8)] == [4, 2, 2, 1, 1]
    assert fid.g_snapshot_every(smoke, 32, 0) is None
    cpu = make_config("cpu-fp32")  # 7 epochs of 1000 // 32 = 31 steps: 217 steps (at most 420)
    assert cpu.planned_steps(1000) == 217 and fid.g_snapshot_every(cpu, 1000, 4) == math.ceil(217 / 4)
    assert fid.g_snapshot_every(make_config("quick"), 5000, 4) == math.ceil(100 * (5000 // 64) / 4)
    with pytest.raises(ValueError, match="non-negative"):
        fid.g_snapshot_every(smoke, 32, -1)


def test_notebook_weights_never_download_in_smoke_mode_and_fall_back_offline(tmp_path, monkeypatch, capsys):
    made = []

    def fake_random_weights(path, seed=0):
        made.append(Path(path))
        Path(path).write_bytes(b"random")
        return Path(path)

    def no_download(verbose=False):
        raise fid.InceptionWeightsUnavailable("offline")

    monkeypatch.setattr(fid, "make_offline_inception_weights", fake_random_weights)
    monkeypatch.setattr(fid, "_download_default_weights", no_download)
    path = fid.notebook_weights(tmp_path, smoke=True)
    assert path == tmp_path / "offline-inception.pt" and made == [path]
    assert fid.notebook_weights(tmp_path, smoke=True) == path and len(made) == 1  # written once
    assert fid.notebook_weights(tmp_path, smoke=False) == path  # offline: the random file, said loudly
    assert "NOT a FID" in capsys.readouterr().out
    real = tmp_path / "real.pth"
    real.write_bytes(b"weights")
    monkeypatch.setattr(fid, "_download_default_weights", lambda verbose=False: real)
    assert fid.notebook_weights(tmp_path, smoke=False) == real
    monkeypatch.setenv(fid.ENV_WEIGHTS, str(real))
    assert fid.notebook_weights(tmp_path, smoke=True) == real  # $CSIGEN_FID_WEIGHTS wins, even in smoke mode


def test_run_with_g_snapshots_replays_a_run_finished_without_them(tmp_path, task, monkeypatch):
    from csigen.disk import WEIGHTS_FILE
    from csigen.train import Trainer, run

    main = tmp_path / "runs" / "shapes-circle-csi+g"
    run(_config(), main, task=task, progress=False)  # as notebook 02 leaves it: finished, no snapshots
    snap = _config(g_snapshot_every_steps=1)
    folder = fid.run_with_g_snapshots(snap, main, task=task)
    assert folder == tmp_path / "runs" / "g-snapshots" / main.name
    assert list(fid.list_g_snapshots(folder)) == [1, 2] and not fid.list_g_snapshots(main)
    assert (folder / WEIGHTS_FILE).exists() and not (folder / "result.json").exists()
    assert not (folder / "config.json").exists()  # never counted as a run by collect / figures
    replayed = torch.load(folder / WEIGHTS_FILE, weights_only=True)["nets"]["G"]
    original = torch.load(main / WEIGHTS_FILE, weights_only=True)["nets"]["G"]
    assert all(torch.equal(replayed[k], original[k]) for k in original)  # the same G on a CPU
    assert fid.load_g_snapshot(fid.g_snapshot_path(folder, 2)).keys() == original.keys()

    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("trained again"))
    assert fid.run_with_g_snapshots(snap, main, task=task) == folder  # done once: only read back
    monkeypatch.undo()

    fresh = tmp_path / "runs" / "fresh"  # a new run is trained in its own folder, with snapshots
    assert fid.run_with_g_snapshots(snap, fresh, task=task) == fresh
    assert list(fid.list_g_snapshots(fresh)) == [1, 2] and (fresh / "result.json").exists()
    with pytest.raises(ValueError, match="g_snapshot_every_steps"):
        fid.run_with_g_snapshots(_config(), fresh, task=task)
    with pytest.raises(ValueError, match="no generator"):
        fid.run_with_g_snapshots(_config(variant="csi", g_snapshot_every_steps=1), fresh, task=task)


# ----------------------------------------------------------------------------
# csigen.figures: Eq. 11's nearest training image, Figure2Run
# ----------------------------------------------------------------------------
def _features(n: int, seed: int, k: int = 4, d: int = 16) -> S.Features:
    g = torch.Generator().manual_seed(seed)
    return S.Features(torch.randn(n, k, d, generator=g), torch.randn(n, k, k, generator=g))


def test_eq11_nearest_is_the_argmax_behind_the_score():
    test, train = _features(7, 0), _features(11, 1)
    unit = torch.nn.functional.normalize(train.simclr, dim=-1)
    for neighbour in ("shared", "literal"):
        index, score = figures.eq11_nearest(test, train, neighbour=neighbour)
        assert index.shape == score.shape == (7,) and index.dtype == torch.int64
        assert torch.allclose(score, S.nearest_neighbour_score(test, train, neighbour=neighbour), atol=1e-5)
        chunked = figures.eq11_nearest(test, train, neighbour=neighbour, chunk_size=3)
        assert torch.equal(chunked[0], index) and torch.allclose(chunked[1], score)
        for i in range(7):  # brute force over the training images
            if neighbour == "shared":
                expected = int(max(range(11), key=lambda j: float((test.simclr[i] * unit[j]).sum())))
            else:
                expected = int(max(range(11), key=lambda j: float(test.simclr[i, 0] @ unit[j, 0])))
            assert int(index[i]) == expected
            assert float(score[i]) == pytest.approx(float((test.simclr[i] * unit[expected]).sum()), abs=1e-5)
    with pytest.raises(ValueError, match="per_shift"):
        figures.eq11_nearest(test, train, neighbour="per_shift")
    with pytest.raises(ValueError, match="disagree"):
        figures.eq11_nearest(test, _features(5, 2, d=8))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, task):
    from csigen.train import run

    root = tmp_path_factory.mktemp("runs")
    run(_config(variant="full"), root / "full", task=task, progress=False)
    run(_config(variant="csi"), root / "csi", task=task, progress=False)
    return root


G_MODE = {"bn_samples": 16, "bn_batch_size": 8}  # the protocol's mode, smaller (4096 samples take seconds)


def test_load_figure2_run_reproduces_the_stored_scores_and_caches_its_features(full_run, monkeypatch):
    assert figures.figure2_runs(full_run) == [full_run / "full"]  # the csi run has no G or E
    data = figures.load_figure2_run(full_run / "full", **G_MODE)
    assert data.neighbour == "shared" and data.scores.shape == (16,) and data.nearest.shape == (16,)
    assert np.allclose(data.scores, data.stored_scores, atol=1e-5)  # the run's own evaluation, recomputed
    assert (full_run / "full" / figures.FIGURE2_FEATURES_FILE).exists()
    assert data.G.fid_mode == {"bn_mode": "prior", **G_MODE, "bn_seed": 0} and not data.G.training
    monkeypatch.setattr(figures, "_figure2_features", lambda *a, **k: pytest.fail("features recomputed"))
    again = figures.load_figure2_run(full_run / "full", **G_MODE)  # from the cache
    assert np.array_equal(again.scores, data.scores) and np.array_equal(again.nearest, data.nearest)
    monkeypatch.undo()
    (full_run / "full" / figures.FIGURE2_FEATURES_FILE).write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match="recomputing the features"):
        damaged = figures.load_figure2_run(full_run / "full", **G_MODE)
    assert np.array_equal(damaged.scores, data.scores)
    with pytest.raises(ValueError, match="'full' run"):
        figures.load_figure2_run(full_run / "csi")


def test_figure2_browser_renders_and_follows_its_controls(full_run):
    import ipywidgets

    data = figures.load_figure2_run(full_run / "full", **G_MODE)
    loads = []
    browser = widgets.figure2_browser(full_run, load=lambda p: loads.append(p) or data)

    def find(kind):
        stack, found = [browser.widget], []
        while stack:
            w = stack.pop(0)
            found += [w] if isinstance(w, kind) else []
            stack += list(getattr(w, "children", ()))
        return found[0]

    slider, toggle, picker = find(ipywidgets.IntSlider), find(ipywidgets.ToggleButtons), find(ipywidgets.Dropdown)
    first = browser.update()
    assert loads == [full_run / "full"] and picker.value == str(full_run / "full")
    inliers, outliers = data.indices("inliers"), data.indices("outliers")
    assert first["group"] == "inliers" and first["index"] == inliers[0] and slider.max == len(inliers) - 1
    assert first["nearest"] == data.nearest[inliers[0]] and first["score"] == pytest.approx(data.scores[inliers[0]])
    assert first["stored_score"] == pytest.approx(first["score"], abs=1e-5)
    picture = browser.output
    assert bytes(picture.value).startswith(PNG_MAGIC) and widgets.FIGURE2_BROWSER_IMAGE_CLASS in picture._dom_classes
    assert widgets.FIGURE2_BROWSER_CLASS in browser.widget._dom_classes
    before = bytes(picture.value)
    slider.value = 1  # as a user's drag: the observer renders the second inlier
    assert bytes(picture.value) != before and browser.update()["index"] == inliers[1]
    toggle.value = "outliers"
    assert slider.max == len(outliers) - 1 and browser.update()["index"] == outliers[1]
    assert browser.update()["class"] != "circle" and len(loads) == 1  # the run is loaded once
    with pytest.raises(ValueError, match="no full run"):
        widgets.figure2_browser(full_run / "csi")


def test_latent_interpolation_goes_from_one_reconstruction_to_the_other(full_run):
    data = figures.load_figure2_run(full_run / "full", **G_MODE)
    inl, out = data.indices("inliers")[0], data.indices("outliers")[0]
    ends = data.interpolate(inl, out, [0.0, 1.0])
    assert torch.allclose(ends, data.reconstruct([inl, out]), atol=1e-5)  # a = 0 and 1: G(E(x1)), G(E(x2))
    interpolation = widgets.latent_interpolation(data)
    middle = interpolation.update()
    assert middle.shape == (3, 32, 32) and torch.allclose(middle, data.interpolate(inl, out, [0.5])[0], atol=1e-6)
    assert bytes(interpolation.output.value).startswith(PNG_MAGIC)
    alpha = interpolation.widget.children[0]
    before = bytes(interpolation.output.value)
    alpha.value = 0.0
    assert bytes(interpolation.output.value) != before
    with pytest.raises(ValueError, match="test-image index"):
        widgets.latent_interpolation(data, first=99)
