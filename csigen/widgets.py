"""Small ipywidgets UIs for the notebooks.

Compatible with ipywidgets 7.6+ and 8.x (Colab ships 7.7.1): only
``Dropdown``, ``FloatSlider``, ``FloatRangeSlider``, ``IntSlider``, ``Label``,
``HTML``, ``Image``, ``Output``, ``ToggleButtons``, ``VBox``/``HBox``, ``add_class`` and
``observe(..., names="value")`` are used (tests/test_widgets_ipywidgets7.py
runs them under 7.7.1, tests/test_browser.py in JupyterLab 4 with 8.x).

Each function returns an :class:`Interactive`: ``.widget`` to display and
``.update()``, the callback the widget runs on every change. Exceptions
raised inside widget callbacks are swallowed by ipywidgets, so a notebook
(and the tests) should call ``.update()`` once directly: an error then shows.
An :class:`Interactive` displays as its widget when it is a cell's last value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Interactive", "OperatingPoint", "augmentation_explorer", "finished_runs", "operating_point", "run_picker",
           "threshold_explorer"]


@dataclass
class Interactive:
    """A widget and the callback that renders it (call ``update()`` to run it directly)."""

    widget: Any
    update: Callable[..., Any]
    output: Any = None

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def finished_runs(runs_dir) -> list[Path]:
    """Run folders under ``runs_dir`` (at any depth) that hold a ``result.json``, sorted."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.rglob("result.json"))


def run_picker(runs_dir) -> Interactive:
    """A dropdown of the finished runs under ``runs_dir``; shows the chosen run's ``result.json``.

    ``update()`` renders the current choice and returns its result as a dict
    (None when there is no finished run).
    """
    import ipywidgets as widgets

    root = Path(runs_dir)
    runs = finished_runs(root)
    output = widgets.Output()
    if not runs:
        label = widgets.Label(value=f"no finished runs (result.json) under {root}")
        return Interactive(widget=widgets.VBox([label, output]), update=lambda *_: None, output=output)

    options = [(str(p.relative_to(root)) if p != root else p.name, str(p)) for p in runs]
    dropdown = widgets.Dropdown(options=options, value=options[0][1], description="run",
                                layout=widgets.Layout(width="60%"))

    def update(change=None) -> dict:
        path = Path(dropdown.value)
        result = json.loads((path / "result.json").read_text())
        output.outputs = ()  # replace, not clear_output(wait=True), which can stall nbclient
        with output:
            print(path)
            print(json.dumps(result, indent=2, sort_keys=True, default=str))
        return result

    dropdown.observe(update, names="value")
    return Interactive(widget=widgets.VBox([dropdown, output]), update=update, output=output)


def augmentation_explorer(images, n_views: int = 6, seed: int = 0) -> Interactive:
    """Sliders for the SimCLR augmentation T; re-renders views of ``images`` on every change.

    Sliders: crop scale range (CSI: 0.08 to 1), colour-jitter strength s
    (``jitter = (0.8 s, 0.8 s, 0.8 s, 0.2 s)``, SimCLR's convention; CSI's
    (0.4, 0.4, 0.4, 0.1) is s = 0.5), jitter probability (0.8) and grayscale
    probability (0.2). The draws use a fixed ``seed``, so a change in the
    picture comes from the settings, not from new randomness.

    ``update()`` renders and returns the matplotlib Figure.
    """
    import ipywidgets as widgets
    import torch
    from IPython.display import display
    from matplotlib.figure import Figure

    from csigen.augment import SimCLRAugment
    from csigen.plotting import figure_png, show_augmentations

    images = torch.as_tensor(images)
    style = {"description_width": "initial"}
    layout = widgets.Layout(width="420px")
    crop = widgets.FloatRangeSlider(value=(0.08, 1.0), min=0.02, max=1.0, step=0.02, description="crop scale",
                                    style=style, layout=layout, continuous_update=False)
    strength = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="jitter strength s",
                                   style=style, layout=layout, continuous_update=False)
    p_jitter = widgets.FloatSlider(value=0.8, min=0.0, max=1.0, step=0.05, description="jitter probability",
                                   style=style, layout=layout, continuous_update=False)
    p_gray = widgets.FloatSlider(value=0.2, min=0.0, max=1.0, step=0.05, description="grayscale probability",
                                 style=style, layout=layout, continuous_update=False)
    output = widgets.Output()

    def update(change=None):
        lo, hi = crop.value
        lo = max(float(lo), 1e-3)
        s = float(strength.value)
        augment = SimCLRAugment(crop_scale=(lo, max(float(hi), lo)), jitter=(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s),
                                p_jitter=float(p_jitter.value), p_gray=float(p_gray.value))
        fig = Figure(figsize=(1.1 * (1 + n_views), 1.1 * images.shape[0] + 0.6))
        ax = fig.add_subplot(1, 1, 1)
        show_augmentations(images, augment, n_views=n_views, generator=torch.Generator().manual_seed(seed), ax=ax,
                           title=f"crop {lo:.2f}-{hi:.2f}, jitter s={s:.2f} (p={p_jitter.value:.2f}), "
                                 f"gray p={p_gray.value:.2f}")
        fig.tight_layout()
        output.outputs = ()  # replace, not clear_output(wait=True), which can stall nbclient
        with output:
            display(figure_png(fig))
        return fig

    for w in (crop, strength, p_jitter, p_gray):
        w.observe(update, names="value")
    widget = widgets.VBox([crop, strength, p_jitter, p_gray, output])
    return Interactive(widget=widget, update=update, output=output)


@dataclass(frozen=True)
class OperatingPoint:
    """The confusion matrix of "inlier if score >= threshold" on a labelled test set.

    Inliers are the positive class (csigen's convention: higher score = more
    inlier-like), so ``tpr`` is the fraction of inliers kept and ``fpr`` the
    fraction of outliers let through: the point ``(fpr, tpr)`` on the ROC curve.
    """

    threshold: float
    tp: int  # inliers called inliers
    fn: int  # inliers called outliers (false alarms)
    fp: int  # outliers called inliers (missed anomalies)
    tn: int  # outliers called outliers

    @property
    def tpr(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def fpr(self) -> float:
        return self.fp / max(self.fp + self.tn, 1)

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / max(self.tp + self.fn + self.fp + self.tn, 1)

    def matrix(self):
        """``(2, 2)`` array, rows the true class, columns the decision, in the order (inlier, outlier)."""
        import numpy as np

        return np.array([[self.tp, self.fn], [self.fp, self.tn]])


def _scores_and_labels(scores, is_inlier):
    """``(M,)`` float64 scores and ``(M,)`` bool labels, checked (clear errors for bad input)."""
    import numpy as np

    s = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64).ravel()
    inl = np.asarray(is_inlier.detach().cpu() if hasattr(is_inlier, "detach") else is_inlier).ravel()
    if s.shape != inl.shape:
        raise ValueError(f"scores and is_inlier differ in length ({s.size} vs {inl.size}): pass the two arrays "
                         "of one run's scores.npz ('scores', 'is_inlier')")
    if not np.isin(inl, (0, 1)).all():
        raise ValueError("is_inlier must hold booleans (True = inlier), as scores.npz['is_inlier'] does")
    inl = inl.astype(bool)
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite: the run's evaluation "
                         "failed; re-evaluate it (`csigen eval --run DIR`)")
    if inl.all() or not inl.any():
        raise ValueError("a threshold needs inliers and outliers in the test set; is_inlier is all "
                         f"{bool(inl[0]) if inl.size else 'empty'}")
    return s, inl


def operating_point(scores, is_inlier, threshold: float) -> OperatingPoint:
    """Confusion matrix (sklearn.metrics.confusion_matrix) of calling ``scores >= threshold`` inliers.

    Args:
        scores: ``(M,)`` normality scores, higher = more inlier-like (``scores.npz['scores']``).
        is_inlier: ``(M,)`` booleans, the truth (``scores.npz['is_inlier']``).
        threshold: the decision threshold t; ``s >= t`` is called an inlier, as in
            ``sklearn.metrics.roc_curve``, so the point lies on the ROC curve it draws.
    """
    from sklearn.metrics import confusion_matrix

    s, inl = _scores_and_labels(scores, is_inlier)
    (tp, fn), (fp, tn) = confusion_matrix(inl, s >= threshold, labels=[True, False])
    return OperatingPoint(float(threshold), int(tp), int(fn), int(fp), int(tn))


def threshold_explorer(scores, is_inlier, title: str | None = None, threshold: float | None = None,
                       dpi: int = 80) -> Interactive:
    """A score-threshold slider showing the confusion matrix and the point on the ROC curve.

    The AUROC summarises a detector over all thresholds; using it means picking
    one threshold t and calling ``score >= t`` an inlier. The slider moves t over
    the range of ``scores``; each change redraws (one PNG in an ``Image``
    widget) the score distributions of inliers and outliers with t marked, the
    confusion matrix at t, and the ROC curve with the point (FPR, TPR) at t,
    and a line of text gives the counts.

    Args:
        scores: ``(M,)`` normality scores, higher = more inlier-like (``scores.npz['scores']``).
        is_inlier: ``(M,)`` booleans (``scores.npz['is_inlier']``); both classes must occur.
        title: drawn above the figure (e.g. the run's name).
        threshold: the starting t; None starts where 95% of the inliers are kept (TPR >= 95%,
            the "FPR at 95% TPR" operating point of the out-of-distribution literature).
        dpi: resolution of the rendered figure.

    ``update()`` renders the current threshold and returns its :class:`OperatingPoint`;
    ``output`` is the ``Image`` widget holding the PNG.
    """
    import ipywidgets as widgets
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    from csigen.plotting import figure_png, roc_curve, score_histogram

    s, inl = _scores_and_labels(scores, is_inlier)
    lo, hi = float(s.min()), float(s.max())
    if hi <= lo:  # every score equal: any threshold gives one of two points; keep the slider usable
        lo, hi = lo - 0.5, hi + 0.5
    if threshold is None:
        threshold = float(np.quantile(s[inl], 0.05, method="lower"))
    slider = widgets.FloatSlider(value=min(max(float(threshold), lo), hi), min=lo, max=hi, step=(hi - lo) / 500,
                                 description="threshold t", readout_format=".4g", continuous_update=False,
                                 style={"description_width": "initial"}, layout=widgets.Layout(width="520px"))
    summary = widgets.HTML()
    image = widgets.Image(format="png")

    def update(change=None) -> OperatingPoint:
        t = float(slider.value)
        point = operating_point(s, inl, t)
        fig = Figure(figsize=(12.5, 3.6))
        ax_hist, ax_cm, ax_roc = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.4, 0.9, 1.0]})
        score_histogram(s, inl, ax=ax_hist, kde=False, title="scores; s >= t is called an inlier")
        ax_hist.set_ylim(top=1.3 * ax_hist.get_ylim()[1])  # room for the labels of the two sides of t
        ax_hist.axvline(t, color="black", linewidth=1.5)
        for text, ha in ((" called inlier ->", "left"), ("<- called outlier ", "right")):
            ax_hist.text(t, 0.95, text, transform=ax_hist.get_xaxis_transform(), ha=ha, va="top",
                         fontsize="small")
        ConfusionMatrixDisplay(point.matrix(), display_labels=["inlier", "outlier"]).plot(
            ax=ax_cm, colorbar=False, values_format="d", cmap="Blues")
        ax_cm.set_xlabel("called")
        ax_cm.set_ylabel("true class")
        ax_cm.set_title(f"confusion matrix at t = {t:.4g}")
        roc_curve(s, inl, ax=ax_roc)
        ax_roc.plot([point.fpr], [point.tpr], "o", color="crimson", markersize=8, zorder=5,
                    label=f"t: TPR {point.tpr:.1%}, FPR {point.fpr:.1%}")
        ax_roc.legend(loc="lower right", fontsize="small")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        image.value = figure_png(fig, dpi=dpi).data
        summary.value = (
            f"<b>t = {t:.4g}</b>: {point.tp} of {point.tp + point.fn} inliers kept (TPR {point.tpr:.1%}), "
            f"{point.fp} of {point.fp + point.tn} outliers let through (FPR {point.fpr:.1%}), "
            f"accuracy {point.accuracy:.1%}")
        return point

    slider.observe(update, names="value")
    return Interactive(widget=widgets.VBox([slider, summary, image]), update=update, output=image)


# ----------------------------------------------------------------------------
# Figure 2 browser (notebook 07)
# ----------------------------------------------------------------------------
#: CSS class of the Figure 2 browser's picture (an ``Image`` widget) and of the whole browser, so a
#: browser test can find them: ``.csigen-figure2-browser-image``, ``.csigen-figure2-browser``.
FIGURE2_BROWSER_CLASS = "csigen-figure2-browser"
FIGURE2_BROWSER_IMAGE_CLASS = "csigen-figure2-browser-image"
#: CSS class of the latent interpolation's picture.
INTERPOLATION_IMAGE_CLASS = "csigen-latent-interpolation-image"


def _show_image(ax, image, title: str) -> None:
    """One ``(3, H, W)`` image (float [0, 1] or uint8) on ``ax``, without ticks."""
    import torch

    x = torch.as_tensor(image).detach().cpu()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float().clamp(0, 1)
    ax.imshow(x.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _run_label(path: Path, root: Path | None) -> str:
    """How the run picker names a run: its inlier class and setting (from config.json), and its folder."""
    try:
        config = json.loads((path / "config.json").read_text())
        name = f"{config.get('dataset')} / {config.get('inlier')} ({config.get('preset')}, seed {config.get('seed')})"
    except (OSError, ValueError):
        name = path.name
    where = str(path.relative_to(root)) if root is not None and path != root and root in path.parents else str(path)
    return f"{name}: {where}"


def figure2_browser(runs, *, selected=None, device: str = "cpu", load: Callable[[Any], Any] | None = None,
                    dpi: int = 80) -> Interactive:
    """Browse Figure 2 interactively: a test image, its reconstruction G(E(x)), its nearest training image.

    Controls: a slider over the test images of the chosen group (the first
    control, so dragging it is the natural test), inliers / outliers
    (``ToggleButtons``) and the run (a ``Dropdown`` of ``full`` runs, one per
    inlier class trained). Each change renders one PNG into an ``Image`` widget
    (CSS class :data:`FIGURE2_BROWSER_IMAGE_CLASS`; the whole browser has
    :data:`FIGURE2_BROWSER_CLASS`): the image x, G(E(x)) with G in the FID
    protocol's mode, the nearest training image x~ under Eq. 11
    (:func:`csigen.figures.eq11_nearest`), and the score histogram of inliers and
    outliers with x's score marked; a line of HTML gives the score, where it
    ranks among the inliers' and outliers' scores, and the stored score.

    Args:
        runs: a runs folder (every ``full`` run with a checkpoint below it,
            :func:`csigen.figures.figure2_runs`) or a list of run folders.
        selected: the run shown first (default the first).
        device: where the networks run.
        load: ``run folder -> Figure2Run`` (default
            :func:`csigen.figures.load_figure2_run` on ``device``); each run is
            loaded once, when first picked.
        dpi: resolution of the rendered figure.

    ``update()`` renders the current choice and returns a dict: ``run``,
    ``group``, ``index`` (test-set index), ``class``, ``score``, ``nearest``
    (training-set index), ``stored_score`` (None if not stored). ``output``
    is the ``Image`` widget.
    """
    import ipywidgets as widgets
    import numpy as np
    from matplotlib.figure import Figure

    from csigen import figures
    from csigen.plotting import figure_png, score_histogram

    root = None
    if isinstance(runs, (str, Path)):
        root = Path(runs)
        paths = figures.figure2_runs(root)
    else:
        paths = [Path(p) for p in runs]
    if selected is not None:
        selected = Path(selected)
        paths = [selected] + [p for p in paths if p.resolve() != selected.resolve()]
    if not paths:
        raise ValueError(f"no full run with a checkpoint under {runs!s}: train one (notebook 03, or "
                         "`python -m csigen train --variant full ...`) or pass its folder")
    load = load if load is not None else (lambda p: figures.load_figure2_run(p, device=device))
    loaded: dict[str, Any] = {}

    def data():
        key = str(picker.value)
        if key not in loaded:
            loaded[key] = load(Path(key))
        return loaded[key]

    style = {"description_width": "initial"}
    picker = widgets.Dropdown(options=[(_run_label(p, root), str(p)) for p in paths], value=str(paths[0]),
                              description="run (inlier class)", style=style, layout=widgets.Layout(width="640px"))
    group = widgets.ToggleButtons(options=["inliers", "outliers"], value="inliers",
                                  tooltips=["the test images of the inlier class", "the test images of other classes"])
    index = widgets.IntSlider(value=0, min=0, max=1, description="test image", continuous_update=False,
                              style=style, layout=widgets.Layout(width="520px"))
    summary = widgets.HTML()
    picture = widgets.Image(format="png")
    picture.add_class(FIGURE2_BROWSER_IMAGE_CLASS)
    busy = {"on": False}  # a range change below fires the slider's observer: render once, not twice

    def set_range() -> None:
        count = len(data().indices(group.value))
        busy["on"] = True
        try:
            index.max = max(count - 1, 0)
            index.value = min(index.value, index.max)
        finally:
            busy["on"] = False

    def render() -> dict:
        d = data()
        members = d.indices(group.value)
        if members.size == 0:
            summary.value = f"this run has no {group.value} among its test images"
            return {"run": str(picker.value), "group": group.value, "index": None}
        i = int(members[min(int(index.value), members.size - 1)])
        j = int(d.nearest[i])
        s = float(d.scores[i])
        stored = None if d.stored_scores is None else float(d.stored_scores[i])
        inl = d.is_inlier
        below_in = float(np.mean(d.scores[inl] < s))
        below_out = float(np.mean(d.scores[~inl] < s))
        name = d.class_name(i)
        fig = Figure(figsize=(12.0, 3.1))
        axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 2.2]})
        _show_image(axes[0], d.task.test_images[i], f"x: test image {i} ({name})")
        _show_image(axes[1], d.reconstruct(i)[0], "G(E(x))")
        _show_image(axes[2], d.task.train_images[j], f"nearest training image x~ ({j})")
        score_histogram(d.scores, inl, ax=axes[3], kde=False, title=f"Eq. 11 scores ({d.neighbour})")
        axes[3].axvline(s, color="black", linewidth=1.5)
        axes[3].text(s, 0.95, f" x: {s:.4g}", transform=axes[3].get_xaxis_transform(), ha="left", va="top",
                     fontsize="small")
        fig.suptitle(d.label, fontsize=10)
        fig.tight_layout()
        picture.value = figure_png(fig, dpi=dpi).data
        stored_text = "" if stored is None else f"; stored in scores.npz: {stored:.4g}"
        summary.value = (f"<b>{group.value[:-1]} {int(index.value) + 1} of {members.size}</b> (test image {i}, "
                         f"class {name!r}): Eq. 11 score {s:.4g} ({d.neighbour}){stored_text}; higher than "
                         f"{below_in:.0%} of the inliers' scores and {below_out:.0%} of the outliers'")
        return {"run": str(picker.value), "group": group.value, "index": i, "class": name, "score": s,
                "nearest": j, "stored_score": stored}

    def update(change=None) -> dict | None:
        if busy["on"]:
            return None
        owner = getattr(change, "owner", None) if not isinstance(change, dict) else change.get("owner")
        if change is None or owner is not index:
            set_range()
        return render()

    for w in (picker, group, index):
        w.observe(update, names="value")
    widget = widgets.VBox([index, widgets.HBox([group, picker]), summary, picture])
    widget.add_class(FIGURE2_BROWSER_CLASS)
    return Interactive(widget=widget, update=update, output=picture)


def latent_interpolation(run, *, first: int | None = None, second: int | None = None, steps: int = 9,
                         dpi: int = 80) -> Interactive:
    """A slider a in [0, 1] between two test images: ``G((1 - a) E(x1) + a E(x2))``.

    ``run`` is a :class:`csigen.figures.Figure2Run` (G in the FID protocol's
    mode, E in eval mode). Controls: a (the first slider) and the test-set
    indices of x1 and x2 (default: the first inlier and the first outlier).
    Each change renders x1, G(E(x1)), the image at a, G(E(x2)) and x2, and below
    them the path at ``steps`` evenly spaced values of a, into an ``Image``
    widget (CSS class :data:`INTERPOLATION_IMAGE_CLASS`).

    ``update()`` renders and returns the image at a, float ``(3, H, W)`` in [0, 1].
    """
    import ipywidgets as widgets
    import numpy as np
    import torch
    from matplotlib.figure import Figure

    from csigen.plotting import figure_png, image_grid

    n = int(run.task.test_images.shape[0])
    if n < 2:
        raise ValueError("an interpolation needs at least two test images")
    if int(steps) < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    inl, out = run.indices("inliers"), run.indices("outliers")
    first = int(inl[0] if inl.size else 0) if first is None else int(first)
    second = int(out[0] if out.size else 1) if second is None else int(second)
    for name, v in (("first", first), ("second", second)):
        if not 0 <= v < n:
            raise ValueError(f"{name}={v} is not a test-image index (0 to {n - 1})")
    style = {"description_width": "initial"}
    layout = widgets.Layout(width="520px")
    alpha = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="a", readout_format=".2f",
                                continuous_update=False, style=style, layout=layout)
    x1 = widgets.IntSlider(value=first, min=0, max=n - 1, description="x1 (test image)", continuous_update=False,
                           style=style, layout=layout)
    x2 = widgets.IntSlider(value=second, min=0, max=n - 1, description="x2 (test image)", continuous_update=False,
                           style=style, layout=layout)
    picture = widgets.Image(format="png")
    picture.add_class(INTERPOLATION_IMAGE_CLASS)
    path_alphas = np.linspace(0.0, 1.0, int(steps))

    def update(change=None):
        i, j, a = int(x1.value), int(x2.value), float(alpha.value)
        ends = run.interpolate(i, j, [0.0, a, 1.0])
        path = run.interpolate(i, j, path_alphas)
        fig = Figure(figsize=(10.0, 4.4))
        grid = fig.add_gridspec(2, 5, height_ratios=[1.0, 0.9])
        top = [fig.add_subplot(grid[0, c]) for c in range(5)]
        _show_image(top[0], run.task.test_images[i], f"x1: {i} ({run.class_name(i)})")
        _show_image(top[1], ends[0], "G(E(x1))")
        _show_image(top[2], ends[1], f"G((1-a)E(x1) + aE(x2)), a = {a:.2f}")
        _show_image(top[3], ends[2], "G(E(x2))")
        _show_image(top[4], run.task.test_images[j], f"x2: {j} ({run.class_name(j)})")
        image_grid(torch.as_tensor(path), nrow=int(steps), ax=fig.add_subplot(grid[1, :]),
                   title="a = " + ", ".join(f"{v:.2g}" for v in path_alphas))
        fig.suptitle(run.label, fontsize=10)
        fig.tight_layout()
        picture.value = figure_png(fig, dpi=dpi).data
        return ends[1]

    for w in (alpha, x1, x2):
        w.observe(update, names="value")
    return Interactive(widget=widgets.VBox([alpha, x1, x2, picture]), update=update, output=picture)


__all__ += ["FIGURE2_BROWSER_CLASS", "FIGURE2_BROWSER_IMAGE_CLASS", "INTERPOLATION_IMAGE_CLASS", "figure2_browser",
            "latent_interpolation"]
