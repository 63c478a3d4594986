"""Static checks of notebooks/*.ipynb (tests/test_notebooks_execute.py runs them with nbmake).

Each notebook: kernel python3, committed stripped, a Colab badge to its own
path and an install cell, both built from csigen.REPO_URL / REPO_BRANCH, and a
`parameters` cell that reads CSIGEN_SMOKE. The links are in sync
(tools/sync_notebook_links.py --check) and the notebooks match their source
(tools/build_notebooks.py --check).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import csigen

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_csi.ipynb", "02_adding_generator.ipynb", "03_adding_encoder.ipynb"]
COLAB_PREFIX = "https://colab.research.google.com/github/"
# nbstripout's settings for this repository (Colab adds these keys when a notebook is saved there)
NBSTRIPOUT_ARGS = ["--extra-keys",
                   "metadata.colab.provenance cell.metadata.colab cell.metadata.id cell.metadata.outputId"]


def load(name: str) -> dict:
    return json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def unstripped_cells(nb: dict) -> list[int]:
    """Indices of code cells that carry outputs or an execution count."""
    return [i for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]


def tool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=120)


def github_path() -> str:
    return csigen.REPO_URL.removeprefix("https://github.com/").removesuffix(".git").strip("/")


def test_every_notebook_is_listed():
    assert sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_kernel_is_python3(name):
    assert load(name)["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    assert unstripped_cells(load(name)) == [], f"{name} has outputs: run nbstripout on it"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_colab_badge_points_at_this_notebook(name):
    first_markdown = next(c for c in load(name)["cells"] if c["cell_type"] == "markdown")
    url = f"{COLAB_PREFIX}{github_path()}/blob/{csigen.REPO_BRANCH}/notebooks/{name}"
    assert f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})" in source(
        first_markdown)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_reads_smoke_switch(name):
    cells = [c for c in load(name)["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1 and cells[0]["cell_type"] == "code"
    assert "CSIGEN_SMOKE" in source(cells[0])
    assert "CSIGEN_OUT" in source(cells[0])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cell_installs_this_repository_in_colab_only(name):
    cells = [c for c in load(name)["cells"] if "install" in c["metadata"].get("tags", [])]
    assert len(cells) == 1
    text = source(cells[0])
    assert f'"git+{csigen.REPO_URL}@{csigen.REPO_BRANCH}"' in text
    assert "if IN_COLAB" in text  # locally nothing is installed
    assert not any(line.strip().startswith(("%pip", "!pip")) for line in text.splitlines())  # no magic in an if


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_summary_and_a_checked_exercise(name):
    nb = load(name)
    markdown = "\n".join(source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "## Summary" in markdown and "## Exercises" in markdown
    assert any("def check_answer" in source(c) for c in nb["cells"] if c["cell_type"] == "code")


def test_links_in_sync():
    out = tool("tools/sync_notebook_links.py", "--check")
    assert out.returncode == 0, out.stdout + out.stderr


def test_notebooks_match_their_source():
    out = tool("tools/build_notebooks.py", "--check")
    assert out.returncode == 0, out.stdout + out.stderr


def test_sync_check_catches_a_stale_link_and_fixes_it(tmp_path):
    nb = load(NOTEBOOKS[0])
    for cell in nb["cells"]:
        text = source(cell).replace(github_path(), "someone/old-fork")
        cell["source"] = text.replace(f"@{csigen.REPO_BRANCH}\"", "@dev\"")
    path = tmp_path / NOTEBOOKS[0]
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")

    out = tool("tools/sync_notebook_links.py", "--check", "--notebooks", str(tmp_path))
    assert out.returncode == 1
    assert "badge is out of date" in out.stdout and "install cell target is out of date" in out.stdout
    assert tool("tools/sync_notebook_links.py", "--notebooks", str(tmp_path)).returncode == 0
    assert tool("tools/sync_notebook_links.py", "--check", "--notebooks", str(tmp_path)).returncode == 0
    assert "someone/old-fork" not in path.read_text(encoding="utf-8")


def test_unstripped_notebook_is_caught(tmp_path):
    nb = load(NOTEBOOKS[0])
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    cell["execution_count"] = 1
    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
    path = tmp_path / "executed.ipynb"
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    assert unstripped_cells(nb) != []

    pytest.importorskip("nbstripout", reason="nbstripout is not installed (pip install -e '.[dev]')")
    verify = [sys.executable, "-m", "nbstripout", "--verify", *NBSTRIPOUT_ARGS]
    assert subprocess.run([*verify, str(path)], check=False, capture_output=True).returncode != 0
    committed = [str(ROOT / "notebooks" / n) for n in NOTEBOOKS]
    out = subprocess.run([*verify, *committed], check=False, capture_output=True, text=True)
    assert out.returncode == 0, f"committed notebooks are not stripped: {out.stdout}{out.stderr}"
