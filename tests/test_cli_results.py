"""The command line and the results helpers."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from csigen.cli import build_parser, main
from csigen.config import make_config
from csigen.results import (
    PAPER_ABLATION,
    PAPER_SCORE,
    PAPER_TABLE1,
    collect,
    compare_with_paper,
    paper_number,
    run_dir,
    sweep,
)

SCORE_NAMES = ("shared", "literal", "per_shift", "csi")
FIXTURES = Path(__file__).parent / "fixtures"
SMALL = ["--max-steps", "2", "--batch-size", "4", "--max-train", "8", "--max-test", "16", "--eval-samples", "1"]


def test_help_describes_every_option():
    parser = build_parser()
    for command in ("train", "eval", "sweep", "table"):
        sub = parser._subparsers._group_actions[0].choices[command]
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{command} --{action.dest} has no help"
    out = subprocess.run([sys.executable, "-m", "csigen", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "eval" in out.stdout


def test_train_amp_sets_the_training_precision_and_is_recorded(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "shapes", "--inlier", "ring", "--variant", "csi", "--preset", "smoke",
                 "--out", str(out), "--no-progress", "--amp", "bf16", "--max-steps", "1", "--batch-size", "4",
                 "--max-train", "8", "--max-test", "16", "--eval-samples", "1"])
    assert code == 0
    capsys.readouterr()
    result = json.loads((out / "result.json").read_text())
    assert json.loads((out / "config.json").read_text())["amp"] == "bf16" == result["config"]["amp"]
    # evaluation stays in float32 unless eval_amp (CSI evaluates in float32)
    assert result["eval_precision"] == "fp32"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dataset", "shapes", "--inlier", "ring", "--amp", "half"])
    assert "'half'" in capsys.readouterr().err


def test_train_prints_result_json_last_then_eval_rescores(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "shapes", "--inlier", "ring", "--variant", "csi", "--preset", "smoke",
                 "--out", str(out), "--no-progress", *SMALL])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert result == json.loads((out / "result.json").read_text())
    assert result["inlier_name"] == "ring" and result["variant"] == "csi"
    # every score from one feature pass, in result.json and scores.npz; the top level is the primary score
    assert result["score"] == "shared" and result["eval_precision"] == "fp32"
    assert set(result["scores"]) == set(SCORE_NAMES)
    for name, s in result["scores"].items():
        assert 0 <= s["auroc"] <= 1 and set(s["per_class_auroc"]) == set(result["per_class_auroc"]), name
    assert result["auroc"] == result["scores"]["shared"]["auroc"]
    assert result["per_class_auroc"] == result["scores"]["shared"]["per_class_auroc"]
    npz = np.load(out / "scores.npz")
    assert set(npz.files) == {"scores", "labels", "is_inlier", *(f"score_{n}" for n in SCORE_NAMES)}
    assert np.array_equal(npz["scores"], npz["score_shared"])
    assert npz["score_csi"].shape == npz["labels"].shape and not np.array_equal(npz["score_csi"], npz["scores"])

    code = main(["eval", "--run", str(out), "--score", "per_shift"])
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    rescored = json.loads(printed[-1])
    assert rescored["score"] == "per_shift" and 0 <= rescored["auroc"] <= 1
    assert set(rescored["scores"]) == set(SCORE_NAMES) and "arrays" not in rescored
    assert rescored["auroc"] == rescored["scores"]["per_shift"]["auroc"]
    # same R and seed as the run: the re-scored numbers are the run's
    assert rescored["scores"]["csi"]["auroc"] == pytest.approx(result["scores"]["csi"]["auroc"])
    assert [line.split()[0] for line in printed[-5:-1]] == list(SCORE_NAMES)
    assert "(primary)" in printed[-5 + SCORE_NAMES.index("per_shift")]

    # an existing run is neither overwritten nor silently redone: re-running the command reports it
    code = main(["train", "--dataset", "shapes", "--inlier", "ring", "--variant", "csi", "--preset", "smoke",
                 "--out", str(out), "--no-progress", *SMALL])
    assert code == 0
    captured = capsys.readouterr()
    assert "already finished" in captured.err and json.loads(captured.out.strip().splitlines()[-1]) == result
    code = main(["train", "--dataset", "shapes", "--inlier", "ring", "--variant", "csi", "--preset", "smoke",
                 "--out", str(out), "--no-progress", "--resume", *SMALL])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result


@pytest.mark.parametrize("args,message", [
    (["--dataset", "mnist"], "unknown dataset"),
    (["--inlier", "circel"], "circle"),
    (["--inlier", "99"], "out of range"),
])
def test_bad_input_is_reported_before_training(tmp_path, capsys, args, message):
    code = main(["train", "--preset", "smoke", "--out", str(tmp_path / "x"), "--no-progress", *args])
    assert code == 2
    assert message in capsys.readouterr().err.lower()


def test_missing_cifar_says_how_to_get_it(tmp_path, capsys):
    code = main(["train", "--dataset", "cifar10", "--inlier", "cat", "--no-download", "--data-root",
                 str(tmp_path), "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "download" in err.lower() and str(tmp_path) in err


def test_paper_numbers_are_data():
    assert PAPER_TABLE1["cifar10"]["Ours"] == 95.1 and PAPER_TABLE1["imagenet30"]["CSI"] == 91.6
    assert paper_number("cifar10", "csi+g") == PAPER_ABLATION["csi+g"] == 94.8
    assert paper_number("cifar100", "full") == 90.9 and paper_number("shapes", "full") is None


def test_sweep_skips_finished_runs_and_never_duplicates(tmp_path):
    configs = [make_config("smoke", dataset="shapes", inlier=c, variant="csi", max_steps=1, batch_size=4,
                           max_train=8, max_test=16, eval_samples=1) for c in ("circle", "star")]
    sweep(configs, tmp_path, progress=False)
    stamp = {c.inlier: (run_dir(tmp_path, c) / "result.json").stat().st_mtime_ns for c in configs}
    sweep(configs, tmp_path, progress=False)  # re-run: nothing is redone
    assert stamp == {c.inlier: (run_dir(tmp_path, c) / "result.json").stat().st_mtime_ns for c in configs}
    runs = collect(tmp_path)
    assert len(runs) == 2 * len(SCORE_NAMES) and set(runs["inlier_name"]) == {"circle", "star"}
    assert runs["run"].nunique() == 2 and runs["primary"].sum() == 2
    table = compare_with_paper(runs)
    assert list(table["score"]) == list(SCORE_NAMES)  # one row per score, never averaged together
    assert (table["classes"] == 2).all() and table["paper"].isna().all()
    for _, row in table.iterrows():
        mine = runs[runs["score"] == row["score"]]
        assert row["ours (measured)"] == pytest.approx(mine["auroc"].mean())


# --------------------------------------------------------------------------- #
# evaluation: one feature pass, every score, precision
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def small_trainer():
    from csigen.train import Trainer

    cfg = make_config("smoke", dataset="shapes", inlier="circle", variant="csi", max_steps=1, batch_size=4,
                      max_train=8, max_test=16, eval_samples=1)
    return Trainer(cfg, None, progress=False)


def test_evaluate_scores_everything_from_one_feature_pass(small_trainer, monkeypatch):
    from csigen import score as S

    calls = []
    real = S.extract_features

    def counting(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(S, "extract_features", counting)
    ev = small_trainer.evaluate(score="csi")
    assert len(calls) == 2  # training images, test images: once each, for all four scores
    train_feats, test_feats = calls
    arrays = ev["arrays"]
    for name in SCORE_NAMES:
        expected = S.compute_score(name, test_feats, train_feats).numpy()
        np.testing.assert_allclose(arrays[f"score_{name}"], expected, rtol=1e-6)
        inl = arrays["is_inlier"]
        assert ev["scores"][name]["auroc"] == pytest.approx(S.auroc(expected[inl], expected[~inl]))
    assert ev["score"] == "csi" and ev["auroc"] == ev["scores"]["csi"]["auroc"]
    np.testing.assert_array_equal(arrays["scores"], arrays["score_csi"])
    with pytest.raises(ValueError, match="score must be one of"):
        small_trainer.evaluate(score="simclr")


def test_evaluation_runs_in_fp32_unless_eval_amp(small_trainer, monkeypatch):
    """Even when training uses a low precision, features are extracted in float32 unless eval_amp is on."""
    seen = []
    hook = small_trainer.nets.F.register_forward_pre_hook(lambda m, a: seen.append(
        torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
    monkeypatch.setattr(small_trainer, "amp_dtype", torch.bfloat16)  # as if training ran in bf16
    try:
        assert small_trainer.config.eval_amp is False
        ev = small_trainer.evaluate()
        assert ev["eval_precision"] == "fp32" and seen and set(seen) == {None}
        seen.clear()
        ev = small_trainer.evaluate(amp=True)
        assert ev["eval_precision"] == "bfloat16" and set(seen) == {torch.bfloat16}
        seen.clear()
        monkeypatch.setattr(small_trainer, "config", small_trainer.config.__class__.from_dict(
            {**small_trainer.config.to_dict(), "eval_amp": True}))
        assert small_trainer.evaluate()["eval_precision"] == "bfloat16" and set(seen) == {torch.bfloat16}
    finally:
        hook.remove()


# --------------------------------------------------------------------------- #
# collect / compare_with_paper on written records
# --------------------------------------------------------------------------- #
def _record(root, dataset, inlier, variant, seed, preset="paper", aurocs=None, primary="shared", config=None):
    """A result.json as csigen.train.run writes it (AUROCs as fractions), under root; ``config``: its config."""
    aurocs = aurocs or {n: 0.9 for n in SCORE_NAMES}
    folder = Path(root) / f"{dataset}-{inlier}-{variant}-{preset}-s{seed}"
    folder.mkdir(parents=True)
    record = {"dataset": dataset, "inlier": inlier, "inlier_name": f"c{inlier}", "variant": variant,
              "preset": preset, "seed": seed, "auroc": aurocs[primary], "per_class_auroc": {}, "score": primary,
              "scores": {n: {"auroc": a, "per_class_auroc": {}} for n, a in aurocs.items()},
              "seconds": 1.0, "device": "cpu", "schema_version": 1, **({"config": config} if config else {})}
    (folder / "result.json").write_text(json.dumps(record))
    return folder


def test_collect_one_row_per_run_and_score_and_reads_old_records(tmp_path):
    _record(tmp_path, "cifar10", 3, "full", 0, aurocs={"shared": 0.95, "literal": 0.93, "per_shift": 0.96,
                                                      "csi": 0.97})
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(FIXTURES / "run_v0" / "result.json", old / "result.json")  # first format: no "scores"
    runs = collect(tmp_path)
    assert list(runs.columns) == ["run", "dataset", "data", "inlier", "inlier_name", "variant", "preset", "seed", "score",
                                  "auroc", "primary", "seconds", "device", "schema_version", "recipe"]
    assert (runs["recipe"] == "").all()
    new = runs[runs["dataset"] == "cifar10"].set_index("score")
    assert list(new.index) == list(SCORE_NAMES)
    assert new.loc["literal", "auroc"] == pytest.approx(93.0) and new.loc["csi", "auroc"] == pytest.approx(97.0)
    assert new["primary"].to_dict() == {"shared": True, "literal": False, "per_shift": False, "csi": False}
    assert (new["schema_version"] == 1).all()
    legacy = runs[runs["dataset"] == "shapes"]
    assert len(legacy) == 1
    row = legacy.iloc[0]
    assert row["score"] == "shared" and row["primary"] and row["schema_version"] == 0
    assert row["auroc"] == pytest.approx(100 * 0.48660714285714285) and row["inlier_name"] == "stripes"
    table = compare_with_paper(runs)
    assert len(table) == len(SCORE_NAMES) + 1


def test_runs_of_another_recipe_are_labelled_tabled_apart_and_refused_by_figures(tmp_path):
    """A calibration or other-reading run in the preset's folder is never pooled with the preset's runs."""
    from csigen.config import make_config
    from csigen.figures import MixedRecipesError, load_runs
    from csigen.results import recipe_fields

    base = make_config("cpu-fp32", dataset="cifar10", inlier=0, variant="full").to_dict()
    for c in range(3):
        _record(tmp_path, "cifar10", c, "full", 0, preset="cpu-fp32", config={**base, "inlier": c})
    _record(tmp_path, "cifar10", 3, "full", 0, preset="cpu-fp32", config={**base, "inlier": 3, "train_blur_p": 0.5},
            aurocs={n: 0.5 for n in SCORE_NAMES})
    csi = {**base, "variant": "csi"}  # csi runs that differ only in G's fields and where they ran: one recipe
    _record(tmp_path, "cifar10", 0, "csi", 0, preset="cpu-fp32", config=csi)
    _record(tmp_path, "cifar10", 1, "csi", 0, preset="cpu-fp32",
            config={**csi, "inlier": 1, "gan_every": 4, "device": "cuda", "data_root": "/elsewhere", "score": "csi"})
    assert recipe_fields(csi) == recipe_fields({**csi, "gan_every": 4, "seed": 3, "checkpoint_every_s": 1.0})
    assert recipe_fields({**base, "gan_every": 4}) != recipe_fields(base)  # full has a G
    runs = collect(tmp_path)
    recipe = runs.drop_duplicates("run").set_index(["variant", "inlier"])["recipe"]
    assert recipe[("full", 3)] == "train_blur_p=0.5" and (recipe.drop(("full", 3)) == "").all()
    table = compare_with_paper(runs).set_index(["variant", "score", "recipe"])
    assert table.loc[("full", "shared", ""), "classes"] == 3
    assert table.loc[("full", "shared", "train_blur_p=0.5"), "ours (measured)"] == pytest.approx(50.0)
    assert table.loc[("full", "shared", ""), "ours (measured)"] == pytest.approx(90.0)
    with pytest.raises(MixedRecipesError, match=r"train_blur_p=0\.5.*folder of their own"):
        load_runs(tmp_path)
    shutil.rmtree(tmp_path / "cifar10-3-full-cpu-fp32-s0")
    assert (collect(tmp_path)["recipe"] == "").all() and not load_runs(tmp_path).empty


def test_compare_with_paper_never_mixes_scores_presets_or_variants(tmp_path):
    # csi on all 10 CIFAR-10 classes, two seeds; full on 3 classes; a cpu-preset csi run on the side
    for seed in (0, 1):
        for c in range(10):
            _record(tmp_path, "cifar10", c, "csi", seed, aurocs={"shared": 0.80 + 0.01 * seed, "literal": 0.7,
                                                                 "per_shift": 0.85, "csi": 0.90 + 0.02 * seed})
    for c in range(3):
        _record(tmp_path, "cifar10", c, "full", 0, aurocs={"shared": 0.95, "literal": 0.9, "per_shift": 0.96,
                                                           "csi": 0.5})
    _record(tmp_path, "cifar10", 0, "csi", 0, preset="cpu", aurocs={n: 0.6 for n in SCORE_NAMES})
    table = compare_with_paper(collect(tmp_path))
    assert list(table.columns) == ["dataset", "variant", "score", "preset", "recipe", "classes", "seeds",
                                   "ours (measured)", "ours (std)", "paper", "paper score", "complete", "coverage"]
    assert len(table) == 3 * len(SCORE_NAMES)
    t = table.set_index(["variant", "score", "preset"])
    csi_paper = t.loc[("csi", "csi", "paper")]
    assert csi_paper["ours (measured)"] == pytest.approx(91.0) and csi_paper["ours (std)"] == pytest.approx(1.0)
    assert csi_paper["seeds"] == 2 and csi_paper["classes"] == 10 and csi_paper["complete"]
    assert csi_paper["coverage"] == "10 of 10 classes"
    assert csi_paper["paper"] == PAPER_ABLATION["csi"] == 94.3 and csi_paper["paper score"]
    assert not t.loc[("csi", "shared", "paper"), "paper score"]
    assert t.loc[("csi", "shared", "paper"), "ours (measured)"] == pytest.approx(80.5)
    assert t.loc[("csi", "csi", "cpu"), "ours (measured)"] == pytest.approx(60.0)  # not averaged with paper
    assert t.loc[("csi", "csi", "cpu"), "coverage"] == "1 of 10 classes"
    full = t.loc[("full", "shared", "paper")]
    assert full["ours (measured)"] == pytest.approx(95.0) and full["paper"] == 95.1 and full["paper score"]
    assert not full["complete"] and full["coverage"] == "3 of 10 classes"
    assert t.loc[("full", "csi", "paper"), "ours (measured)"] == pytest.approx(50.0)
    assert PAPER_SCORE == {"csi": "csi", "csi+g": "shared", "full": "shared"}
    # expected_classes overrides the dataset's count
    small = compare_with_paper(collect(tmp_path), expected_classes=3).set_index(["variant", "score", "preset"])
    assert small.loc[("full", "shared", "paper"), "complete"]
    assert small.loc[("full", "shared", "paper"), "coverage"] == "3 of 3 classes"


def test_compare_with_paper_seeds_over_different_classes_and_duplicates(tmp_path):
    """Seeds covering different classes are not averaged per seed; a task run twice counts once."""
    _record(tmp_path / "a", "shapes", 0, "csi", 0, aurocs={"shared": 0.6})
    _record(tmp_path / "a", "shapes", 1, "csi", 0, aurocs={"shared": 0.8})
    _record(tmp_path / "a", "shapes", 0, "csi", 1, aurocs={"shared": 0.7})
    _record(tmp_path / "b", "shapes", 0, "csi", 1, aurocs={"shared": 0.9})  # same task again, other sweep
    _record(tmp_path / "a", "shapes", 2, "full", 0, aurocs={"shared": 0.5})
    table = compare_with_paper(collect(tmp_path)).set_index("variant")
    csi = table.loc["csi"]
    # class 0: seeds 0.6 and mean(0.7, 0.9) = 0.8 -> 0.7; class 1: 0.8; mean over classes 0.75
    assert csi["ours (measured)"] == pytest.approx(75.0) and pd.isna(csi["ours (std)"])
    assert csi["classes"] == 2 and csi["seeds"] == 2
    # shapes has no fixed class count here: the classes found for the dataset (0, 1, 2)
    assert csi["coverage"] == "2 of 3 classes" and not csi["complete"]
    assert table.loc["full", "coverage"] == "1 of 3 classes" and pd.isna(table.loc["full", "paper"])


def test_a_local_cifar10_copy_is_tabled_as_cifar10_and_named_as_a_copy(tmp_path):
    from csigen.data import CIFAR10_CLASSES
    from csigen.results import CIFAR10_COPY, table_dataset

    assert table_dataset({"dataset": "cifar10"}) == ("cifar10", None)
    # CIFAR-100 under the official coarse labels is not the grouping of the paper's numbers: tabled apart
    from csigen.results import CIFAR100_TORCHVISION, paper_number

    assert table_dataset({"dataset": "cifar100", "config": {"cifar100_superclasses": "csi"}}) == ("cifar100", None)
    grouped = {"dataset": "cifar100", "config": {"cifar100_superclasses": "torchvision"}}
    assert table_dataset(grouped) == (CIFAR100_TORCHVISION, None)
    assert paper_number("cifar100", "full") is not None and paper_number(CIFAR100_TORCHVISION, "full") is None
    assert table_dataset({"dataset": "imagefolder", "class_names": list(CIFAR10_CLASSES)}) == ("cifar10", CIFAR10_COPY)
    assert table_dataset({"dataset": "imagefolder", "class_names": ["a", "b"]}) == ("imagefolder", None)
    reordered = list(CIFAR10_CLASSES[1:]) + [CIFAR10_CLASSES[0]]
    assert table_dataset({"dataset": "imagefolder", "class_names": reordered}) == ("imagefolder", None)
    # a record written before "class_names": the classes of its data_root, when that folder is at hand
    for split in ("train", "test"):
        for name in CIFAR10_CLASSES:
            (tmp_path / "copy" / split / name).mkdir(parents=True)
    old = {"dataset": "imagefolder", "config": {"data_root": str(tmp_path / "copy")}}
    assert table_dataset(old) == ("cifar10", CIFAR10_COPY)
    assert table_dataset({"dataset": "imagefolder", "config": {"data_root": str(tmp_path / "gone")}}) == (
        "imagefolder", None)


def test_auroc_of_reads_any_stored_score_and_is_nan_for_a_missing_one():
    import math

    from csigen.results import auroc_of

    record = {"auroc": 0.7, "score": "csi", "scores": {"csi": {"auroc": 0.7}, "shared": {"auroc": 0.5}}}
    assert auroc_of(record, "shared") == 0.5 and auroc_of(record, "csi") == 0.7
    old = {"auroc": 0.6, "score": "shared"}  # a record from before "scores"
    assert auroc_of(old, "shared") == 0.6 and math.isnan(auroc_of(old, "csi"))
