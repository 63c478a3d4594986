"""The command line and the results helpers."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from csigen.cli import build_parser, main
from csigen.config import make_config
from csigen.results import (
    PAPER_ABLATION,
    PAPER_TABLE1,
    collect,
    compare_with_paper,
    paper_number,
    run_dir,
    sweep,
)

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


def test_train_prints_result_json_last_then_eval_rescores(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "shapes", "--inlier", "ring", "--variant", "csi", "--preset", "smoke",
                 "--out", str(out), "--no-progress", *SMALL])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert result == json.loads((out / "result.json").read_text())
    assert result["inlier_name"] == "ring" and result["variant"] == "csi"

    code = main(["eval", "--run", str(out), "--score", "per_shift"])
    assert code == 0
    rescored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rescored["score"] == "per_shift" and 0 <= rescored["auroc"] <= 1

    # an existing run is neither overwritten nor silently redone
    code = main(["train", "--dataset", "shapes", "--inlier", "ring", "--variant", "csi", "--preset", "smoke",
                 "--out", str(out), "--no-progress", *SMALL])
    assert code == 2
    assert "--resume" in capsys.readouterr().err
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
    assert len(runs) == 2 and set(runs["inlier_name"]) == {"circle", "star"}
    table = compare_with_paper(runs)
    assert table.loc[0, "tasks"] == 2 and pd.isna(table.loc[0, "paper"])
    assert table.loc[0, "ours (measured)"] == pytest.approx(runs["auroc"].mean())
