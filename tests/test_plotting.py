"""Tests for csigen.plotting and csigen.widgets on small inputs (Agg backend, no display)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from csigen import plotting, widgets
from csigen.augment import SimCLRAugment


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _images(n=3, size=16, uint8=False):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    return (x * 255).round().to(torch.uint8) if uint8 else x


def _history(n=30):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"step": np.arange(1, n + 1), "csi": rng.random(n), "con_si": rng.random(n),
                          "cls_si": rng.random(n), "lr": np.full(n, 0.1)})
    frame["d"] = np.where(frame["step"] % 5 == 0, rng.random(n), np.nan)  # GAN losses every 5 steps
    return frame


def _grid_image(ax):
    assert len(ax.images) == 1
    return ax.images[0].get_array()


@pytest.mark.parametrize("uint8", [False, True])
def test_image_grid(uint8):
    ax = plotting.image_grid(_images(5, uint8=uint8), nrow=2, title="t")
    arr = _grid_image(ax)
    # 2 columns x 3 rows of 16 px tiles with 2 px padding
    assert arr.shape == (3 * 18 + 2, 2 * 18 + 2, 3)
    assert ax.get_title() == "t" and len(ax.figure.axes) == 1


def test_image_grid_draws_into_given_ax():
    fig, axes = plt.subplots(1, 2)
    assert plotting.image_grid(_images(2), ax=axes[1]) is axes[1]
    assert len(fig.axes) == 2


def test_show_rotations():
    x = torch.zeros(2, 3, 16, 16)
    x[:, :, 0, 0] = 1.0  # a white corner pixel rotates around
    ax = plotting.show_rotations(x)
    arr = _grid_image(ax)
    assert arr.shape == (2 * 18 + 2, 4 * 18 + 2, 3)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0°", "90°", "180°", "270°"]
    assert arr[2, 2, 0] == 1.0 and arr[2 + 15, 20 + 0, 0] == 1.0  # rot90 moves top-left to bottom-left


def test_show_augmentations_reproducible():
    aug = SimCLRAugment()
    ax1 = plotting.show_augmentations(_images(2), aug, n_views=3, generator=torch.Generator().manual_seed(1))
    ax2 = plotting.show_augmentations(_images(2), aug, n_views=3, generator=torch.Generator().manual_seed(1))
    arr = _grid_image(ax1)
    assert arr.shape == (2 * 18 + 2, 4 * 18 + 2, 3)
    assert len(ax1.get_xticklabels()) == 4
    np.testing.assert_array_equal(arr, _grid_image(ax2))


def test_reconstructions_pairs_real_left():
    x, x_hat = _images(3), torch.zeros(3, 3, 16, 16)
    ax = plotting.reconstructions(x, x_hat, pairs_per_row=3)
    arr = _grid_image(ax)
    assert arr.shape == (18 + 2, 6 * 18 + 2, 3)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["real", "recon."] * 3
    np.testing.assert_allclose(arr[2:18, 2:18], x[0].permute(1, 2, 0).numpy(), atol=1e-6)
    assert np.all(arr[2:18, 20:36] == 0)
    with pytest.raises(ValueError):
        plotting.reconstructions(x, x_hat[:2])


def test_similarity_matrix_marks_positive_pairs():
    n, d = 4, 8
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    features = torch.cat([z, z + 0.01], dim=0)
    ax = plotting.similarity_matrix(features)
    sim = _grid_image(ax)
    assert sim.shape == (2 * n, 2 * n)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-6)
    assert sim[0, n] > 0.99
    offsets = ax.collections[0].get_offsets()
    assert len(offsets) == 2 * n
    assert {(int(c), int(r)) for c, r in offsets} == {(i + n, i) for i in range(n)} | {(i, i + n) for i in range(n)}
    assert len(ax.figure.axes) == 2  # heatmap + colorbar
    with pytest.raises(ValueError):
        plotting.similarity_matrix(torch.randn(3, 4))


def test_score_histogram():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(1, 0.3, 20), rng.normal(0, 0.3, 30)])
    is_inlier = np.arange(50) < 20
    ax = plotting.score_histogram(scores, is_inlier, bins=10)
    assert ax.get_legend() is not None
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["inlier", "outlier"]
    assert len(ax.lines) == 2  # one KDE per group
    assert len(ax.collections) + len(ax.patches) >= 2


def test_roc_curve_legend_has_auroc():
    scores = torch.tensor([0.9, 0.3, 0.35, 0.4, 0.1, 0.2])
    is_inlier = torch.tensor([1, 1, 0, 1, 0, 0], dtype=torch.bool)
    ax = plotting.roc_curve(scores, is_inlier, label="ours")
    plotting.roc_curve(-scores, is_inlier, ax=ax, label="flipped")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["ours: AUROC 88.9%", "flipped: AUROC 11.1%"]
    assert len(ax.lines) == 3  # two curves + one chance diagonal


def test_loss_curves_default_columns_skip_step_and_lr():
    ax = plotting.loss_curves(_history(), window=5)
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["csi", "con_si", "cls_si", "d"]
    assert len(ax.lines[-1].get_xdata()) == 6  # NaN steps dropped
    ax = plotting.loss_curves(_history(), columns=["csi"])
    assert [line.get_label() for line in ax.lines] == ["csi"]


def test_compare_with_paper():
    table = pd.DataFrame({"ours (measured)": [94.0, np.nan], "paper": [95.1, 90.9], "ours (std)": [0.3, np.nan]},
                         index=["CIFAR-10", "CIFAR-100"])
    ax = plotting.compare_with_paper(table, ylim=(80, 100))
    assert len(ax.patches) == 4
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CIFAR-10", "CIFAR-100"]
    assert ax.get_ylim() == (80, 100)
    with pytest.raises(ValueError):
        plotting.compare_with_paper(table.drop(columns="paper"))


def test_table1_figure_labels_a_partial_mean_with_its_coverage():
    seed_means = pd.DataFrame({"dataset": ["cifar10"] * 4, "variant": ["csi", "full", "full", "full"],
                               "seed": [0, 0, 1, 2], "auroc": [76.3, 79.0, 80.0, 80.1]})
    fig = plotting.table1_figure(seed_means, paper={("cifar10", "csi"): 94.3, ("cifar10", "full"): 95.1},
                                 notes={("cifar10", "full"): "2 of 10 classes"})
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["76.3", "79.7\n(2 of 10 classes)"]  # the complete mean carries no note


def test_ablation_figure_labels_a_partial_mean():
    frame = pd.DataFrame({"class": ["cat", "cat", "mean", "mean"], "variant": ["csi", "full"] * 2,
                          "seed": [0] * 4, "auroc": [70.0, 71.0, 70.0, 71.0]})
    fig = plotting.ablation_figure(frame, paper={("mean", "csi"): 94.3, ("mean", "full"): 95.1},
                                   mean_label="mean\n(1 of 10 classes)")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "mean\n(1 of 10 classes)"]
    assert sorted(t.get_text() for t in ax.texts) == ["70.0", "71.0"]
    plain = plotting.ablation_figure(frame).axes[0]
    assert [t.get_text() for t in plain.get_xticklabels()] == ["cat", "mean"]


def test_mean_labels_of_neighbouring_variants_do_not_overlap():
    # three variants with nearly equal means: labels written beside the markers ran into each other
    frame = pd.DataFrame({"class": ["cat"] * 3 + ["mean"] * 3, "variant": ["csi", "csi+g", "full"] * 2,
                          "seed": [0] * 6, "auroc": [70.0, 70.2, 70.1, 80.6, 80.9, 80.5]})
    fig = plotting.ablation_figure(frame, mean_label="mean\n(1 of 10 classes)")
    seed_means = pd.DataFrame({"dataset": ["cifar10"] * 3, "variant": ["csi", "csi+g", "full"],
                               "seed": [0] * 3, "auroc": [76.3, 76.5, 76.4]})
    table1 = plotting.table1_figure(seed_means, notes={("cifar10", "csi+g"): "2 of 10 classes",
                                                       ("cifar10", "full"): "3 of 10 classes"})
    for figure, expected in ((fig, 3), (table1, 3)):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        renderer = FigureCanvasAgg(figure).get_renderer()
        ax = figure.axes[0]
        labels = sorted(ax.texts, key=lambda t: t.xy[0])
        assert len(labels) == expected
        # each label stays inside its own variant's slot (half-way to the neighbouring markers), so it
        # covers neither another label nor another variant's marker
        xs = [ax.transData.transform(t.xy)[0] for t in labels]
        half = min(b - a for a, b in zip(xs, xs[1:])) / 2
        for label, x in zip(labels, xs):
            box = label.get_window_extent(renderer)
            assert x - half <= box.x0 and box.x1 <= x + half, (label.get_text(), box, x, half)


class _FakeTrainer:
    def __init__(self):
        self.frame = _history(10)

    def history_frame(self):
        return self.frame


class _FakeHandle:
    def __init__(self, log):
        self.log = log

    def update(self, obj):
        self.log.append(("update", obj))


def test_live_loss_plot(monkeypatch):
    import IPython.display

    log = []

    def fake_display(obj, display_id=None):
        log.append(("display", obj))
        return _FakeHandle(log)

    monkeypatch.setattr(IPython.display, "display", fake_display)
    cb = plotting.LiveLossPlot(every=2, enabled=True)
    trainer = _FakeTrainer()
    for step in range(1, 6):
        cb.on_step(trainer, {"step": step, "csi": 1.0})
    assert [kind for kind, _ in log] == ["display", "update"]
    assert isinstance(log[0][1], IPython.display.Image) and log[0][1].data[:4] == b"\x89PNG"
    assert cb.draws == 2
    assert [line.get_label() for line in cb.ax.lines] == ["csi", "con_si", "cls_si", "d"]
    assert "step 10" in cb.ax.get_title()


def test_live_loss_plot_does_nothing_outside_ipython():
    cb = plotting.LiveLossPlot(every=1)
    assert cb.enabled is False
    cb.on_step(_FakeTrainer(), {"step": 1})
    assert cb.fig is None and cb.draws == 0


def test_run_picker(tmp_path):
    for name, auroc in (("a", 0.9), ("sweep/b", 0.8)):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "result.json").write_text(json.dumps({"auroc": auroc}))
    (tmp_path / "unfinished").mkdir()
    ui = widgets.run_picker(tmp_path)
    dropdown = ui.widget.children[0]
    assert [label for label, _ in dropdown.options] == ["a", "sweep/b"]
    assert ui.update() == {"auroc": 0.9}
    dropdown.value = str(tmp_path / "sweep" / "b")
    assert ui.update() == {"auroc": 0.8}
    empty = widgets.run_picker(tmp_path / "unfinished")
    assert empty.update() is None


def test_augmentation_explorer():
    ui = widgets.augmentation_explorer(_images(2), n_views=2)
    fig = ui.update()
    assert len(fig.axes) == 1 and len(fig.axes[0].images) == 1
    crop, strength, p_jitter, p_gray = ui.widget.children[:4]
    strength.value, p_jitter.value, p_gray.value = 0.0, 0.0, 0.0
    crop.value = (1.0, 1.0)  # identity: views equal the originals
    arr = ui.update().axes[0].images[0].get_array()
    np.testing.assert_allclose(arr[2:18, 20:36], arr[2:18, 2:18], atol=1e-5)
