"""pyproject.toml, environment.yml, README and .ci/run agree with each other."""

import re
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package (the [dev] extra installs it)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI names
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pypi = {_name(r) for r in project["dependencies"]} | {_name(r) for r in project["optional-dependencies"]["lab"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    conda, pip = set(), []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip = dep["pip"]
        else:
            conda.add(CONDA_TO_PYPI.get(_name(dep), _name(dep)))
    named = (conda - {"python", "pip"}) | {_name(p) for p in pip if not p.startswith("-e")}
    assert named == pypi
    assert any(p.startswith("-e .[lab,dev]") for p in pip)


def test_only_lower_bounds_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    for r in reqs:
        spec = r.split(";")[0]  # the version part; an environment marker may compare python_version
        assert "==" not in spec and "<" not in spec, f"{r}: keep only lower bounds (Colab ships its own torch)"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\*\*Run the tests\*\*.*?```bash\n(.*?)\n```", readme, re.S).group(1)
    install, command = [part.strip() for part in block.split("&&")]
    assert install == "pip install -e '.[dev]'"
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == command


def test_import_has_no_side_effects():
    import subprocess
    import sys

    code = ("import sys, csigen; heavy = [m for m in ('torch', 'torchvision', 'pandas', 'matplotlib') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_badges_follow_repo_url():
    import csigen

    readme = (ROOT / "README.md").read_text()
    owner_repo = csigen.REPO_URL.removeprefix("https://github.com/")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        url = f"https://colab.research.google.com/github/{owner_repo}/blob/{csigen.REPO_BRANCH}/notebooks/{nb.name}"
        assert url in readme, f"README lacks the Colab badge of {nb.name}: {url}"
    assert csigen.REPO_URL in readme


def test_ruff_finds_no_unused_or_undefined_names_and_sorted_imports():
    """pyflakes' checks (unused imports and variables, undefined names) and import order, with ruff (a [dev] tool)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F,I", "--output-format", "concise",
                          "csigen", "bench", "tests", "tools"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
