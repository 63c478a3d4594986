"""The notebooks' widgets, proven in a real browser: JupyterLab 4 in headless Chromium.

nbmake (tests/test_notebooks_execute.py) runs only the kernel side of a widget;
whether the front end renders it, and whether moving a slider reaches the
kernel's callback and comes back as a new picture, only a browser can tell.
For each notebook that builds widgets (:data:`WIDGET_NOTEBOOKS`: a code cell
calling ``widgets.<function>(...)`` of :mod:`csigen.widgets`) this test

1. starts JupyterLab 4 on 127.0.0.1 (a free port, a token) in a temporary root
   holding copies of the widget notebooks, with ``CSIGEN_SMOKE=1`` and
   ``CSIGEN_OUT`` in the server's (and so the kernel's) environment;
2. opens the notebook in headless Chromium (Debian's ``chromium`` package,
   driven by Playwright), runs *Run > Run All Cells* from the menu and waits
   until every cell has run;
3. in every displayed widget with a slider or a dropdown (a progress bar has
   neither): drags the first slider's handle with the mouse (or picks another
   dropdown entry) and waits until the rendered output (the bytes of its
   images, the text of its HTML and Output widgets) changes.

The notebooks run in order in one root and one runs folder, so later ones load
the runs of earlier ones, as they do for a reader (about 5 min for 01, 03 and
07 on a busy 2-core CPU, mostly the smoke runs' training). A failure saves a
full-page screenshot and prints its path; a pass saves one of each widget after
the change, for a human to look at: into pytest's temporary folder, or
``$CSIGEN_BROWSER_SCREENSHOTS`` when set. The test skips, saying why, only
where Playwright or Chromium is not installed (``.ci/run`` installs both:
``apt-get install chromium``, ``pip install -e .[dev]`` with
``PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1``). Set ``CSIGEN_CHROMIUM`` to use another
Chromium binary.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
CHROMIUM = os.environ.get("CSIGEN_CHROMIUM", "/usr/bin/chromium")
#: a code line calling a function of csigen.widgets (``widgets.threshold_explorer(...)``)
_WIDGET_CALL = re.compile(r"^[^#\n]*\bwidgets\.[a-z_]+\(", re.MULTILINE)
#: Seconds for one notebook's Run All in smoke mode (notebook 03 trains three tiny runs: about a minute).
RUN_ALL_TIMEOUT = 360
#: Seconds for a widget's output to change after the slider moved (one figure rendered in the kernel).
CHANGE_TIMEOUT = 60
#: JupyterLab user settings for the test: every cell stays in the page (no windowing), no news pop-ups.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def _is_widget_notebook(path: Path) -> bool:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return any(c["cell_type"] == "code" and _WIDGET_CALL.search("".join(c["source"])) for c in nb["cells"])


WIDGET_NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb") if _is_widget_notebook(p))


# ----------------------------------------------------------------------------
# the JupyterLab server and the browser
# ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer {url} within {timeout} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab 4 server on a free port, rooted in a temp folder with copies of the widget notebooks."""
    try:
        import jupyterlab
    except ImportError:
        pytest.fail("JupyterLab is missing: install the test dependencies, pip install -e '.[dev]'")
    assert int(jupyterlab.__version__.split(".")[0]) >= 4, f"JupyterLab {jupyterlab.__version__}; need 4"

    base = tmp_path_factory.mktemp("lab")
    root, settings = base / "root", base / "settings"
    root.mkdir()
    for name in WIDGET_NOTEBOOKS:
        shutil.copy(NOTEBOOK_DIR / name, root / name)
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "CSIGEN_SMOKE": "1", "CSIGEN_OUT": str(base / "runs"), "TQDM_DISABLE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"), "JUPYTER_RUNTIME_DIR": str(base / "runtime")}
    log = base / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--ServerApp.terminals_enabled=False", "--LabApp.news_url=",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{url}/api/status?token={token}", process, log)
        yield {"url": url, "token": token, "root": root, "log": log, "base": base}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's package) driven by Playwright; skips only where either is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium, as .ci/run "
                    "does) or point CSIGEN_CHROMIUM at a Chromium binary")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: pip install -e '.[dev]' (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


# ----------------------------------------------------------------------------
# reading the page
# ----------------------------------------------------------------------------
#: JavaScript: what a widget output shows, apart from its controls: a SHA-256 of each image's bytes (the
#: blob: URL of an Image widget, the data: URL of a PNG in an Output widget) and the text of HTML/Output widgets.
_RENDERED = """async (view) => {
  const hex = (buf) => Array.from(new Uint8Array(buf)).map((b) => b.toString(16).padStart(2, '0')).join('');
  const images = [];
  for (const img of view.querySelectorAll('img')) {
    const bytes = await (await fetch(img.src)).arrayBuffer();
    images.push(bytes.byteLength + ':' + hex(await crypto.subtle.digest('SHA-256', bytes)));
  }
  const texts = Array.from(view.querySelectorAll('.widget-html-content, .widget-output .jp-OutputArea-output'))
    .map((e) => e.innerText);
  return {images, texts};
}"""

#: JavaScript: every code cell's prompt ("[3]:", "[*]:", "[ ]:") and the tracebacks shown so far.
_PROGRESS = """() => ({
  prompts: Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell'))
    .map((c) => (c.querySelector('.jp-InputArea-prompt') || {}).innerText || ''),
  errors: Array.from(document.querySelectorAll(
      '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
    .map((e) => e.innerText).filter((t) => /Traceback|Error:/.test(t)),
})"""


def _wait_for_kernel(page, lab: dict, timeout: float = 90) -> None:
    """Until the notebook's kernel runs, is idle and the page is connected to it (a Run All sent earlier is lost)."""
    deadline = time.monotonic() + timeout
    kernels = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{lab['url']}/api/kernels?token={lab['token']}", timeout=5) as response:
            kernels = json.loads(response.read())
        if any(k["execution_state"] == "idle" and k.get("connections", 0) > 0 for k in kernels):
            page.locator(".jp-StatusBar-Item", has_text=re.compile(r"\|\s*Idle")).first.wait_for(timeout=30_000)
            return
        time.sleep(0.5)
    raise AssertionError(f"no idle kernel with a connection within {timeout} s: {kernels}")


def _shut_down_kernels(lab: dict) -> None:
    with urllib.request.urlopen(f"{lab['url']}/api/kernels?token={lab['token']}", timeout=10) as response:
        kernels = json.loads(response.read())
    for kernel in kernels:
        request = urllib.request.Request(f"{lab['url']}/api/kernels/{kernel['id']}?token={lab['token']}",
                                         method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu").get_by_role("menuitem", name="Run All Cells", exact=True).click()


def _run_all_and_wait(page, name: str) -> None:
    _run_all(page)
    started = time.monotonic()
    deadline = started + RUN_ALL_TIMEOUT
    progress = {}
    while time.monotonic() < deadline:
        progress = page.evaluate(_PROGRESS)
        if progress["errors"]:
            raise AssertionError(f"{name}: a cell failed in JupyterLab:\n" + "\n".join(progress["errors"])[-4000:])
        prompts = [p.strip() for p in progress["prompts"]]
        if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            return
        if started and time.monotonic() - started > 30 and all(p == "[ ]:" for p in prompts):
            _run_all(page)  # nothing queued after 30 s: the first Run All went nowhere; once more
            started = 0.0
        time.sleep(1.0)
    raise AssertionError(f"{name}: Run All did not finish in {RUN_ALL_TIMEOUT} s; cell prompts: "
                         f"{progress.get('prompts')}")


def _change_a_value(page, view) -> str:
    """Move the first slider of a widget view with the mouse, or pick another dropdown entry; say which."""
    handles = view.locator(".noUi-handle")
    if handles.count():
        track = view.locator(".noUi-target").first
        track.scroll_into_view_if_needed()
        box, handle = track.bounding_box(), handles.first.bounding_box()
        start_x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
        middle = box["x"] + box["width"] / 2
        target_x = box["x"] + box["width"] * (0.85 if start_x < middle else 0.15)  # far from where it is
        page.mouse.move(start_x, y)
        page.mouse.down()
        page.mouse.move(target_x, y, steps=8)
        page.mouse.up()
        return f"dragged a slider from x={start_x:.0f} to x={target_x:.0f}"
    select = view.locator("select")
    if select.count():
        options = select.first.locator("option")
        current = select.first.input_value()
        values = [options.nth(i).get_attribute("value") for i in range(options.count())]
        other = next((v for v in values if v != current), None)
        assert other is not None, "the dropdown has a single entry; nothing to pick"
        select.first.select_option(other)
        return f"picked {other!r} in a dropdown"
    raise AssertionError("the widget has neither a slider nor a dropdown to change")


# ----------------------------------------------------------------------------
# the test
# ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not WIDGET_NOTEBOOKS, reason="no notebook under notebooks/ builds a csigen widget")
@pytest.mark.parametrize("name", WIDGET_NOTEBOOKS)
def test_widgets_render_and_react_in_jupyterlab(name, lab, browser, tmp_path):
    shots = Path(os.environ.get("CSIGEN_BROWSER_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    step = "opening the notebook"
    try:
        # a workspace of its own, reset: only this notebook open (not the tabs an earlier test left)
        page.goto(f"{lab['url']}/lab/workspaces/test-{Path(name).stem}/tree/{name}?reset&token={lab['token']}")
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        panel.locator(".jp-Notebook").first.wait_for(timeout=60_000)
        step = "waiting for the kernel"
        _wait_for_kernel(page, lab)
        step = "running all cells"
        _run_all_and_wait(page, name)
        # one per displayed widget that has a control (a slider or a dropdown; not a progress bar)
        views = panel.locator(".jp-Cell .jp-OutputArea-output:has(> .jupyter-widgets):has(.noUi-handle, select)")
        step = "waiting for the widgets to render"
        views.first.locator(".jupyter-widgets").first.wait_for(timeout=30_000)
        assert views.count() >= 1
        for i in range(views.count()):
            view = views.nth(i)
            step = f"widget {i + 1} of {views.count()}: rendering"
            view.scroll_into_view_if_needed()
            deadline = time.monotonic() + CHANGE_TIMEOUT
            before = view.evaluate(_RENDERED)
            while not before["images"] and not before["texts"] and time.monotonic() < deadline:
                time.sleep(0.5)  # the callback called once in the cell has not reached the page yet
                before = view.evaluate(_RENDERED)
            assert before["images"] or before["texts"], "the widget shows no image and no text"
            step = f"widget {i + 1} of {views.count()}: " + _change_a_value(page, view)
            after = view.evaluate(_RENDERED)
            while after == before and time.monotonic() < deadline:
                time.sleep(0.5)
                after = view.evaluate(_RENDERED)
            assert after != before, f"the rendered output did not change within {CHANGE_TIMEOUT} s"
            if before["images"]:
                assert after["images"] != before["images"], "the text changed but the image's bytes did not"
            view.screenshot(path=str(shots / f"{Path(name).stem}-widget{i + 1}-after.png"))
        print(f"\n{name}: screenshots of the widgets after the change in {shots}")
    except Exception as exc:
        shot = shots / f"{Path(name).stem}-failure.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"\n{name}: failed while {step}; screenshot {shot}; server log {lab['log']}")
        raise AssertionError(f"{name}: failed while {step}: {exc}\nscreenshot: {shot}\n"
                             f"server log: {lab['log']}") from exc
    finally:
        page.close()
        _shut_down_kernels(lab)  # the next notebook's kernel gets the CPU and is the only one
