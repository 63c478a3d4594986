"""Figures for the notebooks: image grids, augmentations, similarities, scores, losses.

Every function draws into one matplotlib ``Axes``: pass ``ax=`` to place it
in your own figure, or leave it ``None`` for a new figure (``ax.figure``).
Each returns the ``Axes`` it drew on. Nothing here calls ``plt.show()``.

Images are ``(B, 3, H, W)`` tensors, float in [0, 1] or uint8 (docs/design.md).
Scores follow csigen's convention: higher = more inlier-like, inliers are
the positive class of the ROC curve.

The paper's tables and figures (:func:`table1_figure`, :func:`ablation_figure`,
:func:`fid_figure`, :func:`figure2_figure`, used by :mod:`csigen.figures`) each
return a whole matplotlib ``Figure``, drawn in one shared seaborn style
(:func:`style`), with a fixed colour per variant.

:class:`LiveLossPlot` is a trainer callback that redraws the loss curves in
a notebook while :class:`csigen.train.Trainer` runs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np
import torch

from csigen.train import Callback

__all__ = [
    "FIGURE2_LAYOUTS",
    "LiveLossPlot",
    "ablation_figure",
    "compare_with_paper",
    "fid_figure",
    "figure2_figure",
    "figure_png",
    "grouped_points",
    "image_grid",
    "loss_curves",
    "reconstructions",
    "roc_curve",
    "score_histogram",
    "show_augmentations",
    "show_rotations",
    "similarity_matrix",
    "style",
    "table1_figure",
    "variant_palette",
]

#: history columns that are not losses (never plotted by default).
NON_LOSS_COLUMNS = frozenset({"step", "epoch", "time", "seconds", "wall_time", "images", "lr"})
_PAD = 2  # pixels between the tiles of a grid


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _new_ax(ax, figsize):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _to_float(images) -> torch.Tensor:
    """uint8 or float images -> float [0, 1] CPU tensor (B, 3, H, W)."""
    x = torch.as_tensor(images).detach().cpu()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    return x.float().clamp(0.0, 1.0)


def _to_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _grid(x: torch.Tensor, ncol: int) -> np.ndarray:
    """Tile (B, 3, H, W) in [0, 1] into an (H', W', 3) array, row-major, white padding."""
    from torchvision.utils import make_grid

    return make_grid(x, nrow=ncol, padding=_PAD, pad_value=1.0).permute(1, 2, 0).numpy()


def _show_grid(ax, x: torch.Tensor, ncol: int, col_labels: Sequence[str] | None = None,
               row_labels: Sequence[str] | None = None, title: str | None = None):
    ax.imshow(_grid(x, ncol), interpolation="nearest")
    h, w = x.shape[-2:]
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    if col_labels is not None:
        ax.set_xticks([_PAD + c * (w + _PAD) + w / 2 - 0.5 for c in range(len(col_labels))])
        ax.set_xticklabels(col_labels, fontsize=8)
        ax.xaxis.tick_top()
    else:
        ax.set_xticks([])
    if row_labels is not None:
        ax.set_yticks([_PAD + r * (h + _PAD) + h / 2 - 0.5 for r in range(len(row_labels))])
        ax.set_yticklabels(row_labels, fontsize=8)
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


# ----------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------
def image_grid(images, nrow: int = 8, ax=None, title: str | None = None):
    """Images (B, 3, H, W), float [0, 1] or uint8, as a grid of ``nrow`` images per row."""
    x = _to_float(images)
    ncol = max(1, min(int(nrow), x.shape[0]))
    rows = -(-x.shape[0] // ncol)
    ax = _new_ax(ax, (min(1.0 * ncol, 12), min(1.0 * rows, 12) + 0.4))
    return _show_grid(ax, x, ncol, title=title)


def show_rotations(images, ax=None, title: str | None = "the shifts S: rotations"):
    """A few images under the 4 rotations of CSI: rows = images, columns = 0/90/180/270 degrees."""
    x = _to_float(images)
    rotated = torch.stack([torch.rot90(x, k, dims=(2, 3)) for k in range(4)], dim=1)  # (B, 4, 3, H, W)
    ax = _new_ax(ax, (4.0, 1.0 * x.shape[0] + 0.5))
    return _show_grid(ax, rotated.flatten(0, 1), 4, col_labels=["0°", "90°", "180°", "270°"], title=title)


def show_augmentations(images, augment, n_views: int = 6, generator: torch.Generator | None = None,
                       ax=None, title: str | None = "views under the augmentation T"):
    """Each image (a row) followed by ``n_views`` draws of ``augment`` (e.g. :class:`csigen.augment.SimCLRAugment`).

    ``generator`` seeds the draws (same seed, same views).
    """
    x = _to_float(images)
    with torch.no_grad():
        views = [augment(x, generator=generator).detach().cpu().clamp(0, 1) for _ in range(int(n_views))]
    tiles = torch.stack([x, *views], dim=1)  # (B, 1 + n_views, 3, H, W)
    ax = _new_ax(ax, (1.0 * (1 + n_views), 1.0 * x.shape[0] + 0.5))
    labels = ["original"] + [f"view {i + 1}" for i in range(int(n_views))]
    return _show_grid(ax, tiles.flatten(0, 1), 1 + int(n_views), col_labels=labels, title=title)


def reconstructions(x, x_hat, ax=None, pairs_per_row: int = 4, title: str | None = None):
    """Real images and their reconstructions G(E(x)) in pairs, as the paper's Figure 2.

    Each pair shows the real image on the left and its reconstruction on the right.
    """
    real, rec = _to_float(x), _to_float(x_hat)
    if real.shape != rec.shape:
        raise ValueError(f"x and x_hat differ in shape: {tuple(real.shape)} vs {tuple(rec.shape)}")
    pairs = torch.stack([real, rec], dim=1).flatten(0, 1)  # real_0, rec_0, real_1, rec_1, ...
    n_pairs = max(1, min(int(pairs_per_row), real.shape[0]))
    rows = -(-real.shape[0] // n_pairs)
    ax = _new_ax(ax, (2.0 * n_pairs, 1.0 * rows + 0.5))
    labels = ["real", "recon."] * n_pairs
    return _show_grid(ax, pairs, 2 * n_pairs, col_labels=labels, title=title)


# ----------------------------------------------------------------------------
# features and scores
# ----------------------------------------------------------------------------
def similarity_matrix(features, ax=None, title: str | None = "cosine similarity (squares: positive pairs)"):
    """Heatmap of the cosine similarities of stacked two-view features ``(2N, D)``.

    Rows i and i + N are a positive pair (docs/design.md); they are marked
    with squares. The diagonal (each view with itself) is 1.
    """
    f = torch.as_tensor(_to_numpy(features), dtype=torch.float64)
    if f.dim() != 2 or f.shape[0] % 2:
        raise ValueError(f"expected features of shape (2N, D), got {tuple(f.shape)}")
    f = torch.nn.functional.normalize(f, dim=1)
    sim = (f @ f.T).numpy()
    n = f.shape[0] // 2
    ax = _new_ax(ax, (5.0, 4.2))
    image = ax.imshow(sim, cmap="viridis", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    idx = np.arange(n)
    ax.scatter(np.concatenate([idx + n, idx]), np.concatenate([idx, idx + n]), marker="s",
               s=max(4.0, 600.0 / (2 * n)), facecolors="none", edgecolors="red", linewidths=0.8)
    ax.set_xlabel("view index j")
    ax.set_ylabel("view index i")
    if title:
        ax.set_title(title)
    return ax


def score_histogram(scores, is_inlier, ax=None, bins: int = 30, kde: bool = True,
                    title: str | None = None):
    """Distributions of the scores of inliers and outliers (seaborn ``histplot``, densities)."""
    import pandas as pd
    import seaborn as sns

    s, inl = _to_numpy(scores).astype(float).ravel(), _to_numpy(is_inlier).astype(bool).ravel()
    if s.shape != inl.shape:
        raise ValueError(f"scores and is_inlier differ in length: {s.shape[0]} vs {inl.shape[0]}")
    frame = pd.DataFrame({"score": s, "test image": np.where(inl, "inlier", "outlier")})
    ax = _new_ax(ax, (6.0, 3.5))
    sns.histplot(frame, x="score", hue="test image", hue_order=["inlier", "outlier"], stat="density",
                 common_norm=False, bins=bins, kde=kde and len(frame) > 2, element="step", ax=ax)
    ax.set_xlabel("score (higher = more inlier-like)")
    if title:
        ax.set_title(title)
    return ax


def roc_curve(scores, is_inlier, ax=None, label: str | None = None):
    """ROC curve (inliers positive, higher score = inlier) with the AUROC in the legend."""
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as _sk_roc_curve

    s, inl = _to_numpy(scores).astype(float).ravel(), _to_numpy(is_inlier).astype(bool).ravel()
    fpr, tpr, _ = _sk_roc_curve(inl, s)
    auc = 100.0 * roc_auc_score(inl, s)
    ax = _new_ax(ax, (4.0, 4.0))
    name = f"{label}: " if label else ""
    ax.plot(fpr, tpr, label=f"{name}AUROC {auc:.1f}%")
    if not any(line.get_gid() == "chance" for line in ax.lines):
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, gid="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (outliers kept)")
    ax.set_ylabel("true positive rate (inliers kept)")
    ax.legend(loc="lower right")
    return ax


# ----------------------------------------------------------------------------
# training and results
# ----------------------------------------------------------------------------
def _loss_columns(frame) -> list[str]:
    cols = []
    for c in frame.columns:
        if c in NON_LOSS_COLUMNS or str(c).startswith("lr"):
            continue
        values = frame[c]
        if values.dtype.kind in "fiu" and values.notna().any():
            cols.append(c)
    return cols


def loss_curves(history_df, columns: Sequence[str] | None = None, ax=None, window: int = 20,
                logy: bool = False, title: str | None = None):
    """Rolling mean (over ``window`` records) of each loss in a trainer's history.

    ``history_df`` is ``Trainer.history_frame()`` (one row per step, NaN where
    a loss was not computed that step, e.g. the GAN losses between GAN blocks).
    ``columns`` defaults to every numeric column but step / epoch / lr.
    """
    frame = history_df
    columns = list(columns) if columns is not None else _loss_columns(frame)
    x_all = frame["step"].to_numpy() if "step" in frame.columns else np.arange(len(frame))
    ax = _new_ax(ax, (7.0, 3.5))
    for c in columns:
        values = frame[c]
        mask = values.notna().to_numpy()
        if not mask.any():
            continue
        smooth = values[mask].rolling(max(1, int(window)), min_periods=1).mean()
        ax.plot(x_all[mask], smooth.to_numpy(), label=str(c))
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (rolling mean of {int(window)})")
    if ax.lines:
        ax.legend(fontsize=8, ncol=2)
    if title:
        ax.set_title(title)
    return ax


def compare_with_paper(table_df, ax=None, ours: str = "ours (measured)", paper: str = "paper",
                       std: str | None = "ours (std)", ylim: tuple[float, float] | None = None,
                       ylabel: str = "AUROC (%)", title: str | None = None):
    """Grouped bars, one group per row of ``table_df``: our measured value next to the paper's.

    ``table_df`` has columns ``ours`` and ``paper`` (and optionally ``std``,
    drawn as error bars), indexed by what is compared (classes, datasets,
    variants). Missing values (NaN) leave a gap. Values are written on the bars.
    """
    for col in (ours, paper):
        if col not in table_df.columns:
            raise ValueError(f"table_df needs a column {col!r}; it has {list(table_df.columns)}")
    x = np.arange(len(table_df))
    width = 0.38
    ax = _new_ax(ax, (max(4.0, 0.9 * len(table_df) + 1.5), 3.5))
    yerr = table_df[std].to_numpy(dtype=float) if std and std in table_df.columns else None
    bars_ours = ax.bar(x - width / 2, table_df[ours].to_numpy(dtype=float), width, yerr=yerr, capsize=3,
                       label=ours, color="tab:blue")
    bars_paper = ax.bar(x + width / 2, table_df[paper].to_numpy(dtype=float), width, label=paper,
                        color="tab:grey")
    for bars in (bars_ours, bars_paper):
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(x)
    ax.set_xticklabels([str(i) for i in table_df.index], rotation=30 if len(table_df) > 4 else 0, ha="right"
                       if len(table_df) > 4 else "center")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def figure_png(fig, dpi: int = 100):
    """``fig`` rendered as an ``IPython.display.Image`` (PNG), independent of the matplotlib backend."""
    import io

    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return Image(data=buffer.getvalue(), format="png")


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


class LiveLossPlot(Callback):
    """Trainer callback that redraws :func:`loss_curves` every ``every`` steps in a notebook.

    Uses ``IPython.display.display(png, display_id=True)`` once and
    ``handle.update(png)`` afterwards (the figure rendered to PNG by
    :func:`figure_png`), which works in JupyterLab and Colab with any
    matplotlib backend. The figure itself is ``self.fig``.
    Outside IPython (scripts, the CLI) it does nothing, unless ``enabled=True``.

    Usage: ``Trainer(config, out, callbacks=[LiveLossPlot(every=25)])``; call
    :meth:`update` once more after training for the final curves.
    """

    def __init__(self, every: int = 25, columns: Sequence[str] | None = None, window: int = 20,
                 logy: bool = False, figsize: tuple[float, float] = (7.0, 3.5), enabled: bool | None = None):
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = int(every)
        self.columns = columns
        self.window = window
        self.logy = logy
        self.figsize = figsize
        self.enabled = _in_ipython() if enabled is None else bool(enabled)
        self.fig = None
        self.ax = None
        self.handle = None
        self.draws = 0
        self._calls = 0

    def on_step(self, trainer, record: dict) -> None:
        self._calls += 1
        step = int(record.get("step", self._calls)) if isinstance(record, dict) else self._calls
        if self.enabled and step % self.every == 0:
            self.update(trainer)

    def update(self, trainer) -> None:
        """Redraw now from ``trainer.history_frame()``."""
        if not self.enabled:
            return
        from IPython.display import display
        from matplotlib.figure import Figure

        frame = trainer.history_frame()
        if frame is None or len(frame) == 0:
            return
        if self.fig is None:
            # a pyplot-free Figure: the notebook shows it only through our display handle
            self.fig = Figure(figsize=self.figsize)
            self.ax = self.fig.add_subplot(1, 1, 1)
        self.ax.clear()
        step = int(frame["step"].iloc[-1]) if "step" in frame.columns else len(frame)
        loss_curves(frame, self.columns, ax=self.ax, window=self.window, logy=self.logy,
                    title=f"training losses, step {step}")
        self.fig.tight_layout()
        image = figure_png(self.fig)  # a PNG shows the same in Colab, JupyterLab and any backend
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)
        self.draws += 1


# ----------------------------------------------------------------------------
# the paper's tables and figures (csigen.figures; one style for all of them)
# ----------------------------------------------------------------------------
#: Colours of the variants (and of the paper's numbers) in every figure of :mod:`csigen.figures`.
VARIANT_ORDER = ("csi", "csi+g", "full")
PAPER_COLOR = "black"


@contextlib.contextmanager
def style():
    """The one style of the figures ``csigen figures`` writes, as a context manager.

    Seaborn's ``whitegrid`` axes, its ``notebook`` context slightly reduced,
    the colour-blind palette. Build *and save* a figure inside it::

        with plotting.style():
            fig = plotting.ablation_figure(...)
            fig.savefig("ablation.png")
    """
    import matplotlib as mpl
    import seaborn as sns
    from cycler import cycler

    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8), mpl.rc_context({
        "axes.prop_cycle": cycler(color=sns.color_palette("colorblind")),
        "savefig.dpi": 150, "savefig.bbox": "tight", "figure.titlesize": "medium",
        "legend.frameon": True, "legend.framealpha": 0.9,
    }):
        yield


def variant_palette(levels: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per variant (``csi``, ``csi+g``, ``full`` keep theirs in every figure)."""
    import seaborn as sns

    colours = sns.color_palette("colorblind", 10)
    fixed = {v: colours[i] for i, v in enumerate(VARIANT_ORDER)}
    extra = iter(colours[len(VARIANT_ORDER):])
    return {level: fixed.get(level) or next(extra) for level in levels}


def _dodge_offsets(n: int, width: float = 0.8) -> np.ndarray:
    """x offsets of ``n`` hue levels inside one category, as seaborn's ``dodge`` places them."""
    if n <= 1:
        return np.zeros(max(n, 1))
    each = width / n
    offsets = np.linspace(0.0, width - each, n)
    return offsets - offsets.mean()


def grouped_points(frame, *, x: str, y: str = "auroc", hue: str = "variant", order: Sequence | None = None,
                   hue_order: Sequence | None = None, paper: dict | None = None, paper_label: str = "paper",
                   annotate: Sequence = (), notes: dict | None = None, ax=None, ylabel: str = "AUROC (%)",
                   title: str | None = None, chance: float | None = 50.0):
    """Each row of ``frame`` (a run, or a seed's mean) as a faint dot; per (x, hue) the mean +- 1 std.

    Seaborn does the statistics: ``stripplot`` for the rows, ``pointplot``
    for the means with +-1 standard deviation of the rows (over seeds; the
    population std, ``ddof=0``, as the tables of :mod:`csigen.results`), both
    dodged the same way. ``paper`` maps ``(x, hue)`` to
    the paper's number, drawn as a black bar at that position. Means of the
    ``x`` values listed in ``annotate`` are written above their markers,
    with ``notes[(x, hue)]`` in brackets on a second line where given (e.g. "2 of 10
    classes" for a mean that does not cover the whole dataset).
    A dotted line marks ``chance`` (50% AUROC) when it is in view.
    """
    import seaborn as sns

    if frame.empty:
        raise ValueError("nothing to draw: the frame has no rows")
    for col in (x, y, hue):
        if col not in frame.columns:
            raise ValueError(f"frame needs a column {col!r}; it has {list(frame.columns)}")
    order = list(order) if order is not None else list(dict.fromkeys(frame[x]))
    hue_order = list(hue_order) if hue_order is not None else [
        v for v in VARIANT_ORDER if v in set(frame[hue])] + sorted(set(frame[hue]) - set(VARIANT_ORDER))
    palette = variant_palette(hue_order)
    ax = _new_ax(ax, (max(4.0, 0.55 * len(order) * max(1, len(hue_order)) + 1.5), 3.6))
    n = len(hue_order)
    offsets = _dodge_offsets(n)
    data = frame.assign(**{x: frame[x].astype(str), hue: frame[hue].astype(str)})
    order_s, hue_s = [str(o) for o in order], [str(h) for h in hue_order]
    sns.stripplot(data=data, x=x, y=y, hue=hue, order=order_s, hue_order=hue_s, palette=palette,
                  dodge=n > 1, jitter=0.05, size=3, alpha=0.45, legend=False, ax=ax)
    sns.pointplot(data=data, x=x, y=y, hue=hue, order=order_s, hue_order=hue_s, palette=palette,
                  dodge=float(offsets[-1] - offsets[0]) if n > 1 else False, errorbar=_mean_pm_std,
                  linestyle="none", markers="o", markersize=5, capsize=0.08, err_kws={"linewidth": 1.2},
                  ax=ax)
    drawn_paper = False
    for (xv, hv), value in (paper or {}).items():
        if value is None or str(xv) not in order_s or str(hv) not in hue_s or not np.isfinite(value):
            continue
        pos = order_s.index(str(xv)) + offsets[hue_s.index(str(hv))]
        half = 0.8 / max(n, 1) * 0.45
        ax.hlines(value, pos - half, pos + half, colors=PAPER_COLOR, linewidth=2.2, zorder=5,
                  label=None if drawn_paper else paper_label)
        drawn_paper = True
    stats = data.groupby([x, hue])[y].agg(["mean", lambda v: np.std(v.to_numpy(dtype=float))])
    notes = {(str(xv), str(hv)): text for (xv, hv), text in (notes or {}).items()}
    for xv in annotate:
        for j, hv in enumerate(hue_s):
            if (str(xv), hv) in stats.index and str(xv) in order_s:
                pos = order_s.index(str(xv)) + offsets[j]
                mean, std = stats.loc[(str(xv), hv)]
                note = notes.get((str(xv), hv))
                # centred above the marker's error bar, the note on a line of its own: labels of
                # neighbouring variants (a third of a tick apart) do not run into each other
                text = f"{mean:.1f}" + (f"\n({note})" if note else "")
                ax.annotate(text, (pos, mean + std), xytext=(0, 3), textcoords="offset points",
                            fontsize=7, va="bottom", ha="center", linespacing=1.0)
    values = [*data[y].to_numpy(dtype=float), *(stats.iloc[:, 0] + stats.iloc[:, 1]),
              *(stats.iloc[:, 0] - stats.iloc[:, 1])]
    values += [v for v in (paper or {}).values() if v is not None]
    values = [v for v in values if np.isfinite(v)]
    lo, hi = min(values), max(values)
    span = max(hi - lo, 2.0)
    bottom, top = lo - 0.15 * span, hi + 0.15 * span
    if ylabel.startswith("AUROC"):
        bottom, top = max(0.0, bottom), min(101.0, top)
    ax.set_ylim(bottom, top)
    if chance is not None and bottom < chance < top:
        ax.axhline(chance, color="dimgrey", linestyle="--", linewidth=0.8, zorder=1, label=f"chance ({chance:g})")
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    if len(order_s) > 4 and max(len(o) for o in order_s) > 5:
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    handles, labels = ax.get_legend_handles_labels()
    keep = {}
    for h, lab in zip(handles, labels):
        keep.setdefault(lab, h)
    ax.legend(list(keep.values()), list(keep.keys()), fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if title:
        ax.set_title(title)
    return ax


def _mean_pm_std(values) -> tuple[float, float]:
    """Seaborn ``errorbar`` callable: mean +- the population std (``ddof=0``) of ``values``."""
    v = np.asarray(values, dtype=float)
    return float(v.mean() - v.std()), float(v.mean() + v.std())


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw):
    """A pyplot-free Figure (nothing global is kept; notebooks display it, the CLI saves it)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def table1_figure(seed_means, per_class=None, *, paper: dict | None = None,
                  per_class_paper: dict | None = None, title: str = "Table 1: one-class AUROC (%)",
                  per_class_title: str | None = None, notes: dict | None = None):
    """Table 1 as a figure: mean AUROC per dataset and variant (left), per inlier class (right).

    ``seed_means``: one row per (dataset, variant, seed) with the class mean
    in ``auroc`` (dots: seeds; marker and bars: mean +- std over seeds);
    ``paper``: ``{(dataset, variant): value}``. ``per_class``: one row per run
    with ``class``, ``variant``, ``auroc``; ``per_class_paper``:
    ``{(class, variant): value}`` (CSI's published per-class numbers).
    ``notes``: ``{(dataset, variant): text}`` written after a mean's value,
    e.g. the coverage of a mean over fewer classes than the dataset has, so
    that means over different classes are not read as comparable.
    Returns a matplotlib ``Figure``.
    """
    n_classes = per_class["class"].nunique() if per_class is not None and len(per_class) else 0
    widths = [max(3.0, 1.3 * seed_means["dataset"].nunique() + 1.5) + 1.0]  # + the legend on the right
    if n_classes:
        widths.append(max(5.0, 0.75 * n_classes + 1.5) + 1.5)
    fig, axes = _figure(sum(widths) + 0.5, 3.9, 1, len(widths), width_ratios=widths)
    grouped_points(seed_means, x="dataset", paper=paper, annotate=list(dict.fromkeys(seed_means["dataset"])),
                   notes=notes, ax=axes[0, 0], title="mean over classes (dots: seeds)")
    if n_classes:
        grouped_points(per_class, x="class", paper=per_class_paper, paper_label="CSI (paper), per class",
                       ax=axes[0, 1], title=per_class_title or "per inlier class (dots: seeds)")
    fig.suptitle(title)
    return fig


def ablation_figure(frame, *, paper: dict | None = None, title: str = "Ablation: CSI -> +G -> full",
                    mean_label: str | None = None):
    """The ablation: AUROC of each variant per inlier class, and their mean (the last group, ``"mean"``).

    ``frame``: one row per run (``class``, ``variant``, ``auroc``), plus one
    row per seed with ``class == "mean"`` holding that seed's class mean;
    ``paper``: ``{("mean", variant): value}``; ``mean_label``: the mean's
    tick label instead of "mean" (e.g. "mean\\n(1 of 10 classes)" for a mean
    that does not cover the dataset). Returns a ``Figure``.
    """
    classes = list(dict.fromkeys(frame["class"]))
    order = [c for c in classes if c != "mean"] + (["mean"] if "mean" in classes else [])
    fig, axes = _figure(max(5.0, 0.35 * len(order) * frame["variant"].nunique() + 1.5) + 1.0, 3.9)
    ax = grouped_points(frame, x="class", order=order, paper=paper, annotate=["mean"], ax=axes[0, 0],
                        title="per inlier class and mean (dots: seeds; bars: ±1 std over seeds)")
    if mean_label and "mean" in order:
        ax.set_xticks(range(len(order)), [mean_label if c == "mean" else c for c in order])
    fig.suptitle(title)
    return fig


def fid_figure(frame, *, paper: dict | None = None, title: str = "FID of G (lower is better)"):
    """FID per inlier class and variant (``class``, ``variant``, ``fid``) with the paper's values as lines.

    ``paper``: ``{variant: value}`` (the paper's 69.5 / 54.1), drawn as
    dashed lines in the variant's colour. Returns a ``Figure``.
    """
    order = list(dict.fromkeys(frame["class"]))
    fig, axes = _figure(max(4.5, 0.7 * len(order) * frame["variant"].nunique() + 2.0) + 1.5, 3.6)
    ax = axes[0, 0]
    grouped_points(frame, x="class", y="fid", order=order, ax=ax, ylabel="FID (lower is better)", chance=None)
    palette = variant_palette(list(paper or {}))
    for variant, value in (paper or {}).items():
        ax.axhline(value, color=palette[variant], linestyle="--", linewidth=1.0,
                   label=f"paper, {variant}: {value:g}")
    values = [*frame["fid"].to_numpy(dtype=float), *(paper or {}).values()]
    ax.set_ylim(0.0, 1.1 * max(values))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.suptitle(title)
    return fig


#: Figure 2's layouts (:func:`figure2_figure`).
FIGURE2_LAYOUTS = ("pairs", "paper")


def figure2_figure(inliers, inlier_recon, outliers, outlier_recon, *, inlier_name: str,
                   outlier_names: Sequence[str] | None = None, title: str | None = None, layout: str = "pairs"):
    """The paper's Figure 2: (a) real inliers and their reconstructions G(E(x)); (b) the same for outliers.

    ``layout="pairs"`` (default): each real image above its reconstruction, one column per image, the
    outlier columns labelled with ``outlier_names``. ``layout="paper"``: the paper's arrangement, "(Left)
    Real inlier (Right) Its reconstruction": per panel a grid of the real images and, beside it, the grid
    of their reconstructions in the same places. The paper does not say which images it shows; csigen's
    callers draw test images.

    Images are ``(N, 3, H, W)``, float in [0, 1] or uint8. Returns a ``Figure``.
    """
    if layout not in FIGURE2_LAYOUTS:
        raise ValueError(f"unknown Figure 2 layout {layout!r}; choose one of {FIGURE2_LAYOUTS}")
    panels = []
    for real, rec, name in ((inliers, inlier_recon, "inlier"), (outliers, outlier_recon, "outlier")):
        real, rec = _to_float(real), _to_float(rec)
        if real.shape != rec.shape:
            raise ValueError(f"{name} images and their reconstructions differ in shape: "
                             f"{tuple(real.shape)} vs {tuple(rec.shape)}")
        panels.append((real, rec))
    if layout == "paper":
        return _figure2_paper_layout(panels, inlier_name, title)
    ncol = max(p[0].shape[0] for p in panels)
    fig, axes = _figure(max(4.0, 0.75 * ncol + 1.0), 4.4, 2, 1)
    labels = [None, list(outlier_names) if outlier_names is not None else None]
    heads = [f"(a) real inliers ({inlier_name}) above their reconstructions G(E(x))",
             "(b) real outliers (other classes) above their reconstructions G(E(x))"]
    for ax, (real, rec), cols, head in zip(axes[:, 0], panels, labels, heads):
        _show_grid(ax, torch.cat([real, rec]), real.shape[0], col_labels=cols, row_labels=["real", "G(E(x))"])
        ax.grid(False)
        ax.set_title(head, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def _figure2_paper_layout(panels, inlier_name: str, title: str | None):
    """Figure 2 as the paper draws it: per panel, the real images' grid (left) and their reconstructions' (right)."""
    ncol = max(math.ceil(math.sqrt(p[0].shape[0])) for p in panels)
    nrow = max(math.ceil(p[0].shape[0] / ncol) for p in panels)
    side = max(0.6 * ncol + 0.3, 2.9)  # wide enough for the panel titles
    fig, axes = _figure(2 * side + 0.4, 2 * (0.6 * nrow + 0.5) + 0.6, 2, 2)
    heads = [(f"(a) (Left) real inliers ({inlier_name})", "(Right) reconstructions G(E(x))"),
             ("(b) (Left) real outliers (other classes)", "(Right) reconstructions G(E(x))")]
    for row, (real, rec), (left, right) in zip(axes, panels, heads):
        for ax, images, head in ((row[0], real, left), (row[1], rec, right)):
            _show_grid(ax, images, ncol)
            ax.grid(False)
            ax.set_title(head, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig
