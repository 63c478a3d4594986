"""``python -m csigen figures`` (csigen.figures): every table and figure from a folder of runs.

One genuine smoke run (``full`` on the built-in shapes) is made by
:func:`csigen.train.run`; copies of it, with edited records and stored test
scores of known AUROC, stand for a small sweep (2 classes x 3 variants x 2
seeds) whose table entries are then known exactly.
"""

from __future__ import annotations

import functools
import io
import json
import shutil

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from csigen import fid, figures
from csigen.cli import build_parser, main
from csigen.config import make_config
from csigen.results import CSI_PAPER_PER_CLASS, PAPER_ABLATION

CLASSES = {"cat": 3, "dog": 5}  # labelled as CIFAR-10 classes so that the paper's numbers apply
VARIANTS = ("csi", "csi+g", "full")
PAPER_SCORE = {"csi": "csi", "csi+g": "shared", "full": "shared"}
#: k of the paper's score per (variant, class, seed): AUROC = k / (inliers x outliers).
K = {("csi", "cat", 0): 80, ("csi", "cat", 1): 90, ("csi", "dog", 0): 100, ("csi", "dog", 1): 60,
     ("csi+g", "cat", 0): 85, ("csi+g", "cat", 1): 95, ("csi+g", "dog", 0): 105, ("csi+g", "dog", 1): 65,
     ("full", "cat", 0): 112, ("full", "cat", 1): 100, ("full", "dog", 0): 110, ("full", "dog", 1): 70}


@pytest.fixture(autouse=True)
def _quick_generator_mode(monkeypatch):
    """G's evaluation mode re-estimates BatchNorm statistics on 256 prior samples, not 4,096 (saves time)."""
    monkeypatch.setattr(fid, "generator_for_evaluation",
                        functools.partial(fid.generator_for_evaluation, bn_samples=256))


@pytest.fixture(scope="module")
def genuine_run(tmp_path_factory):
    """One real smoke run of the full model (about 10 s on 2 CPU cores)."""
    from csigen.train import run

    config = make_config("smoke", dataset="shapes", inlier="circle", variant="full", max_steps=2,
                         batch_size=4, max_train=8, max_test=32, eval_samples=1, device="cpu")
    out = tmp_path_factory.mktemp("genuine") / "shapes-circle-full-smoke-s0"
    run(config, out, progress=False)
    return out


def _scores_with_auroc(is_inlier: np.ndarray, k: int) -> np.ndarray:
    """Scores whose AUROC is exactly k / (inliers x outliers): outliers 0..m-1, inlier j above c_j of them."""
    n_in, n_out = int(is_inlier.sum()), int((~is_inlier).sum())
    counts, left = [], k
    for _ in range(n_in):
        counts.append(min(n_out, left))
        left -= counts[-1]
    assert left == 0
    s = np.empty(is_inlier.shape[0])
    s[~is_inlier] = np.arange(n_out)
    s[is_inlier] = np.array(counts) - 0.5
    return s


def _derive(genuine, root, *, variant, cls, seed, k, preset="cpu", checkpoint=False, old_record=False):
    """A copy of the genuine run relabelled (variant, class, seed, preset) with known stored scores."""
    out = root / f"cifar10-{cls}-{variant}-{preset}-s{seed}"
    out.mkdir(parents=True)
    # checkpoint=True: with the run's networks, as a finished run keeps them (weights.pt, csigen.disk)
    for name in ("config.json",) + (("weights.pt",) if checkpoint else ()):
        shutil.copy(genuine / name, out / name)
    with np.load(genuine / "scores.npz") as z:
        is_inlier, labels = z["is_inlier"].astype(bool), z["labels"]
    pairs = int(is_inlier.sum()) * int((~is_inlier).sum())
    paper = PAPER_SCORE[variant]
    other = "shared" if paper == "csi" else "csi"
    arrays = {paper: _scores_with_auroc(is_inlier, k), other: _scores_with_auroc(is_inlier, pairs - k),
              "literal": _scores_with_auroc(is_inlier, pairs // 2),
              "per_shift": _scores_with_auroc(is_inlier, pairs // 2)}
    result = json.loads((genuine / "result.json").read_text())
    result.update(dataset="cifar10", inlier=CLASSES[cls], inlier_name=cls, variant=variant, seed=seed,
                  preset=preset, device="cpu")
    primary = "shared"
    result["config"] = {**result["config"], "variant": variant, "seed": seed, "preset": preset}
    buffer = io.BytesIO()
    if old_record:  # before per-score records: one score, stored as "scores"
        result.pop("scores", None)
        result.update(score=other, auroc=roc_auc_score(is_inlier, arrays[other]))
        np.savez(buffer, scores=arrays[other], labels=labels, is_inlier=is_inlier)
    else:
        result.update(score=primary, auroc=k / pairs if primary == paper else (pairs - k) / pairs)
        result["scores"] = {name: {"auroc": roc_auc_score(is_inlier, a), "per_class_auroc": {}}
                            for name, a in arrays.items()}
        np.savez(buffer, scores=arrays[primary], labels=labels, is_inlier=is_inlier,
                 **{f"score_{name}": a for name, a in arrays.items()})
    (out / "scores.npz").write_bytes(buffer.getvalue())
    (out / "result.json").write_text(json.dumps(result))
    return out, pairs


@pytest.fixture(scope="module")
def sweep(genuine_run, tmp_path_factory):
    """2 classes x 3 variants x 2 seeds (preset cpu) with known AUROCs; fid.json beside two of them."""
    from csigen.fid import real_inception_hash_prefix

    root = tmp_path_factory.mktemp("runs")
    real_sha = real_inception_hash_prefix() + "0" * (64 - len(real_inception_hash_prefix()))
    pairs = None
    for (variant, cls, seed), k in K.items():
        out, pairs = _derive(genuine_run, root, variant=variant, cls=cls, seed=seed, k=k,
                             checkpoint=variant == "full" and cls == "cat")
        if (variant, cls, seed) == ("full", "cat", 0):
            (out / "fid.json").write_text(json.dumps({
                "fid": 61.5, "samples": 10000, "reference": "inlier-train", "weights_sha256": real_sha,
                "real_inception": True, "protocol": "csigen-1", "step": 2, "schema_version": 1}))
        if (variant, cls, seed) == ("csi+g", "dog", 1):
            (out / "fid.json").write_text(json.dumps({
                "fid": 3.25, "samples": 64, "reference": "inlier-train", "weights_sha256": "cd" * 32,
                "real_inception": False, "protocol": "csigen-1", "step": 2, "schema_version": 1}))
    return root, pairs


def _expected(pairs, variant):
    """Mean over seeds of the per-seed class mean, population std over seeds (percent)."""
    per_seed = [np.mean([100 * K[(variant, c, s)] / pairs for c in CLASSES]) for s in (0, 1)]
    return np.mean(per_seed), np.std(per_seed)


def test_run_info_names_the_machine_where_the_record_does(genuine_run, tmp_path):
    info = figures.run_info(genuine_run)
    assert info.device == "cpu" and info.device_name and info.machine == f"cpu ({info.device_name})"
    old = json.loads((genuine_run / "result.json").read_text())
    del old["device_name"]  # a record from before csigen kept it
    (tmp_path / "result.json").write_text(json.dumps(old))
    assert figures.run_info(tmp_path).machine == "cpu"


def test_weighted_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 40).astype(float)  # many ties
    is_inlier = rng.random(40) < 0.3
    assert figures.weighted_auroc(scores, is_inlier) == pytest.approx(roc_auc_score(is_inlier, scores))
    weights = rng.integers(0, 4, (3, 40)).astype(float)
    got = figures.weighted_auroc(scores, is_inlier, weights)
    assert got.shape == (3,)
    for w, g in zip(weights, got):
        assert g == pytest.approx(roc_auc_score(is_inlier, scores, sample_weight=w))
    with pytest.raises(ValueError, match="both inliers and outliers"):
        figures.weighted_auroc(scores, np.ones(40, bool))


def test_bootstrap_is_stratified_and_reproducible():
    is_inlier = np.arange(20) < 5
    perfect = figures.bootstrap_auroc(is_inlier.astype(float), is_inlier, n=50)
    np.testing.assert_array_equal(perfect, 100.0)  # every resample keeps both groups: still separated
    scores = np.random.default_rng(1).normal(size=20) + is_inlier
    a = figures.bootstrap_auroc(scores, is_inlier, n=200, rng=np.random.default_rng(3))
    b = figures.bootstrap_auroc(scores, is_inlier, n=200, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.std() > 0 and abs(a.mean() - 100 * roc_auc_score(is_inlier, scores)) < 5


def test_figures_command_writes_every_table_and_figure(sweep, tmp_path, capsys):
    root, pairs = sweep
    out = tmp_path / "figures"
    (out).mkdir()
    (out / "fid.png").write_bytes(b"stale")  # replaced, not kept
    assert main(["figures", "--runs", str(root), "--out", str(out), "--bootstrap", "200", "--seed", "1"]) == 0
    written = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"]
    assert set(written) == set(figures.OUTPUT_FILES)
    for name in figures.OUTPUT_FILES:
        assert (out / name).stat().st_size > 0
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:4] == b"\x89PNG"

    # Table 1: one row per variant under the paper's score, known means, stds, counts, differences
    t1 = pd.read_csv(out / "table1.csv")
    assert list(t1["variant"]) == list(VARIANTS)
    assert list(t1["score"]) == [PAPER_SCORE[v] for v in VARIANTS] and t1["paper score"].all()
    for _, r in t1.iterrows():
        mean, std = _expected(pairs, r["variant"])
        assert r["ours (measured)"] == pytest.approx(mean) and r["ours (std)"] == pytest.approx(std)
        assert (r["classes"], r["seeds"], r["runs"], r["coverage"]) == (2, 2, 4, "2 of 10 classes")
        assert r["paper"] == PAPER_ABLATION[r["variant"]]
        assert r["difference"] == pytest.approx(mean - PAPER_ABLATION[r["variant"]])
        assert r["ci low"] <= r["ours (measured)"] <= r["ci high"] and r["ci high"] - r["ci low"] > 0
        assert r["setting"] == "CPU scale: not the paper's setting"

    # per class, with CSI's published per-class numbers beside ours
    pc = pd.read_csv(out / "table1_per_class.csv")
    assert len(pc) == 6 and list(pc["class"].unique()) == ["cat", "dog"]  # CIFAR-10 order
    csi_cat = pc[(pc["class"] == "cat") & (pc["variant"] == "csi")].iloc[0]
    cat = [100 * K[("csi", "cat", s)] / pairs for s in (0, 1)]
    assert csi_cat["ours (measured)"] == pytest.approx(np.mean(cat))
    assert csi_cat["ours (std)"] == pytest.approx(np.std(cat)) and csi_cat["seeds"] == 2
    assert csi_cat["CSI (paper)"] == CSI_PAPER_PER_CLASS["cat"]
    assert csi_cat["difference"] == pytest.approx(np.mean(cat) - CSI_PAPER_PER_CLASS["cat"])
    assert pc.loc[pc["variant"] != "csi", "difference"].isna().all()
    md = (out / "table1.md").read_text()
    assert "CSI (paper)" in md and f"{CSI_PAPER_PER_CLASS['dog']:.1f}" in md
    assert f"{_expected(pairs, 'full')[0]:.1f}" in md and "2 of 10 classes" in md

    # ablation: 2 classes x 3 variants + 3 means with the paper's 94.3 / 94.8 / 95.1
    ab = pd.read_csv(out / "ablation.csv")
    assert len(ab) == 9
    means = ab[ab["class"] == "mean"].set_index("variant")
    assert list(means.index) == list(VARIANTS)
    for v in VARIANTS:
        assert means.loc[v, "ours (measured)"] == pytest.approx(_expected(pairs, v)[0])
        assert means.loc[v, "paper"] == PAPER_ABLATION[v]
        assert means.loc[v, "difference"] == pytest.approx(_expected(pairs, v)[0] - PAPER_ABLATION[v])
        assert (means.loc[v, "classes"], means.loc[v, "seeds"]) == (2, 2)
    full_cat = ab[(ab["class"] == "cat") & (ab["variant"] == "full")].iloc[0]
    full = [100 * K[("full", "cat", s)] / pairs for s in (0, 1)]
    assert full_cat["ours (measured)"] == pytest.approx(np.mean(full))
    assert full_cat["ci high"] == pytest.approx(100.0)  # seed 0 separates perfectly, seed 1 nearly

    # FID: only the record made with the real Inception weights is shown
    fid = pd.read_csv(out / "fid.csv")
    assert list(fid["fid"]) == [61.5] and list(fid["variant"]) == ["full"]
    readme = (out / "README.md").read_text()
    assert "3.25" not in (out / "fid.csv").read_text()
    assert "excluded" in readme and "not a FID" in readme and "cifar10-dog-csi+g-cpu-s1" in readme

    # captions: one per file, with provenance
    for name in ("table1.md", "ablation.csv", "fid.csv", "figure2.png"):
        assert f"## {name}" in readme
    assert "CPU scale: not the paper's setting" in readme and "2 classes x 2 seeds (12 runs)" in readme
    assert "the paper's setting: no" in readme and "meaningless" not in readme
    assert "device cpu (" in readme  # the records name their CPU (result.json's device_name)
    assert "cifar10-cat-full-cpu-s0" in readme.split("## figure2.png")[1]  # the default run: cat, seed 0
    assert "FID protocol's mode" in readme and "256 prior samples" in readme  # G as csigen.fid evaluates it


def test_figures_with_one_score_for_every_variant(sweep, tmp_path, capsys):
    root, _ = sweep
    out = tmp_path / "figures"
    assert main(["figures", "--runs", str(root), "--out", str(out), "--bootstrap", "20", "--score", "shared"]) == 0
    t1 = pd.read_csv(out / "table1.csv")
    assert list(t1["variant"]) == list(VARIANTS) and set(t1["score"]) == {"shared"}
    assert list(t1["paper score"]) == [PAPER_SCORE[v] == "shared" for v in VARIANTS]  # csi's paper number: CSI's score
    md, readme = (out / "table1.md").read_text(), (out / "README.md").read_text()
    assert "`shared` for every variant, a like-for-like comparison" in md and "| shared † |" in md
    assert "--score shared" in readme and "score `shared` for every variant, std over seeds, 95% bootstrap" in readme
    assert "{" not in readme  # every caption's fields filled in


def test_coverage_notes_name_only_the_cells_that_miss_classes():
    table = pd.DataFrame({"dataset": ["cifar10", "cifar10"], "variant": ["csi", "full"], "score": ["csi", "csi"],
                          "preset": ["cpu", "cpu"], "coverage": ["10 of 10 classes", "2 of 10 classes"],
                          "complete": [True, False]})
    chosen = pd.DataFrame({"dataset": ["cifar10"] * 3, "variant": ["csi", "full", "full"], "score": ["csi"] * 3,
                           "preset": ["cpu"] * 3, "series": ["csi", "full [csi]", "full [csi]"]})
    assert figures.coverage_notes(table, chosen) == {("cifar10", "full [csi]"): "2 of 10 classes"}


def test_ablation_without_a_class_that_has_every_variant_draws_no_mean(genuine_run, tmp_path, capsys):
    root = tmp_path / "runs"
    _derive(genuine_run, root, variant="csi", cls="cat", seed=0, k=10)
    _derive(genuine_run, root, variant="full", cls="dog", seed=0, k=12)
    assert main(["figures", "--runs", str(root), "--out", str(tmp_path / "out"), "--bootstrap", "20"]) == 0
    ab = pd.read_csv(tmp_path / "out" / "ablation.csv")
    assert "mean" not in set(ab["class"]) and sorted(ab["class"]) == ["cat", "dog"]
    caption = (tmp_path / "out" / "README.md").read_text().split("## ablation.csv")[1]
    assert "no mean yet: no inlier class has every variant" in caption and "0 classes" not in caption


def test_figure2_draws_real_images_above_reconstructions(genuine_run):
    images = figures.figure2_images(genuine_run, n=3, seed=0)
    assert images["inliers"].shape == images["inlier_recon"].shape == (3, 3, 32, 32)
    assert images["outliers"].shape[0] == 3 and len(images["outlier_names"]) == 3
    assert "circle" not in images["outlier_names"] and images["inlier_name"] == "circle"
    assert 0 <= float(images["inlier_recon"].min()) and float(images["inlier_recon"].max()) <= 1
    from csigen import plotting

    fig = plotting.figure2_figure(images["inliers"], images["inlier_recon"], images["outliers"],
                                  images["outlier_recon"], inlier_name="circle",
                                  outlier_names=images["outlier_names"], title="t")
    top = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(top[2:34, 2:34], images["inliers"][0].permute(1, 2, 0).numpy(), atol=1e-6)
    recon = images["inlier_recon"][0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(top[36:68, 2:34], recon, atol=1e-6)  # its reconstruction below it
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == images["outlier_names"]


def test_figure2_in_the_papers_layout_puts_the_reconstructions_beside_the_real_images(genuine_run, tmp_path):
    """layout="paper": per panel the real images' grid (left) and their reconstructions' (right), same places."""
    from csigen import plotting
    from csigen.cli import build_parser

    images = figures.figure2_images(genuine_run, n=5, seed=0)
    fig = plotting.figure2_figure(images["inliers"], images["inlier_recon"], images["outliers"],
                                  images["outlier_recon"], inlier_name="circle", layout="paper")
    assert len(fig.axes) == 4
    tile = lambda ax, i, ncol=3: ax.images[0].get_array()[  # noqa: E731 (tile i of a 3-column grid)
        2 + (i // ncol) * 34: 34 + (i // ncol) * 34, 2 + (i % ncol) * 34: 34 + (i % ncol) * 34]
    for ax_real, ax_rec, real, rec in ((fig.axes[0], fig.axes[1], "inliers", "inlier_recon"),
                                       (fig.axes[2], fig.axes[3], "outliers", "outlier_recon")):
        for i in (0, len(images[real]) - 1):  # 5 inliers (4 outliers, one per other class): 3 columns
            np.testing.assert_allclose(tile(ax_real, i), images[real][i].permute(1, 2, 0).numpy(), atol=1e-6)
            np.testing.assert_allclose(tile(ax_rec, i), images[rec][i].permute(1, 2, 0).numpy(), atol=1e-6)
    assert "(Left)" in fig.axes[0].get_title() and "(Right)" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="layout 'side'.*pairs.*paper"):
        plotting.figure2_figure(images["inliers"], images["inlier_recon"], images["outliers"],
                                images["outlier_recon"], inlier_name="circle", layout="side")
    with pytest.raises(ValueError, match="layout"):  # before any run is read
        figures.write_figures(tmp_path / "nothing-here", tmp_path / "out", figure2_layout="side")
    sub = build_parser()._subparsers._group_actions[0].choices["figures"]
    layout = next(a for a in sub._actions if a.dest == "figure2_layout")
    assert tuple(layout.choices) == plotting.FIGURE2_LAYOUTS and layout.default == "pairs"
    # through figures: the caption says where the reconstructions are
    root = tmp_path / "runs"
    shutil.copytree(genuine_run, root / genuine_run.name)
    figures.write_figures(root, tmp_path / "fig", allow_smoke=True, n_bootstrap=20, figure2_run=genuine_run.name,
                          figure2_layout="paper")
    section = (tmp_path / "fig" / "README.md").read_text().split("## figure2.png")[1]
    assert "as the paper draws them (layout 'paper')" in section


def test_smoke_runs_are_refused_or_marked(genuine_run, tmp_path, capsys, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(genuine_run, root / genuine_run.name)
    _derive(genuine_run, root, variant="csi", cls="dog", seed=0, k=60, preset="smoke")
    (root / genuine_run.name / "fid.json").write_text(json.dumps({
        "fid": 3.25, "samples": 64, "reference": "inlier-train", "weights_sha256": "cd" * 32,
        "real_inception": False, "protocol": "csigen-1", "step": 2, "schema_version": 1}))
    out = tmp_path / "figures"
    assert main(["figures", "--runs", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "smoke" in err and "--allow-smoke" in err and not out.exists()

    titles = []
    real_png = figures._png
    monkeypatch.setattr(figures, "_png", lambda fig: titles.append(fig.get_suptitle()) or real_png(fig))
    (out).mkdir()
    (out / "fid.png").write_bytes(b"from an earlier call")
    written = figures.write_figures(root, out, allow_smoke=True, n_bootstrap=20,
                                    figure2_run=genuine_run.name)
    assert set(written) == set(figures.OUTPUT_FILES) - {"fid.csv", "fid.png"}
    assert not (out / "fid.png").exists()  # a stale figure does not stay beside new ones
    assert len(titles) == 3 and all(figures.SMOKE_MARK in t for t in titles)  # table1, ablation, figure2
    readme = (out / "README.md").read_text()
    captions = readme.split("\n## ")[1:]
    assert len(captions) == 4
    for caption in captions:
        if not caption.startswith("fid"):
            assert figures.SMOKE_MARK in caption
    assert "not a FID" in readme and "3.25" not in readme
    assert figures.SMOKE_MARK in (out / "table1.md").read_text().splitlines()[0]


def test_old_records_and_bad_input(genuine_run, tmp_path, capsys):
    root = tmp_path / "runs"
    _derive(genuine_run, root, variant="csi", cls="cat", seed=0, k=70, old_record=True)
    _derive(genuine_run, root, variant="full", cls="cat", seed=0, k=100)
    chosen = figures.paper_score_rows(figures.load_runs(root))
    old = chosen[chosen["variant"] == "csi"].iloc[0]
    assert old["score"] == "shared" and not old["paper score"] and old["series"] == "csi [shared]"
    table, _ = figures.table1(chosen, figures.Bootstrap(20))
    assert np.isfinite(table["ci low"]).all()  # the old record's single "scores" array is used
    assert main(["figures", "--runs", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["figures", "--runs", str(root), "--out", str(tmp_path / "o"), "--figure2-run",
                 "cifar10-cat-csi-cpu-s0"]) == 2
    assert "needs a 'full' run" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # checked before anything is written
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["figures"]
    assert all(a.help for a in sub._actions if a.dest != "help")


def test_figure2_is_kept_when_its_runs_weights_are_gone(genuine_run, tmp_path):
    """A clone has records, not weights: regenerating keeps the figure2.png drawn from the same run, and says so."""
    root = tmp_path / "runs"
    shutil.copytree(genuine_run, root / genuine_run.name)
    out = tmp_path / "figures"
    figures.write_figures(root, out, allow_smoke=True, n_bootstrap=20, figure2_run=genuine_run.name)
    drawn = (out / "figure2.png").read_bytes()
    for name in ("weights.pt", "checkpoint.pt"):
        (root / genuine_run.name / name).unlink(missing_ok=True)
    for _ in range(2):  # the note is added once
        written = figures.write_figures(root, out, allow_smoke=True, n_bootstrap=20, figure2_run=genuine_run.name)
        assert "figure2.png" in written and (out / "figure2.png").read_bytes() == drawn
        section = (out / "README.md").read_text().split("## figure2.png")[1]
        assert genuine_run.name in section and section.count(figures.FIGURE2_KEPT_NOTE) == 1
    # elsewhere (no earlier figure of that run) a weightless --figure2-run is an error, a default one a note
    with pytest.raises(FileNotFoundError):
        figures.write_figures(root, tmp_path / "other", allow_smoke=True, n_bootstrap=20,
                              figure2_run=genuine_run.name)
    readme = (out / "README.md").read_text()
    commit = (figures.run_info(root / genuine_run.name).commit or "unknown")[:10]
    (out / "README.md").write_text(readme.replace(f"csigen commit {commit}", "csigen commit 0123456789"))
    with pytest.raises(FileNotFoundError):  # same folder name, another commit: another run
        figures.write_figures(root, out, allow_smoke=True, n_bootstrap=20, figure2_run=genuine_run.name)
    (out / "README.md").write_text(readme.replace(genuine_run.name, "another-run"))
    with pytest.raises(FileNotFoundError):  # the figure on disk is another run's
        figures.write_figures(root, out, allow_smoke=True, n_bootstrap=20, figure2_run=genuine_run.name)
    written = figures.write_figures(root, out, allow_smoke=True, n_bootstrap=20)
    assert "figure2.png" not in written and not (out / "figure2.png").exists()
    assert "figure2.png (not written)" in (out / "README.md").read_text()
