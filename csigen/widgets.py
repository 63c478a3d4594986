"""Small ipywidgets UIs for the notebooks.

Compatible with ipywidgets 7.6+ and 8.x (Colab ships 7.7.1): only
``Dropdown``, ``FloatSlider``, ``FloatRangeSlider``, ``IntSlider``, ``Label``,
``Output``, ``VBox``/``HBox`` and ``observe(..., names="value")`` are used.

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

__all__ = ["Interactive", "augmentation_explorer", "finished_runs", "run_picker"]


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
