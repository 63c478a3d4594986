"""Every notebook runs top to bottom with nbmake, in smoke mode (CSIGEN_SMOKE=1).

Each notebook runs in its own ``pytest --nbmake`` subprocess, in order
(02 and 03 reuse the runs of 01 and 02 through the shared CSIGEN_OUT that
conftest.py sets for the session). The subprocess keeps the Jupyter kernel
client out of this test process, whose earlier tests (threads, signals,
subprocess kills) have been seen to leave nbclient waiting forever; a hang
now fails with the notebook's name after the timeout instead of stalling CI.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(notebook):
    assert os.environ.get("CSIGEN_SMOKE") == "1"
    command = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "--nbmake",
               "--nbmake-kernel=python3", "--nbmake-timeout=600", str(notebook)]
    try:
        done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=900,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{notebook.name} did not finish in {exc.timeout} s:\n{(exc.stdout or '')[-3000:]}")
    assert done.returncode == 0, f"{notebook.name} failed:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
