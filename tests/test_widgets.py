"""Tests for csigen.widgets' threshold explorer, under the installed ipywidgets and under Colab's 7.7.1.

The kernel side of every widget must work with ipywidgets 8 (JupyterLab 4, the
``[lab]`` extra) and 7.7.1 (Colab). The 7.7.1 tests install it once with
``pip install --target`` into ``~/.cache/csigen/test-ipywidgets-7.7.1`` (a few
seconds; later runs reuse it) and put that folder first on ``sys.path`` of a
subprocess and of a Jupyter kernel. tests/test_browser.py renders the widgets
in a real browser.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from csigen import widgets

ROOT = Path(__file__).resolve().parents[1]
#: Colab's ipywidgets and the versions of its companion packages released with it (2022-07).
IPYWIDGETS7 = ["ipywidgets==7.7.1", "widgetsnbextension==3.6.1", "jupyterlab_widgets==1.1.1",
               "ipython_genutils==0.2.0"]
IPYWIDGETS7_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "csigen" / "test-ipywidgets-7.7.1"
#: pip output that means the package index cannot be reached (then the 7.7.1 tests skip, saying so).
OFFLINE_SIGNS = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                 "Network is unreachable", "ProxyError", "Could not find a version that satisfies")


def _toy_scores(n_in: int = 40, n_out: int = 160, seed: int = 0):
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(1.0, 1.0, n_in), rng.normal(-1.0, 1.0, n_out)]).astype(np.float32)
    return scores, np.arange(n_in + n_out) < n_in


# ----------------------------------------------------------------------------
# under the installed ipywidgets
# ----------------------------------------------------------------------------
def test_operating_point_is_a_point_of_sklearns_roc_curve():
    from sklearn.metrics import roc_curve

    scores, inl = _toy_scores()
    fpr, tpr, thresholds = roc_curve(inl, scores)
    for i in range(1, len(thresholds), 7):
        p = widgets.operating_point(scores, inl, thresholds[i])
        assert (p.fpr, p.tpr) == pytest.approx((fpr[i], tpr[i]))
    p = widgets.operating_point(scores, inl, 0.0)  # by hand: s >= t is called an inlier
    assert (p.tp, p.fn) == ((scores[inl] >= 0).sum(), (scores[inl] < 0).sum())
    assert (p.fp, p.tn) == ((scores[~inl] >= 0).sum(), (scores[~inl] < 0).sum())
    assert p.matrix().tolist() == [[p.tp, p.fn], [p.fp, p.tn]]
    assert p.accuracy == pytest.approx((p.tp + p.tn) / len(scores))


def test_threshold_explorer_renders_and_follows_the_slider():
    scores, inl = _toy_scores()
    ui = widgets.threshold_explorer(scores, inl, title="toy")
    slider, summary, image = ui.widget.children
    assert image is ui.output
    start = ui.update()
    assert start.tpr >= 0.95 and start.threshold == slider.value  # starts at 95% of the inliers kept
    assert image.value[:4] == b"\x89PNG" and "inliers kept" in summary.value
    before = (image.value, summary.value)
    slider.value = slider.max  # the observer re-renders: only the top score stays an inlier
    assert (image.value, summary.value) != before
    assert f"{int(inl[np.argmax(scores)])} of {inl.sum()} inliers kept" in summary.value
    top = widgets.operating_point(scores, inl, slider.value)
    assert (top.tp + top.fp, top.fn + top.tn) == (1, len(scores) - 1)
    slider.value = slider.min
    bottom = ui.update()
    assert bottom.fpr == 1.0 and bottom.tpr == 1.0


def test_threshold_explorer_accepts_a_constant_score_and_a_given_threshold():
    ui = widgets.threshold_explorer(np.zeros(6), [True, True, False, False, False, False], threshold=0.25)
    slider = ui.widget.children[0]
    assert slider.min < 0.25 == slider.value < slider.max
    assert ui.update().tp == 0


@pytest.mark.parametrize("scores, is_inlier, message", [
    ([0.1, 0.2, 0.3], [True, False], "differ in length"),
    ([0.1, np.nan, 0.3], [True, False, False], "NaN or infinite"),
    ([0.1, 0.2], [True, True], "inliers and outliers"),
    ([0.1, 0.2], [2, 0], "booleans"),
])
def test_threshold_explorer_rejects_bad_input(scores, is_inlier, message):
    with pytest.raises(ValueError, match=message):
        widgets.threshold_explorer(scores, is_inlier)


# ----------------------------------------------------------------------------
# under ipywidgets 7.7.1 (Colab)
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ipywidgets7() -> Path:
    """A folder holding ipywidgets 7.7.1 (installed once, cached); skips when the package index is unreachable."""
    marker = IPYWIDGETS7_DIR / ".complete"
    if not marker.exists():
        partial = IPYWIDGETS7_DIR.with_name(f"{IPYWIDGETS7_DIR.name}.partial-{os.getpid()}")
        out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(partial),
                              *IPYWIDGETS7], capture_output=True, text=True, timeout=300, check=False)
        log = out.stdout + out.stderr
        if out.returncode != 0:
            if any(sign in log for sign in OFFLINE_SIGNS):
                pytest.skip(f"cannot install {IPYWIDGETS7[0]} (package index unreachable): {log[-500:]}")
            pytest.fail(f"pip install --target {partial} {' '.join(IPYWIDGETS7)} failed:\n{log}")
        (partial / ".complete").write_text(" ".join(IPYWIDGETS7))
        try:
            os.replace(partial, IPYWIDGETS7_DIR)  # atomic: a concurrent run sees all or nothing
        except OSError:  # another run finished first; use its copy
            import shutil

            shutil.rmtree(partial, ignore_errors=True)
    return IPYWIDGETS7_DIR


#: Runs the kernel side of every csigen widget under the ipywidgets first on sys.path.
SCRIPT_7 = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import ipywidgets
assert ipywidgets.__version__ == "7.7.1", (ipywidgets.__version__, ipywidgets.__file__)
import numpy as np
import torch
from csigen import widgets

rng = np.random.default_rng(0)
scores = np.concatenate([rng.normal(1, 1, 30), rng.normal(-1, 1, 90)])
is_inlier = np.arange(120) < 30
ui = widgets.threshold_explorer(scores, is_inlier)
slider, summary, image = ui.widget.children
start = ui.update()
first = image.value
slider.value = slider.max  # observe(names="value") must fire under 7.7.1 too
assert image.value != first and image.value[:4] == b"\x89PNG"
assert "30 of 30 inliers" not in summary.value and "outliers let through" in summary.value

run = sys.argv[2]
picker = widgets.run_picker(run)
assert picker.update() == {"auroc": 0.5}

explorer = widgets.augmentation_explorer(torch.rand(2, 3, 16, 16), n_views=2)
fig = explorer.update()
explorer.widget.children[1].value = 0.0  # jitter strength
print(json.dumps({"version": ipywidgets.__version__, "tpr": start.tpr, "axes": len(fig.axes),
                  "slider": type(slider).__name__}))
'''


def test_widgets_under_ipywidgets_7_7_1(ipywidgets7, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text(json.dumps({"auroc": 0.5}))
    out = subprocess.run([sys.executable, "-c", SCRIPT_7, str(ipywidgets7), str(tmp_path)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, check=False,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"version": "7.7.1", "tpr": pytest.approx(report["tpr"]), "axes": 1, "slider": "FloatSlider"}
    assert report["tpr"] >= 0.95


def test_threshold_explorer_in_a_kernel_with_ipywidgets_7_7_1(ipywidgets7):
    """In a Jupyter kernel the widgets talk to the front end over comms: their models must reach it."""
    import nbformat
    from nbclient import NotebookClient

    cells = [
        (f"import sys\nsys.path.insert(0, {str(ipywidgets7)!r})\nimport ipywidgets\n"
         "assert ipywidgets.__version__ == '7.7.1', ipywidgets.__file__"),
        ("import numpy as np\nfrom csigen import widgets\n"
         "ui = widgets.threshold_explorer(np.r_[np.linspace(0, 1, 20), np.linspace(-1, 0.5, 30)], np.arange(50) < 20)\n"
         "ui.update()\nui"),
        ("png = ui.output.value\nui.widget.children[0].value = 0.9\nassert ui.output.value != png\n"
         "print(ui.widget.children[1].value)"),
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute(env={**os.environ, "OMP_NUM_THREADS": "1"})

    view = nb.cells[1].outputs[-1]["data"]["application/vnd.jupyter.widget-view+json"]
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert view["model_id"] in state and state[view["model_id"]]["model_name"] == "VBoxModel"
    models = {m["model_name"]: m for m in state.values()}
    # ipywidgets 7 speaks version 1.5.0 of @jupyter-widgets/controls (8.x: 2.0.0), the one Colab renders
    assert models["FloatSliderModel"]["model_module_version"] == "1.5.0"
    assert models["FloatSliderModel"]["state"]["value"] == 0.9
    assert "t = 0.9" in nb.cells[2].outputs[0]["text"]
