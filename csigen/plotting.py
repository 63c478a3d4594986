"""Figures for the notebooks: image grids, augmentations, similarities, scores, losses.

Every function draws into one matplotlib ``Axes``: pass ``ax=`` to place it
in your own figure, or leave it ``None`` for a new figure (``ax.figure``).
Each returns the ``Axes`` it drew on. Nothing here calls ``plt.show()``.

Images are ``(B, 3, H, W)`` tensors, float in [0, 1] or uint8 (docs/design.md).
Scores follow csigen's convention: higher = more inlier-like, inliers are
the positive class of the ROC curve.

:class:`LiveLossPlot` is a trainer callback that redraws the loss curves in
a notebook while :class:`csigen.train.Trainer` runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from csigen.train import Callback

__all__ = [
    "LiveLossPlot",
    "compare_with_paper",
    "figure_png",
    "image_grid",
    "loss_curves",
    "reconstructions",
    "roc_curve",
    "score_histogram",
    "show_augmentations",
    "show_rotations",
    "similarity_matrix",
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
