"""The paper's tables and figures, regenerated from finished runs: ``python -m csigen figures``.

:func:`write_figures` reads every finished run under a folder (the run folders
:func:`csigen.train.run` writes: ``result.json``, ``scores.npz``,
``checkpoint.pt`` or, once finished, ``weights.pt``; ``fid.json`` from ``python -m csigen fid``) and writes, for
whatever runs exist:

* ``table1.md`` / ``table1.csv`` / ``table1_per_class.csv`` / ``table1.png``:
  Table 1, mean AUROC per dataset and variant under the score behind the
  paper's number (:data:`csigen.results.PAPER_SCORE`), std over seeds, a
  bootstrap confidence interval from the stored test scores
  (:func:`bootstrap_auroc`), classes and seeds per cell, the paper's numbers
  and the differences; per inlier class with CSI's published per-class numbers
  (CIFAR-10);
* ``ablation.csv`` / ``ablation.png``: CSI -> +G -> full per class and mean,
  with the paper's 94.3 / 94.8 / 95.1;
* ``fid.csv`` / ``fid.png``: FID of G, only from ``fid.json`` records computed
  with the real Inception weights (``real_inception: true``);
* ``figure2.png``: the paper's Figure 2, real images and their
  reconstructions G(E(x)) (the paper: side by side; here one above the
  other), from a ``full`` run (CIFAR-10 cat by default);
* ``README.md``: one caption per file with its provenance.

Each step is also a function a notebook can call (:func:`load_runs`,
:func:`paper_score_rows`, :func:`table1`, :func:`ablation`, :func:`fid_records`,
:func:`figure2_images`). Smoke-preset runs are refused unless
``allow_smoke=True``, and then every caption and title says "meaningless, smoke".
"""

from __future__ import annotations

import datetime
import io
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "OUTPUT_FILES",
    "FIGURE2_KEPT_NOTE",
    "SMOKE_MARK",
    "Bootstrap",
    "RunInfo",
    "SmokeRunsError",
    "ablation",
    "bootstrap_auroc",
    "choose_figure2_run",
    "fid_records",
    "figure2_images",
    "load_runs",
    "paper_score_rows",
    "run_info",
    "setting_label",
    "table1",
    "weighted_auroc",
    "write_figures",
]

#: Bootstrap resamples of the test images per run (``--bootstrap``).
DEFAULT_BOOTSTRAP = 1000
#: Confidence level of the bootstrap intervals.
CONFIDENCE = 0.95
#: Figure 2's run: the paper shows inlier class CIFAR-10 cat.
FIGURE2_DATASET, FIGURE2_CLASS = "cifar10", "cat"
#: Every file this command may write into the output folder. A file of this list that a new
#: invocation does not write (e.g. fid.png once its runs are gone) is removed, so that a folder
#: never mixes figures of different runs.
OUTPUT_FILES = ("table1.md", "table1.csv", "table1_per_class.csv", "table1.png", "ablation.csv",
                "ablation.png", "fid.csv", "fid.png", "figure2.png", "README.md")
#: Written into every caption and title that uses a smoke-preset run.
SMOKE_MARK = "meaningless, smoke"
_SETTING_NAMES = {"cpu": "CPU scale", "cpu-fp32": "CPU scale (float32)", "cpu-amx": "CPU scale (bf16, AMX)",
                  "cpu-avx512bf16": "CPU scale (bf16, AVX512-BF16)",
                  "quick": "quick preset", "custom": "custom settings"}


class SmokeRunsError(ValueError):
    """Smoke-preset runs were found and ``allow_smoke`` is off."""


# ----------------------------------------------------------------------------
# runs and their provenance
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunInfo:
    """What a caption says about one run, read from its ``result.json``."""

    run: str
    dataset: str
    inlier_name: str
    variant: str
    preset: str
    seed: int
    device: str
    commit: str | None
    date: str
    steps: int | None
    train_seconds: float | None
    #: the GPU's or CPU's model name (``result.json``'s ``device_name``; None in records before it was kept)
    device_name: str | None = None

    @property
    def paper_setting(self) -> bool:
        """The paper's setting as csigen reads it: preset ``paper`` (CSI's recipe) trained on a GPU."""
        return self.preset == "paper" and self.device.startswith("cuda")

    @property
    def machine(self) -> str:
        """The device, with its model name where the record has one: ``cpu (AMD EPYC ...)``."""
        return f"{self.device} ({self.device_name})" if self.device_name else self.device


def run_info(run_dir: str | os.PathLike) -> RunInfo:
    """The provenance of one finished run (its ``result.json``).

    The date is the record's ``finished_at`` when it has one, else the file
    time of ``result.json`` (UTC).
    """
    path = Path(run_dir) / "result.json"
    if not path.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} holds no result.json: it is not a finished run "
                                "(train it with `python -m csigen train`, or pick another folder)")
    r = json.loads(path.read_text())
    date = r.get("finished_at") or datetime.datetime.fromtimestamp(
        path.stat().st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d")
    from csigen.results import table_dataset

    return RunInfo(run=str(Path(run_dir)), dataset=table_dataset(r)[0],
                   inlier_name=str(r.get("inlier_name") or r["inlier"]), variant=r["variant"],
                   preset=r["preset"], seed=int(r["seed"]), device=str(r.get("device", "?")),
                   commit=r.get("git_commit"), date=str(date)[:10], steps=r.get("steps"),
                   train_seconds=r.get("train_seconds"), device_name=r.get("device_name"))


def setting_label(presets, devices, data=()) -> str:
    """How a caption names the setting of some runs: the paper's, CPU scale, smoke, ...

    ``data``: the runs' data notes (``collect``'s ``data`` column, e.g. "CIFAR-10 (JPEG copy)"); any
    given are named after the setting.
    """
    notes = sorted({str(d) for d in data if isinstance(d, str) and d})
    suffix = f"; data: {', '.join(notes)}" if notes else ""
    presets, devices = set(presets), {str(d) for d in devices}
    if "smoke" in presets:
        return SMOKE_MARK
    if presets == {"paper"} and devices and all(d.startswith("cuda") for d in devices):
        return "the paper's setting as csigen reads it (CSI's recipe, preset paper, on a GPU)" + suffix
    names = []
    for p in sorted(presets):
        if p == "paper":
            names.append("preset paper on a CPU")
        else:
            names.append(_SETTING_NAMES.get(p, f"preset {p}"))
    return f"{', '.join(names)}: not the paper's setting" + suffix


class MixedRecipesError(ValueError):
    """Runs of one preset with different recipes (e.g. a calibration run) were found together."""


def refuse_mixed_recipes(runs, where: str) -> None:
    """Raise :class:`MixedRecipesError` if runs of one dataset, variant and preset differ in recipe.

    ``runs``: :func:`csigen.results.collect`'s frame; its ``recipe`` column is "" for each preset's
    commonest recipe. The paper's tables and figures draw one recipe per preset, so runs of another
    reading or calibration (``--set train_blur_p=0.5``, ``gan_every=3``, ...) must sit in their own folder.
    """
    if "recipe" not in runs.columns:
        return
    other = runs[runs["recipe"].fillna("") != ""].drop_duplicates("run")
    if other.empty:
        return
    first = other.iloc[0]
    raise MixedRecipesError(
        f"{len(other)} run(s) under {where} depart from the recipe of the other {first['preset']!r} runs "
        f"(e.g. {first['run']}: {first['recipe']}): the tables and figures would average unlike runs. Move "
        "those runs into a folder of their own (a calibration or another reading) and point --runs at one "
        "recipe; `python -m csigen table --runs DIR` lists them side by side.")


def load_runs(runs_root: str | os.PathLike, *, allow_smoke: bool = False):
    """Every finished run under ``runs_root``: :func:`csigen.results.collect` (one row per run and score).

    Smoke-preset runs raise :class:`SmokeRunsError` unless ``allow_smoke``; runs of one preset with
    different recipes raise :class:`MixedRecipesError` (:func:`refuse_mixed_recipes`).
    """
    from csigen.results import collect

    root = Path(runs_root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs folder {str(root)!r} does not exist: pass --runs with the folder "
                                "your runs were written to (e.g. runs/)")
    runs = collect(root)
    if runs.empty:
        raise FileNotFoundError(f"no finished runs (result.json) under {str(root)!r}: train some first "
                                "(`python -m csigen sweep --out DIR ...`) or point --runs at them")
    smoke = sorted(set(runs.loc[runs["preset"] == "smoke", "run"]))
    if smoke and not allow_smoke:
        raise SmokeRunsError(
            f"{len(smoke)} smoke-preset run(s) under {str(root)!r} (e.g. {smoke[0]}): their numbers mean "
            "nothing and must not be mistaken for results. Move them out of the folder, or pass "
            "--allow-smoke (allow_smoke=True) to draw them marked 'meaningless, smoke'.")
    refuse_mixed_recipes(runs, repr(str(root)))
    return runs


def paper_score_rows(runs):
    """One row per run: its AUROC under the score behind the paper's number for its variant.

    ``runs`` is :func:`csigen.results.collect`'s frame (one row per run and
    score). For each run the row of :data:`csigen.results.PAPER_SCORE`
    ``[variant]`` is kept; a run that did not store that score (an old record
    with a single score) keeps its primary score instead, marked
    ``paper score = False``, so no run is silently dropped and unlike scores
    are never averaged together (the tables group by score).
    Adds the columns ``class`` (inlier name), ``paper score`` and ``series``
    (the variant, with the score in brackets when it is not the paper's).
    """
    import pandas as pd

    from csigen.results import PAPER_SCORE

    want = runs["variant"].map(PAPER_SCORE)
    is_paper = runs["score"] == want
    has_paper = is_paper.groupby(runs["run"]).transform("any")
    primary = runs["primary"].astype(bool) if "primary" in runs.columns else True
    chosen = runs[is_paper | (~has_paper & primary)].drop_duplicates("run").copy()
    chosen["paper score"] = chosen["score"] == chosen["variant"].map(PAPER_SCORE)
    chosen["class"] = [str(i) if pd.isna(n) else str(n)
                       for n, i in zip(chosen["inlier_name"], chosen["inlier"])]
    chosen["inlier"] = chosen["inlier"].astype(str)
    chosen["series"] = [v if p else f"{v} [{s}]" for v, s, p in
                        zip(chosen["variant"], chosen["score"], chosen["paper score"])]
    return chosen.reset_index(drop=True)


# ----------------------------------------------------------------------------
# bootstrap confidence intervals from the stored test scores
# ----------------------------------------------------------------------------
def weighted_auroc(scores, is_inlier, weights=None) -> np.ndarray | float:
    """AUROC with a weight per test image: P(score of an inlier > score of an outlier), ties count 1/2.

    Args:
        scores: ``(N,)`` scores, higher = more inlier-like (csigen's convention).
        is_inlier: ``(N,)`` bool, inliers are the positive class.
        weights: ``(N,)`` or ``(B, N)`` non-negative weights (a bootstrap
            resample is a vector of counts); None = all 1 (the plain AUROC).
    Returns:
        A float in [0, 1] for ``(N,)`` (or no) weights, else a ``(B,)`` array.
        Equals ``sklearn.metrics.roc_auc_score(is_inlier, scores, sample_weight=w)``;
        one sort serves every row of ``weights``.
    """
    s = np.asarray(scores, dtype=float).ravel()
    inl = np.asarray(is_inlier, dtype=bool).ravel()
    if s.shape != inl.shape:
        raise ValueError(f"scores and is_inlier differ in length: {s.shape[0]} vs {inl.shape[0]}")
    if inl.all() or not inl.any():
        raise ValueError("AUROC needs both inliers and outliers among the test images")
    single = weights is None or np.ndim(weights) == 1
    w = np.ones((1, s.shape[0])) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    if w.shape[1] != s.shape[0]:
        raise ValueError(f"weights have {w.shape[1]} columns for {s.shape[0]} scores")
    order = np.argsort(s, kind="stable")
    s, inl, w = s[order], inl[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # one group per distinct score (ties)
    w_in = np.add.reduceat(np.where(inl, w, 0.0), starts, axis=1)
    w_out = np.add.reduceat(np.where(inl, 0.0, w), starts, axis=1)
    below = np.cumsum(w_out, axis=1) - w_out  # outlier weight strictly below each group
    auc = (w_in * (below + 0.5 * w_out)).sum(axis=1) / (w_in.sum(axis=1) * w_out.sum(axis=1))
    return float(auc[0]) if single else auc


def bootstrap_auroc(scores, is_inlier, n: int = DEFAULT_BOOTSTRAP, rng: np.random.Generator | None = None,
                    chunk: int = 100) -> np.ndarray:
    """``n`` bootstrap replicates (percent) of one run's AUROC, resampling its test images.

    Inliers and outliers are resampled separately, with replacement, each to
    its own count (a stratified bootstrap: every replicate keeps the test
    set's inlier/outlier mix, as the fixed test split does). Returns ``(n,)``.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    inl = np.asarray(is_inlier, dtype=bool).ravel()
    out = []
    for start in range(0, int(n), chunk):
        b = min(chunk, int(n) - start)
        out.append(100.0 * weighted_auroc(scores, inl, _stratified_weights(inl, b, rng)))
    return np.concatenate(out)


def load_test_scores(run_dir: str | os.PathLike, score: str, primary: str | None = None):
    """``(scores, is_inlier)`` of one run under ``score`` from its ``scores.npz``, or None if not stored.

    Reads ``score_<name>``; records older than per-score arrays store only the
    primary score, as ``scores`` (used when ``score == primary``).
    """
    path = Path(run_dir) / "scores.npz"
    if not path.exists():
        return None
    with np.load(path) as z:
        key = f"score_{score}" if f"score_{score}" in z.files else (
            "scores" if score == primary and "scores" in z.files else None)
        if key is None or "is_inlier" not in z.files:
            return None
        return z[key].astype(float), z["is_inlier"].astype(bool)


class Bootstrap:
    """Bootstrap replicates of each run's AUROC, computed once per (run, score) and cached.

    Each run gets its own random stream, seeded by ``(seed, crc32(run folder
    name))``: a run's replicates do not depend on which other runs are in the
    table, and the same ``seed`` gives the same intervals.
    """

    def __init__(self, n: int = DEFAULT_BOOTSTRAP, seed: int = 0, confidence: float = CONFIDENCE):
        if int(n) < 1:
            raise ValueError(f"the number of bootstrap resamples must be >= 1, got {n}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        self.n, self.seed, self.confidence = int(n), int(seed), float(confidence)
        self._cache: dict[tuple[str, str], np.ndarray | None] = {}
        self._primary: dict[str, str | None] = {}

    def _primary_score(self, run: str) -> str | None:
        if run not in self._primary:
            path = Path(run) / "result.json"
            self._primary[run] = json.loads(path.read_text()).get("score") if path.exists() else None
        return self._primary[run]

    def replicates(self, run: str, score: str) -> np.ndarray | None:
        """``(n,)`` replicates (percent) of ``run``'s AUROC under ``score``; None if not stored."""
        key = (str(run), str(score))
        if key not in self._cache:
            stored = load_test_scores(run, score, self._primary_score(str(run)))
            if stored is None:
                self._cache[key] = None
            else:
                rng = np.random.default_rng([self.seed, zlib.crc32(Path(run).name.encode())])
                self._cache[key] = bootstrap_auroc(*stored, n=self.n, rng=rng)
        return self._cache[key]


def _aggregate(keys, values: np.ndarray):
    """The cell statistic of :func:`csigen.results.compare_with_paper`, column by column.

    ``keys``: one (seed, inlier) per row; ``values``: ``(rows, k)``. A task
    found twice counts once (mean); if every seed covers the same classes, the
    mean over seeds of the per-seed class means (and the per-seed means, for
    the std), else the mean over classes of the per-class means (and None).
    """
    import pandas as pd

    frame = pd.DataFrame(np.asarray(values, dtype=float))
    frame.index = pd.MultiIndex.from_arrays([list(keys["seed"]), [str(i) for i in keys["inlier"]]],
                                            names=["seed", "inlier"])
    task = frame.groupby(level=["seed", "inlier"]).mean()
    class_sets = {frozenset(t.index.get_level_values("inlier")) for _, t in task.groupby(level="seed")}
    if len(class_sets) == 1:
        per_seed = task.groupby(level="seed").mean()
        return per_seed.mean().to_numpy(), per_seed
    return task.groupby(level="inlier").mean().mean().to_numpy(), None


def cell_statistics(rows, boot: Bootstrap) -> dict[str, Any]:
    """Mean, std over seeds (population, as compare_with_paper), bootstrap CI, counts of one table cell.

    ``rows``: the runs of the cell (:func:`paper_score_rows` rows of one
    dataset, variant, score and preset). The interval applies the cell's own
    statistic to each bootstrap replicate (every run's test images resampled,
    then averaged over classes and seeds as the mean is); it measures how much
    the number depends on the particular test images, not on the seed. NaN
    when a run has no stored test scores.
    """
    mean, per_seed = _aggregate(rows, rows["auroc"].to_numpy()[:, None])
    std = (float(per_seed[0].std(ddof=0)) if len(per_seed) > 1 else 0.0) if per_seed is not None else np.nan
    reps = [boot.replicates(run, score) for run, score in zip(rows["run"], rows["score"])]
    if any(r is None for r in reps):
        low = high = np.nan
    else:
        cell = _aggregate(rows, np.stack(reps))[0]
        alpha = 100.0 * (1.0 - boot.confidence) / 2.0
        low, high = (float(v) for v in np.percentile(cell, [alpha, 100.0 - alpha]))
    return {"classes": rows["inlier"].nunique(), "seeds": rows["seed"].nunique(), "runs": len(rows),
            "ours (measured)": float(mean[0]), "ours (std)": std, "ci low": low, "ci high": high}


def _seed_means(rows) -> list[tuple[int | None, float]]:
    """``(seed, class mean)`` per seed of a cell whose seeds cover the same classes.

    If the seeds cover different classes their means are not alike (a seed
    run on two classes only): then one ``(None, cell mean)``, the table's value.
    """
    mean, per_seed = _aggregate(rows, rows["auroc"].to_numpy()[:, None])
    if per_seed is None:
        return [(None, float(mean[0]))]
    return [(int(s), float(v)) for s, v in zip(per_seed.index, per_seed[0])]


# ----------------------------------------------------------------------------
# Table 1, per-class table, ablation
# ----------------------------------------------------------------------------
def table1(chosen, boot: Bootstrap):
    """Table 1 from :func:`paper_score_rows`: ``(table, per_class)`` DataFrames.

    ``table``: :func:`csigen.results.compare_with_paper`'s columns plus
    ``runs``, ``ci low`` / ``ci high`` (bootstrap, ``boot.confidence``),
    ``difference`` (ours - paper) and ``setting``. ``per_class``: one row per
    dataset, preset, inlier class, variant and score with the same statistics,
    ``CSI (paper)`` (CSI's published per-class AUROC, CIFAR-10) and
    ``difference`` (our ``csi`` - CSI's).
    """
    import pandas as pd

    from csigen.results import CSI_PAPER_PER_CLASS, compare_with_paper

    base = compare_with_paper(chosen)
    rows = []
    for _, r in base.iterrows():
        cell = chosen[(chosen["dataset"] == r["dataset"]) & (chosen["variant"] == r["variant"])
                      & (chosen["score"] == r["score"]) & (chosen["preset"] == r["preset"])]
        stats = cell_statistics(cell, boot)
        rows.append({**r.to_dict(), "runs": stats["runs"], "ci low": stats["ci low"],
                     "ci high": stats["ci high"], "difference": r["ours (measured)"] - r["paper"],
                     "setting": setting_label(cell["preset"], cell["device"], cell.get("data", ()))})
    columns = ["dataset", "variant", "score", "paper score", "preset", "classes", "seeds", "runs", "coverage",
               "complete", "ours (measured)", "ours (std)", "ci low", "ci high", "paper", "difference",
               "setting"]
    table = pd.DataFrame(rows, columns=columns)

    per_class = []
    for (dataset, preset, cls, variant, score), cell in chosen.groupby(
            ["dataset", "preset", "class", "variant", "score"], sort=False):
        stats = cell_statistics(cell, boot)
        csi_paper = CSI_PAPER_PER_CLASS.get(cls) if dataset == "cifar10" else None
        per_class.append({"dataset": dataset, "preset": preset, "class": cls, "variant": variant,
                          "score": score, "paper score": bool(cell["paper score"].iloc[0]), **stats,
                          "CSI (paper)": np.nan if csi_paper is None else csi_paper,
                          "difference": (stats["ours (measured)"] - csi_paper
                                         if csi_paper is not None and variant == "csi" else np.nan)})
    per_class = pd.DataFrame(per_class)
    if not per_class.empty:
        per_class = _sorted(per_class, ["dataset", "preset", "class", "variant", "score"])
    return table, per_class


def coverage_notes(table, chosen) -> dict[tuple[str, str], str]:
    """``{(dataset, series): "k of n classes"}`` for the cells of :func:`table1` that miss classes.

    ``series`` is the variant's label in the figures (``chosen["series"]``,
    :func:`paper_score_rows`). A mean over 2 of 10 classes drawn beside one
    over 10 of 10 looks comparable and is not: Table 1's figure writes the
    coverage after such a mean.
    """
    series = {(d, v, s, p): name for d, v, s, p, name in
              zip(chosen["dataset"], chosen["variant"], chosen["score"], chosen["preset"], chosen["series"])}
    return {(r["dataset"], series[(r["dataset"], r["variant"], r["score"], r["preset"])]): r["coverage"]
            for _, r in table.iterrows() if not r["complete"]}


def _class_order(dataset: str, classes) -> list[str]:
    """Classes in the dataset's own order where known (CIFAR-10: airplane ... truck), else as found."""
    from csigen.data import class_names

    classes = list(dict.fromkeys(classes))
    try:
        known = [c for c in class_names(dataset) if c in classes]
    except (ValueError, OSError, RuntimeError):  # a dataset whose names need its files (imagefolder)
        known = []
    return known + sorted(c for c in classes if c not in known)


def _sorted(frame, by):
    from csigen.config import VARIANTS

    order = {"variant": list(VARIANTS)}
    class_rank = {}
    for dataset, g in frame.groupby("dataset"):
        class_rank[dataset] = {c: i for i, c in enumerate(_class_order(dataset, g["class"]) + ["mean"])}
    frame = frame.assign(
        _class=[class_rank[d].get(c, 10**6) for d, c in zip(frame["dataset"], frame["class"])],
        _variant=[order["variant"].index(v) if v in VARIANTS else 99 for v in frame["variant"]])
    keys = [{"class": "_class", "variant": "_variant"}.get(k, k) for k in by]
    return frame.sort_values(keys, kind="stable").drop(columns=["_class", "_variant"]).reset_index(drop=True)


def ablation(chosen, boot: Bootstrap):
    """The ablation (CSI -> +G -> full) from :func:`paper_score_rows`: a row per class and variant, and means.

    Per dataset and preset: a row per inlier class and variant (mean over
    seeds, std, CI, seeds), then a ``class == "mean"`` row per variant, the
    mean over the classes that *every* variant present has (so the three
    means are over the same tasks; ``classes`` says how many), with the
    paper's number (:func:`csigen.results.paper_number`: 94.3 / 94.8 / 95.1 on
    CIFAR-10) and the difference.
    """
    import pandas as pd

    from csigen.results import paper_number

    rows = []
    for (dataset, preset), group in chosen.groupby(["dataset", "preset"], sort=False):
        common = set.intersection(*(set(g["class"]) for _, g in group.groupby("series")))
        for (cls, variant, score), cell in group.groupby(["class", "variant", "score"], sort=False):
            rows.append({"dataset": dataset, "preset": preset, "class": cls, "variant": variant,
                         "score": score, "paper score": bool(cell["paper score"].iloc[0]),
                         **cell_statistics(cell, boot), "paper": np.nan, "difference": np.nan})
        in_common = group[group["class"].isin(common)]
        for (variant, score), cell in in_common.groupby(["variant", "score"], sort=False):
            stats = cell_statistics(cell, boot)
            paper = paper_number(dataset, variant) if bool(cell["paper score"].iloc[0]) else None
            rows.append({"dataset": dataset, "preset": preset, "class": "mean", "variant": variant,
                         "score": score, "paper score": bool(cell["paper score"].iloc[0]), **stats,
                         "paper": np.nan if paper is None else paper,
                         "difference": np.nan if paper is None else stats["ours (measured)"] - paper})
    frame = pd.DataFrame(rows)
    return _sorted(frame, ["dataset", "preset", "class", "variant", "score"]) if not frame.empty else frame


# ----------------------------------------------------------------------------
# FID records
# ----------------------------------------------------------------------------
def fid_records(runs_root: str | os.PathLike, *, allow_smoke: bool = False):
    """Every ``fid.json`` under ``runs_root``: ``(shown, excluded)``.

    ``shown`` is a DataFrame of the records that are FIDs: computed with the
    real Inception weights (``real_inception`` true, not ``not_a_fid``, and a
    ``weights_sha256`` that :func:`csigen.fid.is_real_inception` accepts), of
    a ``csi+g`` or ``full`` run, and not of a smoke run (unless ``allow_smoke``).
    ``excluded`` lists ``(fid.json path, reason)`` for the others; their
    values are never shown as FIDs.
    """
    import pandas as pd

    from csigen.fid import is_real_inception

    shown, excluded = [], []
    for path in sorted(Path(runs_root).rglob("fid.json")):
        try:
            rec = json.loads(path.read_text())
            info = run_info(path.parent)
        except (OSError, ValueError, KeyError) as exc:
            excluded.append((str(path), f"unreadable record or no finished run beside it ({exc})"))
            continue
        if (rec.get("real_inception") is not True or rec.get("not_a_fid", False)
                or not is_real_inception(str(rec.get("weights_sha256", "")))):
            excluded.append((str(path), ("not computed with the real Inception weights (real_inception "
                                         "false or another weights file): not a FID")))
        elif info.variant not in ("csi+g", "full"):
            excluded.append((str(path), f"variant {info.variant} has no generator"))
        elif info.preset == "smoke" and not allow_smoke:
            excluded.append((str(path), "a smoke-preset run (pass --allow-smoke to show it marked)"))
        else:
            shown.append({"run": info.run, "dataset": info.dataset, "class": info.inlier_name,
                          "variant": info.variant, "preset": info.preset, "seed": info.seed,
                          "device": info.device, "fid": float(rec["fid"]), "samples": rec.get("samples"),
                          "reference": rec.get("reference_description") or rec.get("reference"),
                          "protocol": rec.get("protocol"),
                          "step": rec.get("step"), "weights_sha256": rec.get("weights_sha256")})
    columns = ["run", "dataset", "class", "variant", "preset", "seed", "device", "fid", "samples",
               "reference", "protocol", "step", "weights_sha256"]
    frame = pd.DataFrame(shown, columns=columns)
    if not frame.empty:
        frame = _sorted(frame, ["dataset", "preset", "class", "variant", "seed"])
    return frame, excluded


# ----------------------------------------------------------------------------
# Figure 2
# ----------------------------------------------------------------------------
def choose_figure2_run(chosen) -> str | None:
    """The run Figure 2 is drawn from by default: a ``full`` run on CIFAR-10 cat with its weights, or None.

    Among several: the paper's setting first, then the most training steps,
    then the lowest seed.
    """
    cand = chosen[(chosen["variant"] == "full") & (chosen["dataset"] == FIGURE2_DATASET)
                  & (chosen["class"] == FIGURE2_CLASS)]
    from csigen.disk import has_run_weights

    infos = [run_info(r) for r in dict.fromkeys(cand["run"]) if has_run_weights(r)]
    if not infos:
        return None
    infos.sort(key=lambda i: (not i.paper_setting, -(i.steps or 0), i.seed))
    return infos[0].run


def figure2_images(run_dir: str | os.PathLike, *, n: int = 8, seed: int = 0,
                   device: str = "cpu") -> dict[str, Any]:
    """Real test images of a ``full`` run and their reconstructions G(E(x)), for Figure 2.

    ``n`` inliers drawn at random (``seed``) from the test set, and one
    outlier from each of up to ``n`` outlier classes. The run is loaded with
    :meth:`csigen.train.Trainer.from_run` (its own data). The reconstructions
    are :func:`csigen.fid.reconstruct`'s: E in eval mode, G in the FID
    protocol's mode (:func:`csigen.fid.generator_for_evaluation`: eval mode
    with BatchNorm statistics re-estimated on prior samples), so Figure 2 and
    the FIDs see the same G.
    Returns a dict with ``inliers``, ``inlier_recon``, ``outliers``,
    ``outlier_recon`` (float ``(n, 3, H, W)`` in [0, 1]), ``inlier_name``,
    ``outlier_names``, ``g_mode``.
    """
    import torch

    from csigen import fid
    from csigen.train import Trainer

    if int(n) < 1:
        raise ValueError(f"figure 2 needs at least one image per row, got n={n}")
    trainer = Trainer.from_run(run_dir, device=device)
    G, E = trainer.nets.G, trainer.nets.E
    if G is None or E is None:
        raise ValueError(f"figure 2 needs a 'full' run (G and E); {str(run_dir)!r} is variant "
                         f"{trainer.config.variant!r}: pass --figure2-run with a full run")
    task = trainer.task
    rng = np.random.default_rng(seed)
    is_inlier = task.test_is_inlier.cpu().numpy().astype(bool)
    labels = task.test_labels.cpu().numpy()
    inl = np.flatnonzero(is_inlier)
    inl = np.sort(rng.choice(inl, size=min(int(n), inl.size), replace=False))
    classes = sorted(set(labels[~is_inlier].tolist()))
    if len(classes) > n:
        classes = sorted(rng.choice(classes, size=int(n), replace=False).tolist())
    out = np.array([rng.choice(np.flatnonzero(labels == c)) for c in classes], dtype=int)
    G_eval = fid.generator_for_evaluation(G)  # once for both rows: re-estimating G's statistics takes seconds

    def real_and_recon(idx):
        x = task.test_images[torch.as_tensor(idx)].cpu()
        return x.float() / 255.0, fid.reconstruct(G_eval, E, x, **G_eval.fid_mode).clamp(0, 1)

    inliers, inlier_recon = real_and_recon(inl)
    outliers, outlier_recon = real_and_recon(out)
    mode = G_eval.fid_mode
    if mode["bn_mode"] == "prior":
        how = (f"eval mode with BatchNorm statistics re-estimated on {mode['bn_samples']} prior samples "
               f"h ~ N(0, I) in batches of {mode['bn_batch_size']}")
    else:
        how = f"bn_mode {mode['bn_mode']}"
    g_mode = f"G in the FID protocol's mode (csigen.fid.generator_for_evaluation, as for the FIDs: {how}), " \
             "E in eval mode"
    return {"inliers": inliers, "inlier_recon": inlier_recon, "outliers": outliers,
            "outlier_recon": outlier_recon, "inlier_name": task.inlier_name,
            "outlier_names": [task.class_names[c] for c in classes], "g_mode": g_mode}


# ----------------------------------------------------------------------------
# formatting
# ----------------------------------------------------------------------------
def _num(v, fmt="{:.1f}", signed=False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return ("{:+.1f}" if signed else fmt).format(v)


def _markdown(frame) -> str:
    """A DataFrame as a GitHub markdown table (strings as given)."""
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def _ci(low, high) -> str:
    return "–" if not np.isfinite(low) else f"[{low:.1f}, {high:.1f}]"


def _std_text(std, seeds) -> str:
    """The std over seeds, "–" for a single seed (where it says nothing) or seeds of unlike class sets."""
    return _num(std) if int(seeds) > 1 else "–"


def _cell_text(r) -> str:
    return (f"{r['ours (measured)']:.1f} ± {_std_text(r['ours (std)'], r['seeds'])} "
            f"{_ci(r['ci low'], r['ci high'])} ({r['seeds']})")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _with_mark(text: str, label: str) -> str:
    """``text``, led by the smoke mark when ``label`` is smoke's."""
    return f"**{SMOKE_MARK}.** {text}" if label == SMOKE_MARK else text


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else ('es' if word.endswith('s') else 's')}"


def _duration(seconds: float | None) -> str:
    if not seconds:
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _resolve_run(root: Path, run: str | os.PathLike) -> Path:
    """A run given as a path, or as a folder name under ``root``."""
    path = Path(run)
    if not (path / "result.json").exists() and (root / path / "result.json").exists():
        path = root / path
    return path


def _provenance(rows, infos: dict[str, RunInfo]) -> str:
    """One line: presets, scores, classes x seeds, devices, dates, commits, paper's setting or not."""
    runs = [infos[r] for r in dict.fromkeys(rows["run"])]
    presets = sorted({i.preset for i in runs})
    devices = sorted({i.device for i in runs})
    machines = sorted({i.machine for i in runs})
    dates = sorted({i.date for i in runs})
    commits = sorted({(i.commit or "unknown")[:10] for i in runs})
    parts = [f"preset {', '.join(presets)}"]
    if "score" in rows.columns:
        from csigen.config import VARIANTS

        by_variant = sorted(rows.groupby("variant"),
                            key=lambda vg: VARIANTS.index(vg[0]) if vg[0] in VARIANTS else len(VARIANTS))
        parts.append("score " + "; ".join(f"{v}: {', '.join(sorted(set(g['score'])))}"
                                          for v, g in by_variant))
    parts.append(f"{_plural(rows['class'].nunique(), 'class')} x {_plural(rows['seed'].nunique(), 'seed')} "
                 f"({_plural(len(runs), 'run')})")
    parts.append(f"device {', '.join(machines)}")
    parts.append(f"run dates {dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else ""))
    parts.append(f"csigen commit {', '.join(commits)}")
    match = all(i.paper_setting for i in runs)
    parts.append("the paper's setting: " + ("yes (CSI's recipe, preset paper, on a GPU)" if match else
                                            f"no ({setting_label(presets, devices)})"))
    return "; ".join(parts) + "."


# ----------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------
class _Writer:
    """Writes files atomically into ``out`` and collects their captions for the README."""

    def __init__(self, out: Path):
        self.out = out
        self.written: dict[str, Path] = {}
        self.captions: dict[str, str] = {}

    def write(self, name: str, data: bytes | str) -> None:
        from csigen.checkpoint import atomic_write_bytes, atomic_write_text

        path = self.out / name
        (atomic_write_text if isinstance(data, str) else atomic_write_bytes)(path, data)
        self.written[name] = path

    def figure(self, name: str, fig) -> None:
        self.write(name, _png(fig))


def _score_text(score: str | None) -> str:
    """How captions name the score of the tables: the paper's per variant, or one score for every variant."""
    if score is None:
        return ("the one behind the paper's number (CSI's score for `csi`, Eq. 11 `shared` for `csi+g` and "
                "`full`); † marks runs that stored only another score")
    return (f"`{score}` for every variant, a like-for-like comparison (the paper's numbers use CSI's score for "
            "`csi` and Eq. 11 `shared` for `csi+g` and `full`: † marks cells under another score than the "
            "paper's)")


def _table1_markdown(table, per_class, boot: Bootstrap, label: str, score: str | None = None) -> str:
    import pandas as pd

    level = f"{round(100 * boot.confidence)}%"
    intro = (f"Setting: {label}. Each cell: the mean over inlier classes of one-class AUROC, averaged over "
             f"seeds; std over seeds (population; – for one seed); {level} bootstrap interval over the test "
             f"images ({boot.n} resamples per run, seed {boot.seed}). Scores: {_score_text(score)}. A mean "
             "over fewer classes than the dataset has is not comparable with the paper's.\n")
    md = [f"# {_with_mark('Table 1: one-class AUROC (%), ours beside the paper', label)}\n", intro]
    shown = pd.DataFrame({
        "dataset": table["dataset"], "variant": table["variant"],
        "score": [s + ("" if p else " †") for s, p in zip(table["score"], table["paper score"])],
        "preset": table["preset"], "classes": table["coverage"], "seeds": table["seeds"],
        "runs": table["runs"], "ours": [_num(v) for v in table["ours (measured)"]],
        "std": [_std_text(v, n) for v, n in zip(table["ours (std)"], table["seeds"])],
        f"{level} CI": [_ci(lo, hi) for lo, hi in zip(table["ci low"], table["ci high"])],
        "paper": [_num(v) for v in table["paper"]],
        "ours − paper": [_num(v, signed=True) for v in table["difference"]],
        "setting": table["setting"]})
    md += ["## Mean over classes\n", _markdown(shown)]
    for (dataset, preset), g in per_class.groupby(["dataset", "preset"], sort=False):
        g = g.assign(column=[v if p else f"{v} [{s}] †"
                             for v, s, p in zip(g["variant"], g["score"], g["paper score"])])
        wide = {"class": list(dict.fromkeys(g["class"]))}
        for col in dict.fromkeys(g["column"]):
            cells = {r["class"]: _cell_text(r) for _, r in g[g["column"] == col].iterrows()}
            wide[col] = [cells.get(c, "–") for c in wide["class"]]
        note = ""
        if dataset == "cifar10":
            csi = g.drop_duplicates("class").set_index("class")["CSI (paper)"]
            diff = g[g["variant"] == "csi"].groupby("class")["difference"].first()
            wide["CSI (paper)"] = [_num(csi.get(c)) for c in wide["class"]]
            wide["csi − CSI (paper)"] = [_num(diff.get(c, np.nan), signed=True) for c in wide["class"]]
            note = " CSI (paper): CSI's published one-class AUROC (Tack et al., ResNet-18)."
        md += [f"## Per inlier class: {dataset}, preset {preset}\n",
               f"Cells: mean ± std over seeds [{level} bootstrap interval] (seeds).{note}\n",
               _markdown(pd.DataFrame(wide))]
    return "\n".join(md)


def _write_table1(w: _Writer, chosen, infos, boot: Bootstrap, score: str | None = None) -> None:
    import pandas as pd

    from csigen import plotting
    from csigen.results import paper_number

    table, per_class = table1(chosen, boot)
    label = setting_label(chosen["preset"], chosen["device"], chosen.get("data", ()))
    w.write("table1.md", _table1_markdown(table, per_class, boot, label, score))
    w.write("table1.csv", table.to_csv(index=False))
    w.write("table1_per_class.csv", per_class.to_csv(index=False))
    seed_means = pd.DataFrame([
        {"dataset": d, "variant": series, "seed": seed, "auroc": v}
        for (d, series, _, _), cell in chosen.groupby(["dataset", "series", "score", "preset"], sort=False)
        for seed, v in _seed_means(cell)])
    paper = {(d, v): paper_number(d, v) for d, v in zip(chosen["dataset"], chosen["variant"])}
    single = chosen["dataset"].nunique() == 1 and chosen["preset"].nunique() == 1
    runs = chosen.assign(variant=chosen["series"]) if single else None
    csi_marks = {(c, "csi"): v for c, v in zip(per_class["class"], per_class["CSI (paper)"])
                 if np.isfinite(v)}
    with plotting.style():
        w.figure("table1.png", plotting.table1_figure(
            seed_means, runs, paper=paper, per_class_paper=csi_marks, notes=coverage_notes(table, chosen),
            title=f"Table 1: one-class AUROC (%), ours (mean ± std over seeds) vs paper (black) — {label}"))
    level = f"{round(100 * boot.confidence)}%"
    w.captions["table1.md, table1.csv, table1_per_class.csv, table1.png"] = _with_mark(
        "Table 1 of the paper regenerated: mean one-class AUROC (%) per dataset and variant under "
        + ("the paper's score" if score is None else f"score `{score}` for every variant")
        + f", std over seeds, {level} bootstrap interval over the test images, classes and seeds "
        "per cell, the paper's numbers and ours − paper; per inlier class with CSI's published per-class "
        "numbers (CIFAR-10). The figure shows each seed (dots), the mean ± std over seeds, and the paper's "
        "numbers as black bars; where the seeds cover different classes a mean is one point, the table's "
        "mean over classes of the per-class means. A mean over fewer classes than the dataset has is "
        "labelled with its coverage (e.g. \"2 of 10 classes\") and is not comparable with the paper's."
        + ("" if single else " The per-class panel is drawn only for a single dataset and preset; see "
                             "table1.md for every per-class table."), label) + (
        "\n\nProvenance: " + _provenance(chosen, infos))


def _write_ablation(w: _Writer, chosen, infos, boot: Bootstrap) -> None:
    import pandas as pd

    from csigen import plotting
    from csigen.results import DATASET_CLASSES, coverage_text, paper_number

    w.write("ablation.csv", ablation(chosen, boot).to_csv(index=False))
    groups = list(chosen.groupby(["dataset", "preset"], sort=False))
    (dataset, preset), group = groups[0]
    label = setting_label(group["preset"], group["device"], group.get("data", ()))
    common = set.intersection(*(set(g["class"]) for _, g in group.groupby("series")))
    means = pd.DataFrame([{"class": "mean", "variant": series, "seed": seed, "auroc": v}
                          for series, cell in group[group["class"].isin(common)].groupby("series", sort=False)
                          for seed, v in _seed_means(cell)])
    runs = group[["class", "series", "seed", "auroc"]].rename(columns={"series": "variant"})
    frame = pd.concat([runs, means], ignore_index=True)
    order = {c: i for i, c in enumerate(_class_order(dataset, group["class"]) + ["mean"])}
    frame = frame.iloc[np.argsort([order[c] for c in frame["class"]], kind="stable")]
    paper = {("mean", v): paper_number(dataset, v) for v in group["series"]}
    total = DATASET_CLASSES.get(dataset, group["class"].nunique())
    mean_label = f"mean\n({coverage_text(len(common), total)})" if len(common) < total else None  # not the paper's
    with plotting.style():
        w.figure("ablation.png", plotting.ablation_figure(
            frame, paper=paper, mean_label=mean_label,
            title=f"Ablation on {dataset}: CSI → +G → full, AUROC (%) — {label}"))
    more = ("" if len(groups) == 1 else
            f" The figure shows {dataset} (preset {preset}) only; ablation.csv has every dataset and preset.")
    mean_text = (f"their mean over the {_plural(len(common), 'class')} every variant has, with the paper's "
                 "94.3 / 94.8 / 95.1 (CIFAR-10) as black bars" if common else
                 "no mean yet: no inlier class has every variant (the mean, with the paper's 94.3 / 94.8 / "
                 "95.1 as black bars, is drawn over the classes that have them all)")
    w.captions["ablation.csv, ablation.png"] = _with_mark(
        f"Ablation (paper Sec. 3.2): csi, csi+g and full per inlier class and {mean_text}; dots are seeds, "
        "error bars ± 1 std over seeds (a mean over seeds that "
        f"cover different classes is one point); ablation.csv adds the {round(100 * boot.confidence)}% "
        f"bootstrap intervals.{more}", label) + "\n\nProvenance: " + _provenance(group, infos)


def _write_fid(w: _Writer, root: Path, allow_smoke: bool) -> None:
    from csigen import plotting
    from csigen.results import PAPER_FID

    fids, excluded = fid_records(root, allow_smoke=allow_smoke)
    excluded_text = "".join(f"\n- excluded: `{p}`: {why}" for p, why in excluded)
    if fids.empty:
        w.captions["fid.csv, fid.png (not written)"] = (
            "No FID computed with the real Inception weights was found (`python -m csigen fid --run DIR` "
            "with the real weights writes one); values computed with other weights are not FIDs and are not "
            "drawn." + excluded_text)
        return
    w.write("fid.csv", fids.to_csv(index=False))
    groups = fids.groupby(["dataset", "preset", "reference", "samples", "protocol"], dropna=False, sort=False)
    (dataset, preset, reference, samples, protocol), g = next(iter(groups))
    label = setting_label(g["preset"], g["device"], g.get("data", ()))
    with plotting.style():
        w.figure("fid.png", plotting.fid_figure(
            g, paper=PAPER_FID if dataset == "cifar10" else None,
            title=f"FID of G on {dataset} ({samples} samples vs {reference}) — {label}"))
    more = "" if groups.ngroups == 1 else " fid.csv has the others (not comparable with these)."
    w.captions["fid.csv, fid.png"] = _with_mark(
        "FID of the generators of csi+g and full (lower is better), from fid.json records computed with the "
        f"real Inception weights only. The figure shows {dataset}, preset {preset}, {samples} samples "
        f"against {reference} (protocol {protocol}), with the paper's 69.5 / 54.1 as dashed lines "
        "(CIFAR-10; the paper does not state its reference or sample count); FIDs with other references "
        f"or sample counts are not comparable.{more}", label) + "\n\nProvenance: " + _provenance(
        g, {r: run_info(r) for r in g["run"]}) + excluded_text


#: Appended to a kept Figure 2's caption (:func:`_kept_figure2`).
FIGURE2_KEPT_NOTE = ("(figure2.png kept from an earlier regeneration: its run's weights are not here, e.g. in a clone, "
                     "where weights are not committed; regenerations without them leave it as it was.)")


def _kept_figure2(out: Path, run2) -> str | None:
    """The caption of ``out/figure2.png`` when it was drawn from ``run2`` (same folder name and csigen commit), else None.

    Lets ``figures`` regenerate the tables where Figure 2's run has no weights (a
    clone of a repository that commits records, not weights) without dropping the
    committed figure2.png: the file and its caption stay, marked by :data:`FIGURE2_KEPT_NOTE`.
    """
    import re

    png, readme = out / "figure2.png", out / "README.md"
    if run2 is None or not png.exists() or not readme.exists():
        return None
    section = re.search(r"^## figure2\.png\n(.*?)(?=^## |\Z)", readme.read_text(), re.S | re.M)
    source = section and re.search(r"regenerated from `([^`]+)`", section.group(1))
    if not source or Path(source.group(1)).name != Path(run2).name:
        return None
    commit = (run_info(run2).commit or "unknown")[:10]  # the same folder retrained by another csigen is another run
    if f"csigen commit {commit}" not in section.group(1):
        return None
    caption = section.group(1).strip()
    return caption if FIGURE2_KEPT_NOTE in caption else caption + "\n" + FIGURE2_KEPT_NOTE


def _write_figure2(w: _Writer, run2, images, problem: str | None, root: Path, seed: int,
                   layout: str = "pairs") -> None:
    import pandas as pd

    from csigen import plotting

    if images is None:
        w.captions["figure2.png (not written)"] = (
            (problem or f"No `full` run on {FIGURE2_DATASET} {FIGURE2_CLASS} with its weights under {root}")
            + ": train one, or pass --figure2-run with any full run.")
        return
    info = run_info(run2)
    label = setting_label([info.preset], [info.device])
    budget = f"{info.steps} training steps" + (
        f", {_duration(info.train_seconds)} of training on {info.machine}" if info.train_seconds else "")
    name = images["inlier_name"]
    with plotting.style():
        w.figure("figure2.png", plotting.figure2_figure(
            images["inliers"], images["inlier_recon"], images["outliers"], images["outlier_recon"],
            inlier_name=name, outlier_names=images["outlier_names"], layout=layout,
            title=f"Figure 2: {info.dataset}, inlier {name}, full model ({budget}) — {label}"))
    row = pd.DataFrame([{"run": info.run, "class": info.inlier_name, "seed": info.seed,
                         "variant": info.variant}])
    where = ("beside them, as the paper draws them (layout 'paper')" if layout == "paper"
             else "each above its real image's column (layout 'pairs'; the paper puts them side by side)")
    w.captions["figure2.png"] = _with_mark(
        f"Figure 2 of the paper regenerated from `{info.run}`: (a) real test inliers ({name}) and their "
        "reconstructions G(E(x)), (b) one real test outlier per other class and its reconstruction; the "
        f"reconstructions {where}. Test images drawn with seed {seed}. Budget: {budget}. "
        f"{images['g_mode']}.", label) + (
        "\n\nProvenance: " + _provenance(row, {info.run: info}))


def write_figures(runs_root: str | os.PathLike, out_dir: str | os.PathLike = "figures", *,
                  figure2_run: str | os.PathLike | None = None, seed: int = 0,
                  n_bootstrap: int = DEFAULT_BOOTSTRAP, confidence: float = CONFIDENCE,
                  allow_smoke: bool = False, figure2_images_per_row: int = 8,
                  device: str = "cpu", score: str | None = None,
                  figure2_layout: str = "pairs") -> dict[str, Path]:
    """Write every table and figure the runs under ``runs_root`` allow into ``out_dir``.

    Args:
        runs_root: folder searched (recursively) for finished runs.
        out_dir: output folder (created); files of :data:`OUTPUT_FILES` that
            this call does not write are removed from it.
        figure2_run: the ``full`` run of Figure 2 (a path, or a folder name
            under ``runs_root``); default :func:`choose_figure2_run`.
        seed: seed of the bootstrap and of Figure 2's choice of test images.
        n_bootstrap, confidence: bootstrap resamples per run and the interval's level.
        allow_smoke: draw smoke-preset runs (marked "meaningless, smoke")
            instead of refusing them with :class:`SmokeRunsError`.
        figure2_images_per_row: images per row of Figure 2.
        device: where Figure 2's networks run.
        score: None (default): each variant under the score behind the paper's number
            (:func:`paper_score_rows`); a score's name (e.g. ``"csi"``, ``"shared"``): that score for
            every variant (:func:`score_rows`), e.g. for CPU-scale runs, whose preset reports CSI's score.
        figure2_layout: ``"pairs"`` (each real image above its reconstruction) or ``"paper"`` (the
            real images' grid beside their reconstructions', as the paper draws it):
            :func:`csigen.plotting.figure2_figure`.
    Returns:
        ``{file name: path}`` of every file written, ``README.md`` last.
    """
    from csigen.checkpoint import CheckpointError
    from csigen.plotting import FIGURE2_LAYOUTS
    from csigen.train import git_commit

    if figure2_layout not in FIGURE2_LAYOUTS:
        raise ValueError(f"unknown Figure 2 layout {figure2_layout!r}; choose one of {FIGURE2_LAYOUTS}")
    root, out = Path(runs_root), Path(out_dir)
    runs = load_runs(root, allow_smoke=allow_smoke)
    chosen = score_rows(runs, score)
    boot = Bootstrap(n_bootstrap, seed, confidence)
    # Figure 2 needs a checkpoint and the run's data: it is checked and computed first, so that a bad
    # --figure2-run writes nothing. A run chosen by default that cannot be loaded is reported instead.
    run2 = _resolve_run(root, figure2_run) if figure2_run is not None else choose_figure2_run(chosen)
    if figure2_run is not None:
        info2 = run_info(run2)
        if info2.preset == "smoke" and not allow_smoke:
            raise SmokeRunsError(f"--figure2-run {str(figure2_run)!r} is a smoke-preset run: its "
                                 "reconstructions mean nothing. Pass a real run, or --allow-smoke to draw it "
                                 "marked 'meaningless, smoke'.")
        if info2.variant != "full":
            raise ValueError(f"figure 2 needs a 'full' run (G and E); {str(run2)!r} is variant "
                             f"{info2.variant!r}: pass --figure2-run with a full run")
    images, problem, kept = None, None, None
    if run2 is not None:
        try:
            images = figure2_images(run2, n=figure2_images_per_row, seed=seed, device=device)
        except (FileNotFoundError, CheckpointError) as exc:
            kept = _kept_figure2(out, run2) if isinstance(exc, FileNotFoundError) else None
            if figure2_run is not None and kept is None:
                raise
            problem = f"the default run `{run2}` could not be loaded ({exc})"

    out.mkdir(parents=True, exist_ok=True)
    w = _Writer(out)
    infos = {r: run_info(r) for r in dict.fromkeys(chosen["run"])}
    _write_table1(w, chosen, infos, boot, score)
    _write_ablation(w, chosen, infos, boot)
    _write_fid(w, root, allow_smoke)
    if kept is not None:  # the weights are gone, the figure drawn from them is not
        w.written["figure2.png"], w.captions["figure2.png"] = out / "figure2.png", kept
    else:
        _write_figure2(w, run2, images, problem, root, seed, figure2_layout)

    label = setting_label(chosen["preset"], chosen["device"], chosen.get("data", ()))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = (f"python -m csigen figures --runs {root} --out {out} --seed {seed} --bootstrap {boot.n}"
               + (f" --score {score}" if score is not None else "") + (" --allow-smoke" if allow_smoke else ""))
    readme = [f"# {_with_mark('Tables and figures regenerated from runs', label)}\n",
              (f"Written by `{command}` on {now}, csigen commit {git_commit() or 'unknown'}, from "
               f"{_plural(len(infos), 'finished run')}. Setting: {label}.\n")]
    for name, caption in w.captions.items():
        readme += [f"## {name}\n", caption + "\n"]
    for name in OUTPUT_FILES:  # a figure of runs that are gone must not stay beside the new ones
        if name not in w.written and name != "README.md" and (out / name).exists():
            (out / name).unlink()
    w.write("README.md", "\n".join(readme))
    return w.written


# ----------------------------------------------------------------------------
# notebooks 04 (Table 1) and 05 (ablation): one sweep's runs, run times, paired differences
# ----------------------------------------------------------------------------
def sweep_runs(configs, runs_root: str | os.PathLike, *, allow_smoke: bool = False):
    """The finished runs of ``configs`` under ``runs_root``, as :func:`load_runs` gives them (one row per run and score).

    A notebook's tables then show its own sweep, not every run that happens to
    be in the folder (other notebooks', other presets'). Each config's folder is
    :func:`csigen.results.run_dir`; unfinished runs are left out (see
    :func:`csigen.results.sweep_plan`). Smoke-preset runs raise
    :class:`SmokeRunsError` unless ``allow_smoke``.
    """

    from csigen.results import collect, run_dir

    folders = list(dict.fromkeys(run_dir(runs_root, c) for c in configs))
    finished = [f for f in folders if (f / "result.json").exists()]
    if not finished:
        raise FileNotFoundError(f"none of the {len(folders)} runs of the sweep under {str(runs_root)!r} has "
                                "finished (no result.json): run the sweep first")
    runs = collect(finished)
    smoke = sorted(set(runs.loc[runs["preset"] == "smoke", "run"]))
    if smoke and not allow_smoke:
        raise SmokeRunsError(f"{len(smoke)} smoke-preset run(s) in the sweep (e.g. {smoke[0]}): their numbers "
                             "mean nothing. Pass allow_smoke=True to show them marked 'meaningless, smoke'.")
    refuse_mixed_recipes(runs, f"the sweep in {str(runs_root)!r}")
    return runs


def score_rows(runs, score: str | None = None):
    """One row per run under one score, with the columns of :func:`paper_score_rows`.

    ``score`` None: the score behind the paper's number for each variant
    (:func:`paper_score_rows`: CSI's score for ``csi``, Eq. 11 for ``csi+g`` and
    ``full``), which is how the paper compares them. A score's name (for
    example ``"shared"``, Eq. 11): that score for every variant, a like-for-like
    comparison of the trained features; runs that did not store it are left
    out. ``runs`` is :func:`csigen.results.collect`'s frame.
    """
    import pandas as pd

    from csigen.results import PAPER_SCORE

    if score is None:
        return paper_score_rows(runs)
    rows = runs[runs["score"] == score].drop_duplicates("run").copy()
    if rows.empty:
        raise ValueError(f"no run stored the score {score!r}; the runs have {sorted(set(runs['score']))} "
                         "(or pass score=None for the paper's score per variant)")
    rows["paper score"] = rows["score"] == rows["variant"].map(PAPER_SCORE)
    rows["class"] = [str(i) if pd.isna(n) else str(n) for n, i in zip(rows["inlier_name"], rows["inlier"])]
    rows["inlier"] = rows["inlier"].astype(str)
    rows["series"] = rows["variant"]
    return rows.reset_index(drop=True)


def run_times(runs):
    """How long each run took, from its ``result.json``: one row per run of ``runs`` (any frame with ``run``).

    Columns: ``dataset``, ``class``, ``variant``, ``seed``, ``preset``,
    ``device``, ``steps``, ``train (min)``, ``evaluation (min)``, ``total (min)``
    (training + evaluation, measured by :func:`csigen.train.run`; a resumed run
    counts every session's training) and ``finished`` (UTC).
    """
    import pandas as pd

    def minutes(seconds):
        return np.nan if seconds is None else float(seconds) / 60.0

    rows = []
    for run in dict.fromkeys(runs["run"]):
        r = json.loads((Path(run) / "result.json").read_text())
        rows.append({"dataset": r["dataset"], "class": str(r.get("inlier_name") or r["inlier"]),
                     "variant": r["variant"], "seed": r["seed"], "preset": r["preset"],
                     "device": r.get("device"), "steps": r.get("steps"),
                     "train (min)": minutes(r.get("train_seconds")),
                     "evaluation (min)": minutes(r.get("eval_seconds")),
                     "total (min)": minutes(r.get("seconds")),
                     "finished": str(r.get("finished_at") or "")[:16].replace("T", " ")})
    frame = pd.DataFrame(rows)
    return _sorted(frame, ["dataset", "preset", "seed", "class", "variant"]) if not frame.empty else frame


def class_and_mean_rows(chosen):
    """The frame :func:`csigen.plotting.ablation_figure` draws, from :func:`score_rows` rows of one dataset and preset.

    One row per run (``class``, ``variant`` = the row's series, ``seed``,
    ``auroc``), then a ``class == "mean"`` row per variant and seed: that
    seed's mean over the classes every variant has (where the seeds cover
    different classes, one row with seed None: the mean over classes of the
    per-class means, as the tables). Classes in the dataset's order.
    """
    import pandas as pd

    cells = chosen[["dataset", "preset"]].drop_duplicates()
    if len(cells) != 1:
        raise ValueError(f"one dataset and preset at a time; these rows have {len(cells)} "
                         f"({', '.join(f'{d}/{p}' for d, p in cells.itertuples(index=False))}): select one, "
                         "e.g. rows[rows['preset'] == 'cpu']")
    common = set.intersection(*(set(g["class"]) for _, g in chosen.groupby("series")))
    means = pd.DataFrame([{"class": "mean", "variant": series, "seed": seed, "auroc": v}
                          for series, cell in chosen[chosen["class"].isin(common)].groupby("series", sort=False)
                          for seed, v in _seed_means(cell)], columns=["class", "variant", "seed", "auroc"])
    runs = chosen[["class", "series", "seed", "auroc"]].rename(columns={"series": "variant"})
    frame = pd.concat([runs, means], ignore_index=True)
    order = {c: i for i, c in enumerate(_class_order(cells["dataset"].iloc[0], runs["class"]) + ["mean"])}
    return frame.iloc[np.argsort([order[c] for c in frame["class"]], kind="stable")].reset_index(drop=True)


def _stratified_weights(is_inlier: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """``(b, N)`` bootstrap counts: inliers and outliers each resampled to their own number (as bootstrap_auroc)."""
    idx_in, idx_out = np.flatnonzero(is_inlier), np.flatnonzero(~is_inlier)
    w = np.zeros((b, is_inlier.shape[0]))
    w[:, idx_in] = rng.multinomial(idx_in.size, np.full(idx_in.size, 1.0 / idx_in.size), size=b)
    w[:, idx_out] = rng.multinomial(idx_out.size, np.full(idx_out.size, 1.0 / idx_out.size), size=b)
    return w


def paired_bootstrap_difference(scores_a, scores_b, is_inlier, n: int = DEFAULT_BOOTSTRAP,
                                rng: np.random.Generator | None = None, chunk: int = 100) -> np.ndarray:
    """``n`` bootstrap replicates (percent points) of AUROC(b) - AUROC(a) on the same test images.

    Args:
        scores_a, scores_b: ``(N,)`` scores of two runs (higher = more
            inlier-like) for the same ``N`` test images in the same order.
        is_inlier: ``(N,)`` bool.
    Each replicate resamples the test images once (inliers and outliers
    separately, as :func:`bootstrap_auroc`) and scores *both* runs on that
    resample, so what the two runs share (which images happen to be hard)
    cancels in the difference. Returns ``(n,)``.
    """
    a = np.asarray(scores_a, dtype=float).ravel()
    b = np.asarray(scores_b, dtype=float).ravel()
    inl = np.asarray(is_inlier, dtype=bool).ravel()
    if not a.shape == b.shape == inl.shape:
        raise ValueError(f"paired scores need the same test images: {a.shape[0]} and {b.shape[0]} scores for "
                         f"{inl.shape[0]} labels")
    rng = rng if rng is not None else np.random.default_rng(0)
    out = []
    for start in range(0, int(n), chunk):
        w = _stratified_weights(inl, min(chunk, int(n) - start), rng)
        out.append(100.0 * (weighted_auroc(b, inl, w) - weighted_auroc(a, inl, w)))
    return np.concatenate(out)


def _paired_replicates(run_a: str, score_a: str, run_b: str, score_b: str, boot: Bootstrap) -> np.ndarray | None:
    """Paired replicates of two runs' stored test scores; None if either is not stored or the test sets differ."""
    stored, labels = [], []
    for run, score in ((run_a, score_a), (run_b, score_b)):
        path = Path(run) / "result.json"
        primary = json.loads(path.read_text()).get("score") if path.exists() else None
        stored.append(load_test_scores(run, score, primary))
        if stored[-1] is None:
            return None
        with np.load(Path(run) / "scores.npz") as z:
            labels.append(z["labels"] if "labels" in z.files else stored[-1][1])
    (sa, inl_a), (sb, inl_b) = stored
    if not (np.array_equal(inl_a, inl_b) and np.array_equal(labels[0], labels[1])):
        return None  # not the same test images in the same order: no pairing
    rng = np.random.default_rng([boot.seed, zlib.crc32(Path(run_a).name.encode()),
                                 zlib.crc32(Path(run_b).name.encode())])
    return paired_bootstrap_difference(sa, sb, inl_a, n=boot.n, rng=rng)


def _paired_cell(pairs, boot: Bootstrap) -> dict[str, Any]:
    """Statistics of the paired differences of one class (or of the mean over classes)."""
    values = np.column_stack([pairs["difference"], pairs["auroc a"], pairs["auroc b"], np.stack(pairs["reps"])])
    mean, per_seed = _aggregate(pairs.rename(columns={"class": "inlier"}), values)
    several = per_seed is not None and len(per_seed) > 1
    std_d, std_a, std_b = ((float(per_seed[k].std(ddof=0)) for k in range(3)) if several
                           else (np.nan, np.nan, np.nan))
    reps = mean[3:]
    if np.isnan(reps).any():
        low = high = np.nan
    else:
        alpha = 100.0 * (1.0 - boot.confidence) / 2.0
        low, high = (float(v) for v in np.percentile(reps, [alpha, 100.0 - alpha]))
    diff = float(mean[0])
    return {"seeds": int(pairs["seed"].nunique()), "difference": diff, "std over seeds": std_d,
            "ci low": low, "ci high": high, "std a": std_a, "std b": std_b,
            "beyond seed spread": (bool(abs(diff) > max(std_a, std_b)) if several else None),
            "CI excludes 0": (None if np.isnan(low) else bool(low > 0 or high < 0))}


def paired_differences(chosen, base: str = "csi", other: str = "csi+g", boot: Bootstrap | None = None):
    """AUROC(``other``) - AUROC(``base``) per inlier class, paired by class, seed and test images, and their mean.

    ``chosen``: :func:`score_rows` rows (one per run). A pair is the two
    variants' runs on the same dataset, preset, class and seed (same test
    images). Per dataset, preset and class one row, then a ``class == "mean"``
    row: the difference of the means over the classes both variants have (as
    the tables average: per seed when the seeds cover the same classes, else
    over the per-class means).

    Columns: ``dataset``, ``preset``, ``class``, ``base``, ``other``,
    ``scores`` (e.g. ``"csi -> shared"``), ``seeds``, ``per seed`` (each
    seed's difference), ``difference`` (mean over seeds, AUROC points),
    ``std over seeds`` (population std of the per-seed differences), ``ci low``
    / ``ci high`` (paired bootstrap over the test images, ``boot.confidence``;
    :func:`paired_bootstrap_difference`), ``std <base>`` / ``std <other>``
    (the seed-to-seed spread of each variant's AUROC over the same seeds),
    ``beyond seed spread`` (|difference| larger than both spreads; None with
    one seed, where there is no spread to compare with), ``CI excludes 0`` and
    ``paper`` (on the CIFAR-10 mean row: the paper's number for ``other``
    minus its number for ``base``, each under the paper's own score).
    The std columns are NaN with one seed or seeds of unlike class sets.
    """
    import pandas as pd

    from csigen.results import paper_number

    boot = boot if boot is not None else Bootstrap()
    keys = ["dataset", "preset", "class", "seed"]
    a = chosen[chosen["variant"] == base].drop_duplicates(keys)
    b = chosen[chosen["variant"] == other].drop_duplicates(keys)
    if a.empty or b.empty:
        missing = [v for v, rows in ((base, a), (other, b)) if rows.empty]
        raise ValueError(f"no finished runs of variant {' and '.join(map(repr, missing))} to pair: run them on "
                         "the same classes and seeds")
    pairs = a.merge(b, on=keys, suffixes=(" a", " b"))
    if pairs.empty:
        raise ValueError(f"{base!r} and {other!r} share no (class, seed): run both variants on the same classes "
                         "and seeds")
    pairs["difference"] = pairs["auroc b"] - pairs["auroc a"]
    missing = np.full(boot.n, np.nan)
    pairs["reps"] = [_paired_replicates(ra, sa, rb, sb, boot) for ra, sa, rb, sb in
                     zip(pairs["run a"], pairs["score a"], pairs["run b"], pairs["score b"])]
    pairs["reps"] = [missing if r is None else r for r in pairs["reps"]]
    scores = " / ".join(sorted({f"{sa} -> {sb}" if sa != sb else sa
                                for sa, sb in zip(pairs["score a"], pairs["score b"])}))
    rows = []
    for (dataset, preset), group in pairs.groupby(["dataset", "preset"], sort=False):
        cells = [(cls, g) for cls, g in group.groupby("class", sort=False)] + [("mean", group)]
        for cls, g in cells:
            stats = _paired_cell(g, boot)
            paper = np.nan
            if cls == "mean" and dataset == "cifar10":
                pa, pb = paper_number(dataset, base), paper_number(dataset, other)
                paper = np.nan if pa is None or pb is None else pb - pa
            per_seed = "" if cls == "mean" else ", ".join(
                f"s{s}: {d:+.1f}" for s, d in sorted(zip(g["seed"], g["difference"])))
            rows.append({"dataset": dataset, "preset": preset, "class": cls, "base": base, "other": other,
                         "scores": scores, "seeds": stats["seeds"], "per seed": per_seed,
                         "difference": stats["difference"], "std over seeds": stats["std over seeds"],
                         "ci low": stats["ci low"], "ci high": stats["ci high"],
                         f"std {base}": stats["std a"], f"std {other}": stats["std b"],
                         "beyond seed spread": stats["beyond seed spread"],
                         "CI excludes 0": stats["CI excludes 0"], "paper": paper})
    frame = pd.DataFrame(rows)
    return _sorted(frame.assign(variant=other), ["dataset", "preset", "class"]).drop(columns="variant")


def notebook_figures_dir(runs_root: str | os.PathLike, requested: str | os.PathLike | None = None, *,
                         smoke: bool) -> Path:
    """The folder notebooks 04 and 05 write the figures into (the files of ``python -m csigen figures``).

    Real runs: ``requested`` when given (the repository's ``figures/`` to
    regenerate the committed figures), else ``runs_root/figures``, beside the
    runs (on Google Drive with them in Colab). Smoke mode: always
    ``runs_root/figures-smoke``, whatever ``requested`` says, so that smoke
    output (marked "meaningless, smoke") can never reach the committed ``figures/``.
    """
    if smoke:
        return Path(runs_root) / "figures-smoke"
    return Path(runs_root) / "figures" if requested is None else Path(requested)


__all__ += ["class_and_mean_rows", "notebook_figures_dir", "paired_bootstrap_difference", "paired_differences",
            "run_times", "score_rows", "sweep_runs"]


# ----------------------------------------------------------------------------
# Figure 2 browser (notebook 07): Eq. 11's nearest training image, reconstructions, interpolations
# ----------------------------------------------------------------------------
#: File in a run folder caching the features :func:`load_figure2_run` extracts (recomputed when stale).
FIGURE2_FEATURES_FILE = "figure2_features.pt"
#: Eq. 11 readings that name one nearest training image x~ (``per_shift`` picks one per shift).
EQ11_SINGLE_NEIGHBOUR = ("shared", "literal")


def eq11_nearest(test, train, *, neighbour: str = "shared", chunk_size: int = 1024):
    """Eq. 11's nearest training image x~ of each test image, with the score M(x_test, x~).

    With ``z_k(x)`` the simclr feature of shift ``S_k`` of ``x`` and
    ``m(x, x') = <F(x), F(x') / ||F(x')||>`` (Eq. 11)::

        "shared":  x~ = argmax_{x'} sum_k m(S_k(x_test), S_k(x'))     (one neighbour for all shifts)
        "literal": x~ = argmax_{x'} m(x_test, x')                     (chosen on the unshifted images)
        M(x_test, x~) = sum_k m(S_k(x_test), S_k(x~))

    :func:`csigen.score.nearest_neighbour_score` returns the same scores; this
    also says *which* training image is x~ (the first one on ties). The third
    reading, ``"per_shift"``, takes a neighbour per shift, not one x~, and is refused.

    Args:
        test: :class:`csigen.score.Features` of the test images, ``simclr (N_test, K, D)``.
        train: features of the training images, ``simclr (N_train, K, D)``.
        neighbour: ``"shared"`` (the paper's score in csigen) or ``"literal"``.
        chunk_size: test rows per matrix product (memory ``O(chunk_size * N_train)``).

    Returns:
        ``(index, score)``: int64 ``(N_test,)`` indices into the training
        images and float32 ``(N_test,)`` scores, on the CPU.
    """
    import torch
    import torch.nn.functional as F

    if neighbour not in EQ11_SINGLE_NEIGHBOUR:
        raise ValueError(f"neighbour must be one of {EQ11_SINGLE_NEIGHBOUR} (a reading of Eq. 11 with one nearest "
                         f"training image), got {neighbour!r}; 'per_shift' picks a neighbour per shift")
    if test.simclr.shape[1:] != train.simclr.shape[1:] or len(train) == 0:
        raise ValueError(f"test and train features disagree or train is empty: (K, D) = "
                         f"{tuple(test.simclr.shape[1:])} vs {tuple(train.simclr.shape[1:])}, {len(train)} train rows")
    unit = F.normalize(train.simclr.float(), dim=-1, eps=1e-12)  # F(x') / ||F(x')||, (N_train, K, D)
    n_train = unit.shape[0]
    index, score = [], []
    for start in range(0, len(test), int(chunk_size)):
        z = test.simclr[start:start + int(chunk_size)].to(unit.device, torch.float32)  # (c, K, D)
        if neighbour == "shared":
            values, idx = (z.reshape(z.shape[0], -1) @ unit.reshape(n_train, -1).T).max(dim=1)
        else:
            idx = (z[:, 0] @ unit[:, 0].T).argmax(dim=1)
            values = (z * unit[idx]).sum(dim=(1, 2))
        index.append(idx.cpu())
        score.append(values.cpu())
    return torch.cat(index).long(), torch.cat(score).float()


@dataclass
class Figure2Run:
    """One ``full`` run as the Figure 2 browser shows it (:func:`load_figure2_run`).

    ``G`` is the run's generator in the FID protocol's mode
    (:func:`csigen.fid.generator_for_evaluation`), ``E`` its encoder in eval
    mode, so reconstructions G(E(x)) are Figure 2's and the FIDs'. ``scores``
    (``(M,)``) are Eq. 11 scores of the test images (reading ``neighbour``)
    recomputed from ``test_features`` / ``train_features``, ``nearest`` their
    nearest training images x~ (indices into ``task.train_images``), and
    ``stored_scores`` the same score from the run's ``scores.npz`` (None if
    not stored), for comparison.
    """

    label: str
    config: Any
    task: Any
    G: Any
    E: Any
    test_features: Any
    train_features: Any
    neighbour: str
    scores: np.ndarray
    nearest: np.ndarray
    stored_scores: np.ndarray | None = None

    @property
    def is_inlier(self) -> np.ndarray:
        """``(M,)`` bool: which test images are inliers."""
        return self.task.test_is_inlier.cpu().numpy().astype(bool)

    def indices(self, group: str) -> np.ndarray:
        """Test-set indices of ``"inliers"`` or ``"outliers"``, in test-set order."""
        if group not in ("inliers", "outliers"):
            raise ValueError(f"group must be 'inliers' or 'outliers', got {group!r}")
        return np.flatnonzero(self.is_inlier if group == "inliers" else ~self.is_inlier)

    def class_name(self, index: int) -> str:
        """The class name of test image ``index``."""
        return self.task.class_names[int(self.task.test_labels[int(index)])]

    def _device(self):
        return next(self.E.parameters()).device

    def reconstruct(self, index) -> Any:
        """G(E(x)) of test images ``index`` (int or sequence): float ``(n, 3, H, W)`` in [0, 1] on the CPU."""
        import torch

        from csigen import fid

        idx = torch.as_tensor(np.atleast_1d(np.asarray(index, dtype=np.int64)))
        return fid.reconstruct(self.G, self.E, self.task.test_images[idx], **self.G.fid_mode).clamp(0, 1)

    def interpolate(self, first: int, second: int, alphas) -> Any:
        """``G((1 - a) E(x1) + a E(x2))`` for each ``a`` in ``alphas`` (x1, x2: test images ``first``, ``second``).

        G in the protocol's mode, E in eval mode. Returns float ``(len(alphas), 3, H, W)`` in [0, 1] on the CPU.
        """
        import torch

        a = torch.as_tensor(np.atleast_1d(np.asarray(alphas, dtype=np.float32)))[:, None]
        x = self.task.test_images[torch.as_tensor([int(first), int(second)])].float() / 255.0
        with torch.no_grad():
            z = self.E(x.to(self._device())).float().cpu()
            mix = (1.0 - a) * z[0] + a * z[1]
            return self.G(mix.to(self._device())).float().cpu().clamp(0, 1)


def _figure2_features(F, task, config, device, seed: int = 0):
    """Features of the training and test images with the settings of :func:`csigen.train.evaluate_model` (fp32)."""
    from csigen.train import eval_feature_pair

    return eval_feature_pair(F, task, config, device=device, seed=seed)


def figure2_run(F, G, E, task, config, *, neighbour: str = "shared", device="cpu", label: str = "",
                features=None, stored_scores=None, **g_mode) -> Figure2Run:
    """A :class:`Figure2Run` from networks in memory (:func:`load_figure2_run` does it for a run folder).

    ``features``: ``(train, test)`` :class:`csigen.score.Features`, extracted
    here with the run's evaluation settings when None. ``g_mode``: arguments of
    :func:`csigen.fid.generator_for_evaluation` (default: the protocol's).
    """
    import torch

    from csigen import fid

    device = torch.device(device)
    train, test = features if features is not None else _figure2_features(F, task, config, device)
    index, scores = eq11_nearest(test, train, neighbour=neighbour)
    G_eval = fid.generator_for_evaluation(G, device=device, **g_mode)
    E = E.to(device).eval()
    return Figure2Run(label=label, config=config, task=task, G=G_eval, E=E, test_features=test,
                      train_features=train, neighbour=neighbour, scores=scores.numpy(), nearest=index.numpy(),
                      stored_scores=stored_scores)


def load_figure2_run(run_dir: str | os.PathLike, *, device: str = "cpu", neighbour: str | None = None,
                     cache: bool = True, **g_mode) -> Figure2Run:
    """A finished (or checkpointed) ``full`` run, ready for the Figure 2 browser.

    The networks come from ``checkpoint.pt`` or ``weights.pt``
    (:meth:`csigen.train.Trainer.from_run`, the run's own data). ``neighbour`` None: the run's score when it is an
    Eq. 11 reading with one neighbour, else ``"shared"``. The features of the
    training and test images (the run's evaluation settings, float32, seed 0)
    are cached in ``run_dir/figure2_features.pt`` with the settings they were
    computed with, and recomputed when those differ (e.g. a longer training);
    with ``cache=False``, or a read-only folder, nothing is written.
    """
    import io
    import pickle
    import warnings

    import torch

    from csigen.checkpoint import atomic_write_bytes
    from csigen.score import Features
    from csigen.train import Trainer

    run_dir = Path(run_dir)
    trainer = Trainer.from_run(run_dir, device=device)
    config, nets = trainer.config, trainer.nets
    if nets.G is None or nets.E is None:
        raise ValueError(f"the Figure 2 browser needs a 'full' run (G and E); {str(run_dir)!r} is variant "
                         f"{config.variant!r}: pick a full run")
    if neighbour is None:
        neighbour = config.score if config.score in EQ11_SINGLE_NEIGHBOUR else "shared"
    task = trainer.task
    key = {"step": int(trainer.step), "eval_samples": int(config.eval_samples), "num_shifts": int(config.num_shifts),
           "eval_batch_size": int(config.eval_batch_size), "eval_crop_scale": float(config.eval_crop_scale),
           "n_train": int(task.train_images.shape[0]), "n_test": int(task.test_images.shape[0]), "seed": 0,
           "device": trainer.device.type}
    path = run_dir / FIGURE2_FEATURES_FILE
    features = None
    if cache and path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("key") == key:
                features = (Features(saved["train_simclr"], saved["train_shift"]),
                            Features(saved["test_simclr"], saved["test_shift"]))
        except (OSError, RuntimeError, EOFError, AttributeError, KeyError, TypeError, ValueError,
                pickle.UnpicklingError) as exc:
            # a damaged or foreign cache is recomputed, never trusted
            warnings.warn(f"ignoring {str(path)!r} ({type(exc).__name__}: {exc}); recomputing the features",
                          RuntimeWarning, stacklevel=2)
    if features is None:
        features = _figure2_features(nets.F, task, config, trainer.device)
        if cache:
            train, test = features
            buffer = io.BytesIO()
            torch.save({"key": key, "train_simclr": train.simclr, "train_shift": train.shift,
                        "test_simclr": test.simclr, "test_shift": test.shift}, buffer)
            try:
                atomic_write_bytes(path, buffer.getvalue())
            except OSError as exc:
                warnings.warn(f"could not cache the features in {str(path)!r} ({exc}); they are recomputed "
                              "next time", RuntimeWarning, stacklevel=2)
    stored = load_test_scores(run_dir, neighbour, json.loads((run_dir / "result.json").read_text()).get("score")
                              if (run_dir / "result.json").exists() else None)
    label = f"{config.dataset} / {task.inlier_name}, {config.variant}, preset {config.preset}, seed {config.seed}" + (
        f" ({SMOKE_MARK})" if config.preset == "smoke" else "")
    return figure2_run(nets.F, nets.G, nets.E, task, config, neighbour=neighbour, device=trainer.device,
                       label=label, features=features, stored_scores=None if stored is None else stored[0],
                       **g_mode)


def figure2_runs(runs_root: str | os.PathLike) -> list[Path]:
    """Folders under ``runs_root`` (any depth) holding a ``full`` run's ``config.json`` and networks, sorted.

    The networks are ``checkpoint.pt`` or ``weights.pt`` (:func:`csigen.disk.has_run_weights`); a folder
    without ``config.json`` (e.g. notebook 06's training-only snapshot replays) is not listed.
    """
    from csigen.disk import has_run_weights

    found = []
    for config in sorted(Path(runs_root).rglob("config.json")):
        if not has_run_weights(config.parent):
            continue
        try:
            variant = json.loads(config.read_text()).get("variant")
        except (OSError, ValueError):
            variant = None
        if variant == "full":
            found.append(config.parent)
    return found


__all__ += ["EQ11_SINGLE_NEIGHBOUR", "FIGURE2_FEATURES_FILE", "Figure2Run", "eq11_nearest", "figure2_run",
            "figure2_runs", "load_figure2_run"]
