"""Test-session settings: small, quiet, offline runs.

CSIGEN_SMOKE=1 reaches the notebooks' kernels (nbmake inherits the
environment), where csigen.notebook.setup switches to the smoke preset and the
built-in data. CSIGEN_OUT points the notebooks at a fresh folder for this
session, shared by the notebooks (02 and 03 reuse the runs of 01 and 02) and
never at a folder of finished runs from an earlier session.
"""

import os
import tempfile

os.environ.setdefault("CSIGEN_SMOKE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("CSIGEN_OUT", tempfile.mkdtemp(prefix="csigen-test-runs-"))
