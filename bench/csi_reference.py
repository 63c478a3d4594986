"""Import the official CSI code (github.com/alinlab/CSI, an extracted copy given by ``--reference``).

The copy is never part of this repository: the benchmarks import it at run time from the path given.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path


def prepare_csi_import(csi_root: Path, needed: str) -> None:
    """Put ``csi_root`` on ``sys.path`` with stand-ins for ``diffdist`` (multi-GPU) and ``tensorboardX``
    (logging), which CSI imports at module level; exit with a message if ``csi_root/needed`` is missing."""
    if not (csi_root / needed).exists():
        sys.exit(f"--reference: no CSI code at {csi_root} (expected {needed})")
    dd = types.ModuleType("diffdist")
    dd.functional = types.ModuleType("diffdist.functional")
    sys.modules.setdefault("diffdist", dd)
    sys.modules.setdefault("diffdist.functional", dd.functional)
    tbx = types.ModuleType("tensorboardX")
    tbx.SummaryWriter = object
    sys.modules.setdefault("tensorboardX", tbx)
    sys.path.insert(0, str(csi_root))
