"""Rewrite the Colab badge and the install cell of every notebook from csigen.REPO_URL / REPO_BRANCH / __version__.

The repository's address and the package's version live in one place,
``csigen/__init__.py``. Each notebook carries them twice:

* the Colab badge in its first markdown cell, which opens
  ``https://colab.research.google.com/github/OWNER/REPO/blob/BRANCH/notebooks/NAME.ipynb``;
* the install cell (tagged ``install``), generated whole by :func:`install_cell_source`:
  in Colab it pip-installs ``csigen @ git+REPO_URL@v<__version__>``, the release
  the notebook was written for (the tag the README's "Releasing" steps create),
  not the moving branch; csigen's requirements are lower bounds only, so pip
  keeps Colab's own torch and ipywidgets; when pip fails its output is printed.

Usage::

    python tools/sync_notebook_links.py            # rewrite what is out of date
    python tools/sync_notebook_links.py --check    # exit 1 and list what is out of date

Only the badge and the install cell change; everything else in a notebook is left as it is.
The .ipynb files are the notebooks' only source: after editing one in
JupyterLab or Colab, run this tool and nbstripout before committing (README,
"Editing the notebooks"); tests/test_notebooks.py checks both in CI.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
INSTALL_TAG = "install"

# a Colab badge: [![Open In Colab](<image>)](https://colab.research.google.com/<anything>)
_BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/[^)]*\)")
# the pip target of the install cell: "git+<anything>" or "csigen @ git+<anything>"
_INSTALL_RE = re.compile(r"([\"'])(?:csigen @ )?git\+[^\"']*\1")


def repo_constants() -> tuple[str, str, str]:
    """``(REPO_URL, REPO_BRANCH, __version__)`` of the csigen checkout this tool belongs to."""
    sys.path.insert(0, str(ROOT))
    try:
        import csigen
    finally:
        sys.path.pop(0)
    return csigen.REPO_URL, csigen.REPO_BRANCH, csigen.__version__


def github_path(repo_url: str) -> str:
    """``OWNER/REPO`` of a GitHub URL (Colab opens notebooks from GitHub only)."""
    m = re.fullmatch(r"https://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?/?", repo_url.strip())
    if not m:
        raise ValueError(f"REPO_URL must look like https://github.com/OWNER/REPO, got {repo_url!r}")
    return f"{m.group(1)}/{m.group(2)}"


def colab_url(notebook: str, repo_url: str, branch: str) -> str:
    """Colab address of ``notebooks/<notebook>`` on ``branch``."""
    return f"https://colab.research.google.com/github/{github_path(repo_url)}/blob/{branch}/notebooks/{notebook}"


def badge_markdown(notebook: str, repo_url: str, branch: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(notebook, repo_url, branch)})"


def release_tag(version: str) -> str:
    """The git tag of a release: ``v<version>`` (README, "Releasing")."""
    return f"v{version}"


def install_target(repo_url: str, version: str) -> str:
    """What the install cell passes to pip: csigen at the release tag of ``version``."""
    return f"csigen @ git+{repo_url.strip().rstrip('/')}@{release_tag(version)}"


def install_cell_source(repo_url: str, version: str) -> str:
    """The whole install cell: pip in Colab only, pip's output shown when it fails."""
    target = install_target(repo_url, version)
    return f"""import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:  # pip through subprocess: an IPython magic cannot sit inside an if block
    import subprocess

    # csigen {release_tag(version)}, the release this notebook was written for (tools/sync_notebook_links.py
    # writes it from csigen.__version__). csigen asks for lower bounds only, so Colab's torch and ipywidgets stay.
    target = "{target}"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", target], capture_output=True, text=True,
                         check=False)
    if pip.returncode != 0:
        print(pip.stdout + pip.stderr)
        raise RuntimeError(f"pip could not install {{target!r}}; its output is printed above. Check the runtime's "
                           "internet connection, then run this cell again.")
    print(f"installed {{target}}")"""


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _set_source(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True) if isinstance(cell.get("source"), list) else text


def sync_notebook(nb: dict, name: str, repo_url: str, branch: str, version: str) -> list[str]:
    """Update ``nb`` in place; return what was wrong (empty list: it was up to date)."""
    problems = []
    cells = nb.get("cells", [])
    first_md = next((c for c in cells if c.get("cell_type") == "markdown"), None)
    badge = badge_markdown(name, repo_url, branch)
    if first_md is None:
        problems.append("no markdown cell for the Colab badge")
    else:
        text = _source(first_md)
        found = _BADGE_RE.findall(text)
        if not found:
            problems.append("no Colab badge in the first markdown cell")
        elif any(b != badge for b in found):
            problems.append(f"Colab badge is out of date (want {colab_url(name, repo_url, branch)})")
            _set_source(first_md, _BADGE_RE.sub(lambda _: badge, text))

    target = install_target(repo_url, version)
    wanted = install_cell_source(repo_url, version)
    install = [c for c in cells if INSTALL_TAG in c.get("metadata", {}).get("tags", [])]
    if len(install) != 1:
        problems.append(f"expected exactly one cell tagged {INSTALL_TAG!r}, found {len(install)}")
    for cell in install:
        text = _source(cell)
        if text == wanted:
            continue
        targets = [m.group(0)[1:-1] for m in _INSTALL_RE.finditer(text)]
        if targets and any(t != target for t in targets):
            problems.append(f"install cell target is out of date (want {target!r})")
        else:
            problems.append("install cell is out of date (it is generated whole by this tool)")
        _set_source(cell, wanted)
    return problems


def _write(path: Path, nb: dict) -> None:
    # the layout nbformat.write and nbstripout use, so a rewrite is a minimal diff
    path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is out of date")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks", help="folder of the notebooks")
    args = parser.parse_args(argv)

    repo_url, branch, version = repo_constants()
    paths = sorted(args.notebooks.glob("*.ipynb"))
    if not paths:
        print(f"no notebooks under {args.notebooks}", file=sys.stderr)
        return 1
    unfixable = stale = 0
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        problems = sync_notebook(nb, path.name, repo_url, branch, version)
        fixable = [p for p in problems if "out of date" in p]
        for p in problems:
            print(f"{path.name}: {p}")
        unfixable += len(problems) - len(fixable)
        if fixable:
            stale += 1
            if not args.check:
                _write(path, nb)
                print(f"{path.name}: rewritten")
    if args.check and (stale or unfixable):
        print(f"out of date: run `python {Path(__file__).relative_to(ROOT)}` "
              f"(links come from csigen.REPO_URL={repo_url!r}, REPO_BRANCH={branch!r}, __version__={version!r})",
              file=sys.stderr)
        return 1
    return 1 if unfixable else 0


if __name__ == "__main__":
    sys.exit(main())
