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
import sys
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
#: The score behind the paper's number for each variant: CSI's numbers (94.3 / 89.6 / 91.6 and the
#: per-class table) use CSI's own score (shift head plus training-set weights); the paper's method is
#: presumably scored with Eq. 11 (csigen's assumption: the paper does not say which score its numbers use,
#: only that its method uses "a simplified score function M from [32]"), read as ``"shared"`` (see
#: :func:`csigen.score.nearest_neighbour_score`).
PAPER_SCORE: dict[str, str] = {"csi": "csi", "csi+g": "shared", "full": "shared"}
#: Number of one-class tasks of each dataset (CIFAR-100: the 20 superclasses), for coverage.
#: The table name of CIFAR-100 runs grouped by the official coarse labels (``cifar100_superclasses="torchvision"``):
#: not the grouping behind CSI's CIFAR-100 numbers (CSI's list, presumably the paper's too), so never compared
#: with them.
CIFAR100_TORCHVISION = "cifar100-torchvision"
DATASET_CLASSES: dict[str, int] = {"cifar10": 10, "cifar100": 20, CIFAR100_TORCHVISION: 20, "imagenet30": 30}


def paper_number(dataset: str, variant: str) -> float | None:
    """The paper's mean AUROC (%) for a dataset and variant, or None if it reports none."""
    if dataset == "cifar10" and variant in PAPER_ABLATION:
        return PAPER_ABLATION[variant]
    column = VARIANT_COLUMN.get(variant)
    return PAPER_TABLE1.get(dataset, {}).get(column) if column else None


def coverage_text(classes: int, total: int) -> str:
    """How many of a dataset's classes a mean covers, as the tables and figures write it: "2 of 10 classes"."""
    return f"{classes} of {total} classes"


def auroc_of(result: dict, score: str) -> float:
    """A run record's AUROC (fraction) under ``score``: from its ``"scores"``, or its top-level ``"auroc"``
    when that is the score it reported; NaN when the record did not store that score (older records)."""
    stored = (result.get("scores") or {}).get(score)
    if stored is not None:
        return float(stored["auroc"])
    return float(result["auroc"]) if result.get("score") == score else float("nan")


def run_dir(root: str | os.PathLike, config) -> Path:
    """The canonical folder of a run: ``root/<dataset>-<inlier>-<variant>-<preset>-s<seed>``."""
    inlier = str(config.inlier).replace(os.sep, "_")
    return Path(root) / f"{config.dataset}-{inlier}-{config.variant}-{config.preset}-s{config.seed}"


def sweep(configs: Iterable, root: str | os.PathLike, *, progress: bool = True,
          callbacks: Sequence = (), keep_checkpoint: bool = False, check_disk: bool = True,
          verbose: bool = False) -> list[dict[str, Any]]:
    """Run every config into its own folder under ``root``; finished runs are only read back.

    Before anything is trained, the disk use of the runs still to do is
    estimated from the networks' parameter counts
    (:func:`csigen.disk.check_sweep_space`; ``verbose`` prints it): with
    ``check_disk`` a sweep that would not fit in ``root``'s free space raises
    :class:`csigen.disk.NotEnoughSpaceError` (an ``OSError``) saying what is
    needed and free, and nothing is written. ``keep_checkpoint`` keeps each
    finished run's ``checkpoint.pt`` (optimiser state included) instead of only
    its weights (see :func:`csigen.train.run`). Each run is trained under its
    folder's lock (:func:`csigen.parallel.locked_run`): a run that another live
    worker is training raises :class:`csigen.parallel.RunLockedError` instead
    of being trained twice (``python -m csigen sweep --devices ...`` shares the
    runs among workers, see :mod:`csigen.parallel`).
    """
    from csigen.disk import check_sweep_space, estimate_sweep_disk
    from csigen.parallel import locked_run

    configs = list(configs)
    estimate = (check_sweep_space if check_disk else estimate_sweep_disk)(configs, root,
                                                                          keep_checkpoint=keep_checkpoint)
    if verbose:
        print(estimate.describe(), file=sys.stderr)
    results = []
    for config in configs:
        results.append(locked_run(config, run_dir(root, config), resume=True, progress=progress,
                                  callbacks=callbacks, keep_checkpoint=keep_checkpoint))
    return results


#: Data set label of runs on a local ImageFolder copy of CIFAR-10 (such as the JPEG copy used offline): they
#: are tabled as CIFAR-10, beside the paper's CIFAR-10 numbers, and their data is named so in every caption.
CIFAR10_COPY = "CIFAR-10 (JPEG copy)"


def table_dataset(record: dict) -> tuple[str, str | None]:
    """``(dataset, data note)`` under which a run's ``result.json`` record is tabled.

    A run on ``imagefolder`` whose classes are CIFAR-10's ten, in CIFAR-10's order
    (``record["class_names"]``; for records written before that field, the
    classes of the recorded ``data_root`` when that folder is at hand) is tabled
    as ``"cifar10"`` with the note :data:`CIFAR10_COPY`, so that tables compare it
    with the paper's CIFAR-10 numbers while saying which data it is. Every other
    record keeps its dataset, with no note, except CIFAR-100 grouped by the
    official coarse labels: :data:`CIFAR100_TORCHVISION`, which has no paper number.
    """
    from csigen.data import CIFAR10_CLASSES, class_names

    dataset = record["dataset"]
    if dataset == "cifar100" and (record.get("config") or {}).get("cifar100_superclasses", "csi") != "csi":
        return CIFAR100_TORCHVISION, None
    if dataset != "imagefolder":
        return dataset, None
    names = record.get("class_names")
    root = (record.get("config") or {}).get("data_root")
    if names is None and root is not None and Path(root).expanduser().is_dir():
        try:
            names = class_names("imagefolder", root=root)
        except (ValueError, OSError):
            names = None
    if names is not None and tuple(names) == tuple(CIFAR10_CLASSES):
        return "cifar10", CIFAR10_COPY
    return dataset, None


#: Config fields in which two runs of one preset may differ and still be the same recipe: where they ran and
#: saved (:data:`csigen.config.ENVIRONMENT_FIELDS`), which task they are, the score reported first (every
#: record stores every score) and the evaluation's batch size.
RECIPE_IGNORED = ("dataset", "inlier", "seed", "variant", "preset", "score", "eval_batch_size")


def recipe_fields(config: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of a recorded config (``result.json["config"]``, any schema version) that make its recipe.

    All but :data:`RECIPE_IGNORED` and :data:`csigen.config.ENVIRONMENT_FIELDS`, and for ``csi`` runs also
    :data:`csigen.config.GENERATIVE_FIELDS` (a ``csi`` run has no G): two runs of one preset that differ in
    any of these (e.g. ``train_blur_p``, ``gan_every``, ``max_test``) measured different things. ``{}``
    for a record without a config.
    """
    from csigen.config import ConfigError, TrainConfig, fields_ignored_between

    if not config:
        return {}
    try:
        c = TrainConfig.from_dict(dict(config)).to_dict()  # upgraded; fields it lacks at their defaults
    except ConfigError:  # a record this csigen cannot read as a config: compare what it holds
        c = dict(config)
    ignored = set(RECIPE_IGNORED) | set(fields_ignored_between(c["variant"] == "csi"))
    return {k: v for k, v in c.items() if k not in ignored}


def _recipe_labels(keys: list[tuple[Any, str]]) -> list[str]:
    """Per run (its group and recipe), "" for its group's commonest recipe, else how it departs from it.

    ``keys``: ``(group, recipe)`` per run, the recipe a JSON string of :func:`recipe_fields`. The
    commonest recipe of a group (ties: the first in sorted order) is labelled ""; another is labelled with
    the fields where it differs, e.g. ``"gan_every=3"``, so tables never average unlike runs.
    """
    from collections import Counter

    counts: dict[Any, Counter] = {}
    for group, recipe in keys:
        counts.setdefault(group, Counter())[recipe] += 1
    common = {g: min(c, key=lambda r: (-c[r], r)) for g, c in counts.items()}
    labels = []
    for group, recipe in keys:
        if recipe == common[group]:
            labels.append("")
            continue
        mine, base = json.loads(recipe), json.loads(common[group])
        labels.append(", ".join(f"{k}={mine.get(k)!r}" for k in sorted(set(mine) | set(base))
                                if mine.get(k) != base.get(k)))
    return labels


def collect(root: str | os.PathLike | Iterable[str | os.PathLike]):
    """All finished runs under ``root`` (a folder, or several) as a DataFrame, one row per run *per score*.

    Every ``result.json`` below ``root`` is read; unfinished folders (no
    ``result.json``) are skipped. A record with a ``"scores"`` dict (every
    score from one feature pass) gives one row per score; an older record
    gives one row, for its ``"score"``. Columns: ``run``, ``dataset`` and
    ``data`` (:func:`table_dataset`: a local CIFAR-10 copy is tabled as
    ``cifar10`` with ``data`` naming the copy, else ``data`` is None), ``inlier``, ``inlier_name``,
    ``variant``, ``preset``, ``seed``, ``score``, ``auroc`` (percent), ``primary`` (True for the run's
    configured score, the record's top-level ``auroc``), ``seconds``, ``device``, ``schema_version`` (0 for
    records written before versions existed) and ``recipe``: "" for the commonest recipe among the runs of
    the same dataset, variant and preset, else the config fields where a run departs from it
    (:func:`recipe_fields`, e.g. ``"train_blur_p=0.5"``), so that another reading or a calibration run
    kept in the same folder is never pooled with the preset's runs.
    """
    import pandas as pd

    roots = [root] if isinstance(root, (str, os.PathLike)) else list(root)
    rows, keys = [], []
    for path in sorted({p for r in roots for p in Path(r).rglob("result.json")}):
        r = json.loads(path.read_text())
        primary = r.get("score") or (r.get("config") or {}).get("score") or "shared"
        per_score = r.get("scores") or {primary: {"auroc": r["auroc"]}}
        dataset, data = table_dataset(r)
        base = {
            "run": str(path.parent), "dataset": dataset, "data": data, "inlier": r["inlier"],
            "inlier_name": r.get("inlier_name"), "variant": r["variant"], "preset": r["preset"],
            "seed": r["seed"],
        }
        recipe = json.dumps(recipe_fields(r.get("config")), sort_keys=True, default=str)
        for name, s in per_score.items():
            rows.append({**base, "score": name, "auroc": 100.0 * s["auroc"], "primary": name == primary,
                         "seconds": r.get("seconds"), "device": r.get("device"),
                         "schema_version": r.get("schema_version", 0)})
            keys.append(((dataset, r["variant"], r["preset"]), recipe))
    columns = ["run", "dataset", "data", "inlier", "inlier_name", "variant", "preset", "seed", "score", "auroc",
               "primary", "seconds", "device", "schema_version", "recipe"]
    return pd.DataFrame([{**row, "recipe": label} for row, label in zip(rows, _recipe_labels(keys))],
                        columns=columns)


def _class_counts(runs, expected_classes) -> dict[str, int]:
    """Classes per dataset: ``expected_classes`` (int or ``{dataset: int}``), the dataset's own
    count (:data:`DATASET_CLASSES`), else the number of distinct inliers found in ``runs``."""
    counts = {}
    for dataset, g in runs.groupby("dataset", sort=False):
        if isinstance(expected_classes, int):
            counts[dataset] = expected_classes
        elif isinstance(expected_classes, dict) and dataset in expected_classes:
            counts[dataset] = int(expected_classes[dataset])
        else:
            counts[dataset] = DATASET_CLASSES.get(dataset, g["inlier"].astype(str).nunique())
    return counts


def compare_with_paper(runs, expected_classes: int | dict[str, int] | None = None):
    """Measured mean AUROC per dataset, variant, score and preset, beside the paper's number.

    ``runs`` is the DataFrame of :func:`collect`. Runs that differ in dataset,
    variant, score, preset or recipe (:func:`collect`'s ``recipe``: "" for the
    preset's commonest recipe) are never averaged together: each combination is
    one row. Within a row a task (inlier, seed) found in several folders
    counts once (their mean); ``ours (measured)`` is the mean over seeds of the
    per-seed mean over classes, ``ours (std)`` the std over seeds (population,
    0 for one seed). If the seeds cover different class sets, the per-seed
    means are not alike: then ``ours (measured)`` is the mean over classes of
    the per-class mean over seeds and ``ours (std)`` is NaN.

    Columns: ``dataset``, ``variant``, ``score``, ``preset``, ``recipe``, ``classes``
    (inlier classes measured), ``seeds``, ``ours (measured)``, ``ours (std)``,
    ``paper`` (the paper's number for this dataset and variant, or NaN),
    ``paper score`` (True where ``score`` is the one behind the paper's number,
    :data:`PAPER_SCORE`), ``complete`` (every class measured) and ``coverage``
    (for example ``"3 of 10 classes"``). The class count is
    ``expected_classes`` (an int, or ``{dataset: int}``) when given, else the
    dataset's (CIFAR-10 10, CIFAR-100 20 superclasses, ImageNet-30 30), else the
    number of distinct inliers found for that dataset in ``runs``. A mean over
    an incomplete class set is not comparable with the paper's mean over all
    classes.
    """
    import numpy as np
    import pandas as pd

    from csigen.config import SCORES, VARIANTS

    columns = ["dataset", "variant", "score", "preset", "recipe", "classes", "seeds", "ours (measured)",
               "ours (std)", "paper", "paper score", "complete", "coverage"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    runs = runs.assign(inlier=runs["inlier"].astype(str),
                       recipe=runs["recipe"].fillna("") if "recipe" in runs.columns else "")
    totals = _class_counts(runs, expected_classes)
    rows = []
    for (dataset, variant, score, preset, recipe), g in runs.groupby(
            ["dataset", "variant", "score", "preset", "recipe"], sort=False):
        task = g.groupby(["seed", "inlier"])["auroc"].mean()  # duplicate folders of one task count once
        class_sets = {seed: frozenset(t.index.get_level_values("inlier")) for seed, t in task.groupby(level="seed")}
        classes = frozenset().union(*class_sets.values())
        if len(set(class_sets.values())) == 1:
            per_seed = task.groupby(level="seed").mean()
            measured = per_seed.mean()
            std = per_seed.std(ddof=0) if len(per_seed) > 1 else 0.0
        else:
            measured = task.groupby(level="inlier").mean().mean()
            std = np.nan
        total = totals[dataset]
        paper = paper_number(dataset, variant)
        rows.append({
            "dataset": dataset, "variant": variant, "score": score, "preset": preset, "recipe": recipe,
            "classes": len(classes), "seeds": len(class_sets), "ours (measured)": measured, "ours (std)": std,
            "paper": np.nan if paper is None else paper, "paper score": PAPER_SCORE.get(variant) == score,
            "complete": len(classes) >= total, "coverage": coverage_text(len(classes), total),
        })
    table = pd.DataFrame(rows, columns=columns)

    def order(values, known):
        return values.map(lambda v: known.index(v) if v in known else len(known))

    table = table.sort_values(["dataset", "variant", "score", "preset", "recipe"], kind="stable", key=lambda col: (
        order(col, VARIANTS) if col.name == "variant" else order(col, SCORES) if col.name == "score" else col))
    return table.reset_index(drop=True)


def sweep_plan(configs: Iterable, root: str | os.PathLike):
    """What :func:`sweep` would do with each config, before it does it: a DataFrame, one row per config.

    Columns: ``run`` (the folder, :func:`run_dir`), ``dataset``, ``inlier``,
    ``variant``, ``seed``, ``preset`` and ``state``: ``"finished"``
    (``result.json``: read back, not trained), ``"interrupted"``
    (``checkpoint.pt`` without ``result.json``: resumes from it), ``"to train"``
    (nothing yet) or ``"running"`` (another live worker holds its lock,
    :func:`csigen.parallel.sweep_status`). Nothing is written.
    """
    import pandas as pd

    from csigen.parallel import sweep_status

    configs = list(configs)
    rows = []
    for config, status in zip(configs, sweep_status(configs, root)):
        state = status["status"]
        if state == "missing":
            state = "interrupted" if (Path(status["run"]) / "checkpoint.pt").exists() else "to train"
        rows.append({"run": status["run"], "dataset": config.dataset, "inlier": str(config.inlier),
                     "variant": config.variant, "seed": config.seed, "preset": config.preset, "state": state})
    return pd.DataFrame(rows, columns=["run", "dataset", "inlier", "variant", "seed", "preset", "state"])
