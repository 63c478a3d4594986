"""Test-session settings: small, quiet, offline runs.

CSIGEN_SMOKE=1 reaches the notebooks' kernels (nbmake inherits the
environment), which then switch to the smoke preset and the built-in data.
"""

import os

os.environ.setdefault("CSIGEN_SMOKE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
