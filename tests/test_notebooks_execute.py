"""Every notebook runs top to bottom with nbmake, in smoke mode (CSIGEN_SMOKE=1).

Each notebook runs in its own ``pytest --nbmake`` subprocess, in order
(02 and 03 reuse the runs of 01 and 02 through the shared CSIGEN_OUT that
conftest.py sets for the session). The subprocess keeps the Jupyter kernel
client out of this test process, whose earlier tests (threads, signals,
subprocess kills) have been seen to leave nbclient waiting forever; a hang
now fails with the notebook's name after the timeout instead of stalling CI.

Under heavy load the Jupyter client has also been seen to lose a kernel
message and wait for it until the cell timeout (the kernel idle, the client
waiting): such a timeout is retried once in a fresh kernel. The retry is
cheap because the notebooks load finished runs and resume interrupted ones;
an error raised by a cell is never retried.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


#: Seconds one cell may take before nbclient gives up (the longest smoke cell takes well under a minute).
CELL_TIMEOUT = 300
#: Output that says the client stopped waiting, not that a cell raised an error.
HANG_MARKERS = ("CellTimeoutError", "Timeout waiting for", "NBMAKE INTERNAL ERROR", "Kernel didn't respond",
                "did not finish in")


def _run_once(notebook):
    command = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "--nbmake",
               "--nbmake-kernel=python3", f"--nbmake-timeout={CELL_TIMEOUT}", str(notebook)]
    try:
        done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=900,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return None, f"{notebook.name} did not finish in {exc.timeout} s:\n{out[-3000:]}"
    return done.returncode, f"{done.stdout[-6000:]}\n{done.stderr[-2000:]}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(notebook):
    assert os.environ.get("CSIGEN_SMOKE") == "1"
    code, output = _run_once(notebook)
    if code != 0 and any(marker in output for marker in HANG_MARKERS):
        print(f"{notebook.name}: the Jupyter client timed out; retrying once in a fresh kernel:\n{output[-1500:]}")
        code, output = _run_once(notebook)
    assert code == 0, f"{notebook.name} failed:\n{output}"
