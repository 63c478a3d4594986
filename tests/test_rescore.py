"""csigen.rescore: a finished run scored again under other evaluation settings, optionally kept as its record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from csigen.cli import main
from csigen.config import EVAL_FIELDS, ConfigError, make_config
from csigen.parallel import RunLock, RunLockedError
from csigen.rescore import rescore_run
from csigen.train import Trainer, run

SMALL = dict(max_steps=2, batch_size=4, max_train=8, max_test=16, eval_samples=1)


def _config(**overrides):
    return make_config("smoke", dataset="shapes", inlier="stripes", variant="csi", score="csi", device="cpu",
                       **{**SMALL, **overrides})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("rescore") / "run"
    result = run(_config(), out, progress=False)
    return out, result


def _files(out):
    return {name: (out / name).read_bytes() for name in ("result.json", "config.json", "scores.npz")}


def _copy(src, dst):
    dst.mkdir()
    for name in ("result.json", "config.json", "scores.npz", "weights.pt", "history.csv"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_eval_fields_are_not_part_of_what_the_weights_depend_on():
    assert not set(EVAL_FIELDS) & set(_config().model_signature())


def test_the_crop_alone_reaches_the_evaluation(finished, tmp_path, monkeypatch):
    import csigen.train as train_mod

    src, _ = finished
    out = _copy(src, tmp_path / "run")
    before = np.load(out / "scores.npz")["score_csi"]
    seen = []
    original = train_mod.eval_features

    def spy(F, task, config, split, **kw):
        seen.append((split, config.eval_crop_scale))
        return original(F, task, config, split, **kw)

    monkeypatch.setattr(train_mod, "eval_features", spy)
    report = rescore_run(out, device="cpu", save=True, eval_crop_scale=1.0)
    assert report["changed"] == {"eval_crop_scale": [0.54, 1.0]}
    assert seen == [("train", 1.0), ("test", 1.0)]
    after = np.load(out / "scores.npz")["score_csi"]
    assert after.shape == before.shape and not np.allclose(after, before)  # other views, other scores


def test_without_save_nothing_is_written_and_the_same_settings_give_the_runs_numbers(finished):
    out, result = finished
    before = _files(out)
    same = rescore_run(out, device="cpu")
    assert same["changed"] == {} and same["saved"] is False and same["steps"] == 2
    assert same["auroc"] == pytest.approx(result["auroc"])
    assert {n: s["auroc"] for n, s in same["scores"].items()} == pytest.approx(
        {n: s["auroc"] for n, s in result["scores"].items()})
    whole = rescore_run(out, device="cpu", eval_crop_scale=1.0, eval_samples=2)
    assert whole["changed"] == {"eval_crop_scale": [0.54, 1.0], "eval_samples": [1, 2]}
    assert whole["config"]["eval_crop_scale"] == 1.0 and whole["eval_samples"] == 2
    assert _files(out) == before


def test_save_replaces_the_record_keeps_the_training_and_makes_it_the_presets_run(finished, tmp_path):
    src, original = finished
    out = _copy(src, tmp_path / "run")
    history = (out / "history.csv").read_bytes()

    report = rescore_run(out, device="cpu", save=True, eval_crop_scale=1.0)
    record = json.loads((out / "result.json").read_text())
    assert record["auroc"] == pytest.approx(report["auroc"]) and record["score"] == "csi"
    assert record["scores"] == json.loads(json.dumps(report["scores"]))
    assert record["config"]["eval_crop_scale"] == 1.0
    assert json.loads((out / "config.json").read_text()) == record["config"]
    npz = np.load(out / "scores.npz")
    assert np.array_equal(npz["scores"], npz["score_csi"]) and npz["scores"].shape == (16,)
    # the training's part of the record is untouched, its timings included
    for key in ("steps", "train_seconds", "eval_seconds", "seconds", "finished_at", "git_commit", "seed",
                "inlier", "device"):
        assert record[key] == original[key], key
    assert (out / "history.csv").read_bytes() == history
    # what it replaced, and by what
    (entry,) = record["rescored"]
    assert entry["changed"] == {"eval_crop_scale": [0.54, 1.0]}
    assert entry["replaced"]["auroc"] == original["auroc"]
    assert entry["replaced"]["scores"] == {n: s["auroc"] for n, s in original["scores"].items()}
    assert {"at", "git_commit", "csigen_version", "device", "eval_seconds"} <= set(entry)
    assert not (out / "run.lock").exists()

    # loading the run (notebooks, Figure 2) evaluates it as its record says
    trainer = Trainer.from_run(out, device="cpu")
    assert trainer.config.eval_crop_scale == 1.0
    assert trainer.evaluate()["auroc"] == pytest.approx(record["auroc"])

    # the run now counts as the one asking for the new evaluation setting: reported, not trained again
    assert run(_config(eval_crop_scale=1.0), out, progress=False) == record
    # and no longer as the old one: a clear mismatch naming the field
    with pytest.raises(ConfigError, match="eval_crop_scale"):
        run(_config(), out, progress=False)

    # back to the run's own settings: the original numbers again, and a second entry
    rescore_run(out, device="cpu", save=True, eval_crop_scale=0.54)
    back = json.loads((out / "result.json").read_text())
    assert back["auroc"] == pytest.approx(original["auroc"])
    assert [e["changed"] for e in back["rescored"]] == [{"eval_crop_scale": [0.54, 1.0]},
                                                        {"eval_crop_scale": [1.0, 0.54]}]
    assert back["rescored"][1]["replaced"]["auroc"] == pytest.approx(report["auroc"])


@pytest.mark.parametrize("changes,error,message", [
    (dict(lr=0.5), ConfigError, "not an evaluation setting"),
    (dict(eval_crop_scale=0.0), ConfigError, "eval_crop_scale"),
    (dict(score="best"), ConfigError, "score"),
])
def test_bad_changes_are_refused_before_anything_is_written(finished, tmp_path, changes, error, message):
    out = _copy(finished[0], tmp_path / "run")
    before = _files(out)
    with pytest.raises(error, match=message):
        rescore_run(out, device="cpu", save=True, **changes)
    assert _files(out) == before


def _edit_record(out, **fields):
    path = out / "result.json"
    record = json.loads(path.read_text())
    for key, value in fields.items():
        if key.startswith("config."):
            record["config"][key.removeprefix("config.")] = value
        else:
            record[key] = value
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("edit,kwargs,message", [
    ({}, dict(seed=1), "seed 0"),
    ({"config.time_budget_min": 5.0}, {}, "time-budget run"),
    ({"steps": 3}, {}, "not its result.json's run"),
    ({"config.variant": "full"}, {}, "config differs in variant"),
])
def test_save_refuses_what_would_make_a_false_record(finished, tmp_path, edit, kwargs, message):
    out = _copy(finished[0], tmp_path / "run")
    _edit_record(out, **edit)
    before = _files(out)
    with pytest.raises(ValueError, match=message):
        rescore_run(out, device="cpu", save=True, eval_crop_scale=1.0, **kwargs)
    assert _files(out) == before
    rescore_run(out, device="cpu", eval_crop_scale=1.0, **kwargs)  # evaluating without --save still works


def test_save_waits_for_no_one(finished, tmp_path):
    out = _copy(finished[0], tmp_path / "run")
    before = _files(out)
    with RunLock(out):
        with pytest.raises(RunLockedError, match="another worker"):
            rescore_run(out, device="cpu", save=True, eval_crop_scale=1.0)
    assert _files(out) == before


def test_save_needs_a_finished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished run"):
        rescore_run(tmp_path, save=True, eval_crop_scale=1.0)


def test_cli_eval_save(finished, tmp_path, capsys):
    src, original = finished
    out = _copy(src, tmp_path / "run")
    assert main(["eval", "--run", str(out), "--device", "cpu", "--eval-crop-scale", "1", "--save"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out.strip().splitlines()[-1])
    assert "saved" in captured.err and "eval_crop_scale" in captured.err
    record = json.loads((out / "result.json").read_text())
    assert printed["saved"] is True and printed["auroc"] == pytest.approx(record["auroc"])
    assert printed["steps"] == original["steps"] and record["config"]["eval_crop_scale"] == 1.0
    # without --save: printed, not written
    assert main(["eval", "--run", str(out), "--device", "cpu", "--eval-crop-scale", "0.54"]) == 0
    assert json.loads((out / "result.json").read_text()) == record
