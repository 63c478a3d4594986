"""The paper's numbers (as data), sweeps over one-class tasks, and result tables.

Every number in :data:`PAPER_TABLE1`, :data:`PAPER_ABLATION`,
:data:`PAPER_FID` and :data:`CSI_PAPER_PER_CLASS` is *quoted from the papers*
(Yu & Chiu, Table 1 and Sec. 3.2; Tack et al. for CSI's per-class numbers),
never computed here; tables built by :func:`compare_with_paper` label them
``"paper"`` beside the measured ``"ours (measured)"``.

A sweep is a list of runs, one folder per run
(:func:`run_dir`), each written atomically by :func:`csigen.train.run`. Re-running
a sweep after an interruption skips finished runs, resumes the interrupted
one, and cannot duplicate records: :func:`collect` reads one ``result.json``
per folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

#: Table 1 of the paper: mean one-class AUROC (%), pooled.
PAPER_TABLE1: dict[str, dict[str, float | None]] = {
    "cifar10": {"DeepSVDD": 64.8, "OCGAN": 65.7, "Geom": 86.0, "Rot+Trans": 90.1, "GOAD": 88.2,
                "CSI": 94.3, "Ours": 95.1},
    "cifar100": {"DeepSVDD": None, "OCGAN": None, "Geom": 78.7, "Rot+Trans": 79.8, "GOAD": 74.5,
                 "CSI": 89.6, "Ours": 90.9},
    "imagenet30": {"DeepSVDD": None, "OCGAN": None, "Geom": None, "Rot+Trans": 85.7, "GOAD": None,
                   "CSI": 91.6, "Ours": 93.0},
}
#: Sec. 3.2 ablation on CIFAR-10 (mean AUROC %), keyed by csigen variant.
PAPER_ABLATION: dict[str, float] = {"csi": 94.3, "csi+g": 94.8, "full": 95.1}
#: Sec. 3.2 FID of G (lower is better); reference statistics and sample count unstated.
PAPER_FID: dict[str, float] = {"csi+g": 69.5, "full": 54.1}
#: CSI paper, one-class CIFAR-10 AUROC (%) per inlier class (ResNet-18).
CSI_PAPER_PER_CLASS: dict[str, float] = {
    "airplane": 89.9, "automobile": 99.1, "bird": 93.1, "cat": 86.4, "deer": 93.9,
    "dog": 93.2, "frog": 95.1, "horse": 98.7, "ship": 97.9, "truck": 95.5,
}
#: Which column of Table 1 each variant corresponds to.
VARIANT_COLUMN = {"csi": "CSI", "full": "Ours"}


def paper_number(dataset: str, variant: str) -> float | None:
    """The paper's mean AUROC (%) for a dataset and variant, or None if it reports none."""
    if dataset == "cifar10" and variant in PAPER_ABLATION:
        return PAPER_ABLATION[variant]
    column = VARIANT_COLUMN.get(variant)
    return PAPER_TABLE1.get(dataset, {}).get(column) if column else None


def run_dir(root: str | os.PathLike, config) -> Path:
    """The canonical folder of a run: ``root/<dataset>-<inlier>-<variant>-<preset>-s<seed>``."""
    inlier = str(config.inlier).replace(os.sep, "_")
    return Path(root) / f"{config.dataset}-{inlier}-{config.variant}-{config.preset}-s{config.seed}"


def sweep(configs: Iterable, root: str | os.PathLike, *, progress: bool = True,
          callbacks: Sequence = ()) -> list[dict[str, Any]]:
    """Run every config into its own folder under ``root``; finished runs are only read back."""
    from csigen.train import run

    results = []
    for config in configs:
        results.append(run(config, run_dir(root, config), resume=True, progress=progress,
                           callbacks=callbacks))
    return results


def collect(root: str | os.PathLike):
    """All finished runs under ``root`` as a DataFrame, one row per run folder.

    Unfinished folders (no ``result.json``) are skipped; AUROC is in percent.
    """
    import pandas as pd

    rows = []
    for path in sorted(Path(root).rglob("result.json")):
        r = json.loads(path.read_text())
        rows.append({
            "run": str(path.parent), "dataset": r["dataset"], "inlier": r["inlier"],
            "inlier_name": r.get("inlier_name"), "variant": r["variant"], "preset": r["preset"],
            "seed": r["seed"], "auroc": 100.0 * r["auroc"], "score": r.get("score"),
            "seconds": r.get("seconds"), "device": r.get("device"),
        })
    columns = ["run", "dataset", "inlier", "inlier_name", "variant", "preset", "seed", "auroc",
               "score", "seconds", "device"]
    return pd.DataFrame(rows, columns=columns)


def compare_with_paper(runs) -> "Any":
    """Mean (and std over seeds) of measured AUROC per dataset and variant, beside the paper's.

    ``runs`` is the DataFrame of :func:`collect`. Columns: ``dataset``,
    ``variant``, ``tasks`` (number of inlier classes), ``seeds``,
    ``ours (measured)``, ``ours (std)`` (over seeds of the per-seed class mean),
    ``paper``.
    """
    import pandas as pd

    rows = []
    for (dataset, variant), g in runs.groupby(["dataset", "variant"], sort=False):
        per_seed = g.groupby("seed")["auroc"].mean()
        rows.append({
            "dataset": dataset, "variant": variant, "tasks": g["inlier"].nunique(),
            "seeds": len(per_seed), "ours (measured)": per_seed.mean(),
            "ours (std)": per_seed.std(ddof=0) if len(per_seed) > 1 else 0.0,
            "paper": paper_number(dataset, variant),
        })
    return pd.DataFrame(rows, columns=["dataset", "variant", "tasks", "seeds", "ours (measured)",
                                       "ours (std)", "paper"])
