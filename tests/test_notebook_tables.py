"""The helpers of notebooks 04 (Table 1) and 05 (ablation): a sweep's runs, its plan, run times, paired differences.

Run folders are written by hand (``result.json`` and ``scores.npz`` with test
scores of known AUROC), so every expected number is known exactly and no
network is trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from csigen import figures, results
from csigen.config import make_config

N_IN, N_OUT = 10, 30  # test images per run: AUROC = k / (N_IN * N_OUT)
PAIRS = N_IN * N_OUT
CLASSES = {"automobile": 1, "cat": 3}
#: k of the paper's score and of "shared" per (variant, class, seed).
K = {("csi", "automobile", 0): 210, ("csi", "automobile", 1): 240, ("csi", "cat", 0): 150, ("csi", "cat", 1): 120,
     ("csi+g", "automobile", 0): 240, ("csi+g", "automobile", 1): 255, ("csi+g", "cat", 0): 153,
     ("csi+g", "cat", 1): 126}


def scores_with_auroc(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, is_inlier) in a shuffled order whose AUROC is exactly k / PAIRS."""
    counts, left = [], k
    for _ in range(N_IN):
        counts.append(min(N_OUT, left))
        left -= counts[-1]
    assert left == 0
    s = np.concatenate([np.array(counts) - 0.5, np.arange(N_OUT, dtype=float)])
    inl = np.r_[np.ones(N_IN, bool), np.zeros(N_OUT, bool)]
    order = np.random.default_rng(0).permutation(N_IN + N_OUT)  # one test order for every run
    return s[order], inl[order]


def write_run(root, variant, cls, seed, k, preset="cpu", seconds=(60.0, 30.0)):
    config = make_config(preset, dataset="cifar10", inlier=cls, variant=variant, seed=seed)
    out = results.run_dir(root, config)
    out.mkdir(parents=True)
    shared, inl = scores_with_auroc(k)
    csi = shared + 0.01  # the same ranking: the same AUROC under CSI's score
    labels = np.where(inl, CLASSES[cls], 0)
    np.savez(out / "scores.npz", scores=shared, score_shared=shared, score_csi=csi, labels=labels, is_inlier=inl)
    result = {"schema_version": 1, "dataset": "cifar10", "inlier": CLASSES[cls], "inlier_name": cls,
              "variant": variant, "preset": preset, "seed": seed, "score": "shared", "auroc": k / PAIRS,
              "scores": {name: {"auroc": roc_auc_score(inl, a), "per_class_auroc": {}}
                         for name, a in (("shared", shared), ("csi", csi))},
              "steps": 80, "train_seconds": seconds[0], "eval_seconds": seconds[1], "seconds": sum(seconds),
              "device": "cpu", "finished_at": "2026-12-01T10:00:00Z", "config": config.to_dict()}
    (out / "result.json").write_text(json.dumps(result))
    return config


@pytest.fixture()
def sweep(tmp_path):
    configs = [write_run(tmp_path, v, c, s, k) for (v, c, s), k in K.items()]
    return tmp_path, configs


def test_paired_bootstrap_difference_scores_both_runs_on_the_same_resample():
    rng = np.random.default_rng(3)
    inl = rng.random(60) < 0.3
    a, b = rng.normal(size=60) + inl, rng.normal(size=60) + 2 * inl
    same = figures.paired_bootstrap_difference(a, a, inl, n=50)
    assert same.shape == (50,) and np.all(same == 0)  # identical runs: no difference on any resample
    reps = figures.paired_bootstrap_difference(a, b, inl, n=50, rng=np.random.default_rng(1))
    w = figures._stratified_weights(inl, 50, np.random.default_rng(1))  # the same draws, one chunk
    expected = 100 * (figures.weighted_auroc(b, inl, w) - figures.weighted_auroc(a, inl, w))
    np.testing.assert_allclose(reps, expected)
    point = 100 * (roc_auc_score(inl, b) - roc_auc_score(inl, a))
    assert abs(np.median(reps) - point) < 5
    with pytest.raises(ValueError, match="same test images"):
        figures.paired_bootstrap_difference(a, b[:-1], inl)


def test_paired_differences_per_class_and_mean(sweep):
    root, configs = sweep
    runs = figures.sweep_runs(configs, root)
    table = figures.paired_differences(figures.score_rows(runs, "shared"), "csi", "csi+g",
                                       figures.Bootstrap(200, seed=0))
    assert list(table["class"]) == ["automobile", "cat", "mean"]
    row = table.set_index("class")
    d = {c: [100 * (K[("csi+g", c, s)] - K[("csi", c, s)]) / PAIRS for s in (0, 1)] for c in CLASSES}
    for c in CLASSES:
        assert row.loc[c, "difference"] == pytest.approx(np.mean(d[c]))
        assert row.loc[c, "std over seeds"] == pytest.approx(np.std(d[c]))
        spread_csi = np.std([100 * K[("csi", c, s)] / PAIRS for s in (0, 1)])
        assert row.loc[c, "std csi"] == pytest.approx(spread_csi)
        assert row.loc[c, "seeds"] == 2 and row.loc[c, "scores"] == "shared"
    # automobile: +10 and +5 points against a seed spread of 5 (csi) and 2.5 (csi+g): beyond it;
    # cat: +1 and +2 points against a spread of 5: within it
    assert list(table["beyond seed spread"][:2]) == [True, False]
    assert row.loc["automobile", "per seed"] == "s0: +10.0, s1: +5.0"
    assert row.loc["mean", "difference"] == pytest.approx(np.mean(d["automobile"] + d["cat"]))
    per_seed_mean = [np.mean([d[c][s] for c in CLASSES]) for s in (0, 1)]
    assert row.loc["mean", "std over seeds"] == pytest.approx(np.std(per_seed_mean))
    assert row.loc["mean", "paper"] == pytest.approx(94.8 - 94.3)  # quoted, CIFAR-10 mean row only
    assert np.isnan(row.loc["cat", "paper"])
    for c in ("automobile", "cat", "mean"):
        assert row.loc[c, "ci low"] <= row.loc[c, "difference"] <= row.loc[c, "ci high"]
    assert list(table["CI excludes 0"]) == list((table["ci low"] > 0) | (table["ci high"] < 0))
    # the paper's scores: csi under CSI's score, csi+g under Eq. 11 (same rankings here, same numbers)
    paper = figures.paired_differences(figures.score_rows(runs), "csi", "csi+g", figures.Bootstrap(50))
    assert set(paper["scores"]) == {"csi -> shared"}
    np.testing.assert_allclose(paper["difference"], table["difference"])


def test_paired_differences_one_seed_has_no_spread_and_unpaired_runs_are_refused(sweep):
    root, configs = sweep
    rows = figures.score_rows(figures.sweep_runs(configs, root), "shared")
    one = figures.paired_differences(rows[rows["seed"] == 0], boot=figures.Bootstrap(20))
    assert one["beyond seed spread"].isna().all() and one["std over seeds"].isna().all()
    with pytest.raises(ValueError, match="no finished runs of variant 'full'"):
        figures.paired_differences(rows, "csi+g", "full")
    shifted = rows.assign(seed=np.where(rows["variant"] == "csi", 7, rows["seed"]))
    with pytest.raises(ValueError, match="share no"):
        figures.paired_differences(shifted)


def test_sweep_runs_reads_only_the_sweep_and_refuses_smoke(sweep):
    root, configs = sweep
    write_run(root, "full", "cat", 0, 200)  # in the folder, not in the sweep
    runs = figures.sweep_runs(configs, root)
    assert runs["run"].nunique() == len(configs) and "full" not in set(runs["variant"])
    assert len(runs) == 2 * len(configs)  # one row per run and score
    with pytest.raises(FileNotFoundError, match="none of the 1 runs"):
        figures.sweep_runs([make_config("cpu", dataset="cifar10", inlier="dog", variant="csi")], root)
    smoke = [write_run(root, "csi", "cat", 0, 100, preset="smoke")]
    with pytest.raises(figures.SmokeRunsError, match="allow_smoke"):
        figures.sweep_runs(smoke, root)
    assert figures.sweep_runs(smoke, root, allow_smoke=True)["preset"].eq("smoke").all()
    with pytest.raises(ValueError, match="stored the score 'literal'"):
        figures.score_rows(runs, "literal")


def test_sweep_plan_says_what_a_rerun_does(sweep):
    root, configs = sweep
    interrupted = make_config("cpu", dataset="cifar10", inlier="cat", variant="full", seed=0)
    results.run_dir(root, interrupted).mkdir()
    (results.run_dir(root, interrupted) / "checkpoint.pt").write_bytes(b"")
    new = make_config("cpu", dataset="cifar10", inlier="dog", variant="full", seed=0)
    plan = results.sweep_plan([configs[0], interrupted, new], root)
    assert list(plan["state"]) == ["finished", "interrupted", "to train"]
    assert plan["run"].iloc[2].endswith(f"cifar10-dog-full-{new.preset}-s0") and not results.run_dir(root, new).exists()


def test_run_times_and_chart_rows(sweep):
    root, configs = sweep
    runs = figures.sweep_runs(configs, root)
    times = figures.run_times(runs)
    assert len(times) == len(configs)
    assert times["train (min)"].eq(1.0).all() and times["total (min)"].eq(1.5).all()
    assert times["finished"].iloc[0] == "2026-12-01 10:00"
    frame = figures.class_and_mean_rows(figures.score_rows(runs, "shared"))
    assert list(dict.fromkeys(frame["class"])) == ["automobile", "cat", "mean"]
    means = frame[frame["class"] == "mean"].set_index(["variant", "seed"])["auroc"]
    assert means[("csi", 1)] == pytest.approx(100 * (240 + 120) / 2 / PAIRS)
    mixed = pd.concat([figures.score_rows(runs, "shared"),
                       figures.score_rows(runs, "shared").assign(preset="quick")])
    with pytest.raises(ValueError, match="one dataset and preset"):
        figures.class_and_mean_rows(mixed)


def test_smoke_figures_never_go_to_the_requested_folder(tmp_path):
    assert figures.notebook_figures_dir(tmp_path, "../figures", smoke=True) == tmp_path / "figures-smoke"
    assert figures.notebook_figures_dir(tmp_path, None, smoke=False) == tmp_path / "figures"
    assert figures.notebook_figures_dir(tmp_path, "../figures", smoke=False) == Path("../figures")
