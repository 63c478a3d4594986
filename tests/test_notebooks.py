"""Static checks of notebooks/*.ipynb, the only source of the notebooks (tests/test_notebooks_execute.py runs them).

Notebooks are edited where people edit them, in JupyterLab or Colab, and
committed as saved after two commands (see :data:`HOW_TO_FIX`). These tests
check what those commands guarantee and the layout every notebook shares:
valid nbformat, kernel python3, no outputs or execution counts (nbstripout
--verify, with the keys Colab adds), a Colab badge and an install cell that
follow csigen.REPO_URL / REPO_BRANCH, an install cell pinned to the release
tag ``v<csigen.__version__>`` (tools/sync_notebook_links.py --check),
and the first cells in one order: title with the badge, install cell,
``parameters`` cell of plain values, setup cell calling csigen.notebook.setup.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import csigen

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
COLAB_PREFIX = "https://colab.research.google.com/github/"
#: nbstripout's settings for this repository: also strip the keys Colab adds when it saves a notebook.
EXTRA_KEYS = "metadata.colab.provenance cell.metadata.colab cell.metadata.id cell.metadata.outputId"
NBSTRIPOUT_ARGS = ["--extra-keys", EXTRA_KEYS]
#: Appended to every failure: the teacher's workflow (README, "Editing the notebooks").
HOW_TO_FIX = (
    "\nThe .ipynb files are the notebooks' only source: edit them in JupyterLab (or Colab), then before "
    "committing run\n"
    "    python tools/sync_notebook_links.py\n"
    f'    nbstripout --extra-keys "{EXTRA_KEYS}" notebooks/*.ipynb\n'
    "(or install the git filter once per clone: `nbstripout --install` and\n"
    f'    git config filter.nbstripout.extrakeys "{EXTRA_KEYS}"\n'
    "). See README.md, 'Editing the notebooks'."
)
#: The shared setup lives in csigen.notebook; a notebook that does it again has drifted from the layout.
SETUP_DONE_BY_PACKAGE = ("drive.mount(", "torch.cuda.is_available()", 'os.environ.get("CSIGEN_SMOKE"',
                         "os.environ.get('CSIGEN_SMOKE'", 'os.environ.get("CSIGEN_OUT"')


def load(name: str) -> dict:
    return json.loads((NOTEBOOK_DIR / name).read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def unstripped_cells(nb: dict) -> list[int]:
    """Indices of code cells that carry outputs or an execution count."""
    return [i for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]


def tool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=120)


def nbstripout_verify(*paths: Path | str) -> subprocess.CompletedProcess:
    return tool("-m", "nbstripout", "--verify", *NBSTRIPOUT_ARGS, *map(str, paths))


def github_path() -> str:
    return csigen.REPO_URL.removeprefix("https://github.com/").removesuffix(".git").strip("/")


def test_notebooks_are_numbered_and_in_the_readme_table():
    assert NOTEBOOKS, "no notebooks under notebooks/"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", name), f"{name}: name notebooks NN_topic.ipynb"
        assert f"[{name}](notebooks/{name})" in readme, f"{name} is missing from README.md's notebook table"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_valid_nbformat(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4, f"{name} is nbformat {nb.nbformat}; save it with a current JupyterLab"
    nbformat.validate(nb)  # raises nbformat.ValidationError naming the broken field


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_kernel_is_python3(name):
    kernel = load(name)["metadata"].get("kernelspec", {}).get("name")
    assert kernel == "python3", (f"{name} was saved with kernel {kernel!r}: choose the 'Python 3' kernel in "
                                 "JupyterLab (Kernel > Change Kernel) and save again, so Colab and nbmake find it")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs_or_execution_counts(name):
    cells = unstripped_cells(load(name))
    assert cells == [], f"{name}: cells {cells} have outputs or execution counts.{HOW_TO_FIX}"


def test_nbstripout_verify_passes():
    out = nbstripout_verify(*(NOTEBOOK_DIR / n for n in NOTEBOOKS))
    assert out.returncode == 0, f"committed notebooks are not stripped: {out.stdout}{out.stderr}{HOW_TO_FIX}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_cells_follow_the_shared_layout(name):
    nb = load(name)
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and source(first).startswith(f"# {name[:2]} "), (
        f"{name}: the first cell must be markdown starting with the title '# {name[:2]} · ...'")
    assert "[![Open In Colab]" in source(first), f"{name}: the Colab badge belongs in the first cell.{HOW_TO_FIX}"
    code = code_cells(nb)
    assert len(code) >= 3, f"{name}: expected install, parameters and setup cells first"
    install, parameters, setup = code[:3]
    assert "install" in tags(install), f"{name}: the first code cell must be the install cell (tag 'install')"
    assert "parameters" in tags(parameters), (
        f"{name}: the second code cell must be the parameters cell (tag 'parameters'; in JupyterLab: "
        "the property inspector, gear icon, Cell Tags)")
    assert "notebook.setup(" in source(setup), (
        f"{name}: the third code cell must call csigen.notebook.setup(...) with the parameters")
    for tag in ("install", "parameters"):
        count = sum(tag in tags(c) for c in nb["cells"])
        assert count == 1, f"{name}: {count} cells tagged {tag!r}, expected exactly one"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_holds_plain_values(name):
    """papermill replaces the cell's values; a value computed there would not follow a changed input."""
    cell = next(c for c in code_cells(load(name)) if "parameters" in tags(c))
    assigned = []
    for stmt in ast.parse(source(cell)).body:
        assert isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets), (
            f"{name}: the parameters cell holds only `NAME = value` lines; got {ast.unparse(stmt)!r} "
            "(compute things in csigen.notebook.setup or later cells)")
        try:
            ast.literal_eval(stmt.value)
        except ValueError:
            pytest.fail(f"{name}: parameter {ast.unparse(stmt)!r} is not a plain value (number, string, "
                        "None, True/False, list, dict)")
        assigned += [t.id for t in stmt.targets]
    assert {"SMOKE", "OUT"} <= set(assigned), f"{name}: the parameters cell must set SMOKE and OUT"
    assert "CSIGEN_SMOKE" in source(cell), f"{name}: say in the SMOKE comment that $CSIGEN_SMOKE decides None"
    setup = code_cells(load(name))[2]
    assert "smoke=SMOKE" in source(setup) and "out=OUT" in source(setup)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_shared_setup_is_not_copied_into_the_notebook(name):
    for i, cell in enumerate(load(name)["cells"]):
        if cell["cell_type"] != "code" or "install" in tags(cell):
            continue
        found = [s for s in SETUP_DONE_BY_PACKAGE if s in source(cell)]
        assert not found, (f"{name}, cell {i}: {found} is done by csigen.notebook.setup; use the settings "
                           "it returns (settings.smoke, settings.out, settings.gpu, ...)")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_colab_badge_points_at_this_notebook(name):
    first_markdown = next(c for c in load(name)["cells"] if c["cell_type"] == "markdown")
    url = f"{COLAB_PREFIX}{github_path()}/blob/{csigen.REPO_BRANCH}/notebooks/{name}"
    badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"
    assert badge in source(first_markdown), f"{name}: the Colab badge is not {badge}.{HOW_TO_FIX}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cell_installs_this_repository_in_colab_only(name):
    cells = [c for c in load(name)["cells"] if "install" in tags(c)]
    assert len(cells) == 1
    text = source(cells[0])
    assert f'"csigen @ git+{csigen.REPO_URL}@v{csigen.__version__}"' in text, f"{name}: stale install target.{HOW_TO_FIX}"
    assert "if IN_COLAB" in text  # locally nothing is installed
    assert not any(line.strip().startswith(("%pip", "!pip")) for line in text.splitlines())  # no magic in an if


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_summary_and_a_checked_exercise(name):
    nb = load(name)
    markdown = "\n".join(source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "## Summary" in markdown and "## Exercises" in markdown
    assert any("def check_answer" in source(c) for c in code_cells(nb))


def test_links_in_sync():
    out = tool("tools/sync_notebook_links.py", "--check")
    assert out.returncode == 0, out.stdout + out.stderr + HOW_TO_FIX


def test_sync_check_catches_a_stale_link_and_fixes_it(tmp_path):
    nb = load(NOTEBOOKS[0])
    for cell in nb["cells"]:
        text = source(cell).replace(github_path(), "someone/old-fork")
        cell["source"] = text.replace(f"@v{csigen.__version__}\"", "@v0.0.1\"")
    path = tmp_path / NOTEBOOKS[0]
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")

    out = tool("tools/sync_notebook_links.py", "--check", "--notebooks", str(tmp_path))
    assert out.returncode == 1
    assert "badge is out of date" in out.stdout and "install cell target is out of date" in out.stdout
    assert tool("tools/sync_notebook_links.py", "--notebooks", str(tmp_path)).returncode == 0
    assert tool("tools/sync_notebook_links.py", "--check", "--notebooks", str(tmp_path)).returncode == 0
    assert "someone/old-fork" not in path.read_text(encoding="utf-8")


def test_an_executed_or_colab_saved_notebook_is_caught_and_stripping_restores_it(tmp_path):
    """What a teacher's save adds (outputs, counts, Colab's keys) fails the checks; nbstripout undoes it."""
    committed = (NOTEBOOK_DIR / NOTEBOOKS[0]).read_text(encoding="utf-8")
    nb = json.loads(committed)
    cell = code_cells(nb)[0]
    cell["execution_count"] = 1
    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
    colab_only = json.loads(committed)
    colab_only["metadata"]["colab"]["provenance"] = []
    colab_only["cells"][0]["metadata"]["id"] = "Xy12"
    code_cells(colab_only)[1]["metadata"]["colab"] = {"base_uri": "https://localhost:8080/"}
    executed, saved_in_colab = tmp_path / "executed.ipynb", tmp_path / "colab.ipynb"
    executed.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    saved_in_colab.write_text(json.dumps(colab_only, indent=1), encoding="utf-8")

    assert unstripped_cells(nb) != []
    assert nbstripout_verify(executed).returncode != 0
    assert nbstripout_verify(saved_in_colab).returncode != 0
    for path in (executed, saved_in_colab):
        assert tool("-m", "nbstripout", *NBSTRIPOUT_ARGS, str(path)).returncode == 0
        assert json.loads(path.read_text(encoding="utf-8")) == json.loads(committed)


# ------------------------------------------------------------------ the release the notebooks install


def _install_namespace(text: str, *, colab: bool, pip_returncode: int) -> tuple[list, dict, BaseException | None]:
    """Run an install cell's code with Colab faked and subprocess.run recorded (nothing is installed)."""
    import types

    calls = []

    def fake_run(cmd, **kw):
        calls.append((cmd, kw))
        return types.SimpleNamespace(returncode=pip_returncode, stdout="Collecting csigen\n",
                                     stderr="ERROR: Could not find a version that satisfies the requirement\n")

    fake_subprocess = types.ModuleType("subprocess")
    fake_subprocess.run = fake_run
    modules = dict(sys.modules, subprocess=fake_subprocess)
    if colab:
        modules["google.colab"] = types.ModuleType("google.colab")
    else:
        modules.pop("google.colab", None)
    namespace: dict = {}
    error = None
    import unittest.mock

    with unittest.mock.patch.dict(sys.modules, modules, clear=True):
        try:
            exec(compile(text, "<install cell>", "exec"), namespace)  # noqa: S102 (the committed cell, pip faked)
        except RuntimeError as exc:
            error = exc
    return calls, namespace, error


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cell_pins_the_release_of_this_version_and_shows_pip_on_failure(name, capsys):
    """Notebooks and package agree: the install cell installs tag v<csigen.__version__> (README, "Releasing")."""
    text = source(next(c for c in load(name)["cells"] if "install" in tags(c)))
    tags_in_cell = re.findall(r"@(v[0-9][^\"']*)[\"']", text)
    assert tags_in_cell == [f"v{csigen.__version__}"], (
        f"{name}: the install cell installs {tags_in_cell}, csigen.__version__ is {csigen.__version__!r}; run "
        "`python tools/sync_notebook_links.py` (README, 'Releasing')")
    assert "@main" not in text and "--upgrade" not in text and "-U" not in text.split()  # keeps Colab's torch

    calls, _, error = _install_namespace(text, colab=False, pip_returncode=0)
    assert calls == [] and error is None  # locally nothing is installed

    calls, _, error = _install_namespace(text, colab=True, pip_returncode=0)
    assert error is None and len(calls) == 1
    cmd, _ = calls[0]
    assert cmd[1:4] == ["-m", "pip", "install"] and cmd[-1] == f"csigen @ git+{csigen.REPO_URL}@v{csigen.__version__}"
    assert not any(a.startswith(("torch", "ipywidgets")) for a in cmd)
    capsys.readouterr()

    calls, _, error = _install_namespace(text, colab=True, pip_returncode=1)
    printed = capsys.readouterr().out
    assert isinstance(error, RuntimeError) and "output is printed above" in str(error)
    assert "Could not find a version" in printed and "Collecting csigen" in printed  # pip's own output shown


def test_package_requirements_keep_colabs_torch_and_ipywidgets():
    """pip keeps an installed torch / ipywidgets only if csigen's requirements are lower bounds they satisfy."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {re.split(r"[<>=!~ ]", d, maxsplit=1)[0]: d for d in deps}
    assert pins["torch"] == "torch>=2.1" or re.fullmatch(r"torch>=2\.\d+", pins["torch"])
    # Colab ships ipywidgets 7.7.1: an upper bound or a lower bound above it would replace Colab's widgets
    match = re.fullmatch(r"ipywidgets>=(\d+)\.(\d+)(?:\.(\d+))?", pins["ipywidgets"])
    assert match and tuple(int(x or 0) for x in match.groups()) <= (7, 7, 1), pins["ipywidgets"]


#: The variant each lesson notebook trains (its run-time table gives one run's time).
LESSON_VARIANT = {"01_csi.ipynb": "csi", "02_adding_generator.ipynb": "csi+g", "03_adding_encoder.ipynb": "full"}


@pytest.mark.parametrize("name", sorted(LESSON_VARIANT))
def test_quick_preset_description_agrees_with_the_run_time_table(name):
    """Issue 13: `python -m csigen presets` and the notebooks state the same Colab T4 time for a `quick` run."""
    from csigen.config import PRESETS

    title = source(load(name)["cells"][0])
    row = next((line for line in title.splitlines() if line.startswith("| Colab T4 GPU | `quick`")), None)
    assert row is not None, f"{name}: no Colab T4 / quick row in the run-time table"
    time = re.search(r"\| about ([^,:|]+?)(?:[,:]|\s*\|)", row)
    assert time, f"{name}: the quick row states no 'about <time>': {row}"
    stated = f"{LESSON_VARIANT[name]} about {time.group(1).strip()}"
    assert stated in PRESETS["quick"].doc, (f"{name} says {stated!r} for preset quick; csigen.config.PRESETS['quick'] "
                                            f"says: {PRESETS['quick'].doc}")
