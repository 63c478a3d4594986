"""Schema versions of configs and run records; re-running a run folder (issue 9 item 11, issue 13).

``tests/fixtures/run_v0`` is a finished run folder written by csigen 0.1.0
(commit 24e15e5, schema version 0: no ``schema_version``, ``amp`` a bool); its
README says how it was made. Its 100 MB checkpoint is not committed:
``checkpoint_meta.json`` records the checkpoint's structure and the tests
rebuild an old-format checkpoint from it with freshly initialised weights.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from csigen.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from csigen.cli import main
from csigen.config import (
    ENVIRONMENT_FIELDS,
    GENERATIVE_FIELDS,
    SCHEMA_VERSION,
    ConfigError,
    RunConfigMismatchError,
    SchemaVersionError,
    TrainConfig,
    make_config,
    same_run_config,
    upgrade_config_dict,
)
from csigen.disk import run_weights_file
from csigen.results import collect
from csigen.train import Trainer, load_result, run

FIXTURE = Path(__file__).parent / "fixtures" / "run_v0"


def fixture_config() -> dict:
    return json.loads((FIXTURE / "config.json").read_text())


def fixture_meta() -> dict:
    return json.loads((FIXTURE / "checkpoint_meta.json").read_text())


def copy_fixture(tmp_path) -> Path:
    out = tmp_path / "runs" / "old"
    shutil.copytree(FIXTURE, out)
    (out / "README.md").unlink()
    (out / "checkpoint_meta.json").unlink()
    return out


def stamps(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------ configs

def test_fixture_is_schema_version_0():
    """Guard: the fixture must stay the old format (no version key, amp a bool)."""
    assert "schema_version" not in fixture_config()
    assert "schema_version" not in json.loads((FIXTURE / "result.json").read_text())
    meta = fixture_meta()
    assert "schema_version" not in meta["top_level_keys"] and isinstance(meta["config"]["amp"], bool)


def test_config_records_carry_the_schema_version_and_round_trip():
    config = make_config("smoke", dataset="shapes", inlier="stripes", eval_samples=3)
    d = config.to_dict()
    assert d["schema_version"] == SCHEMA_VERSION >= 1
    assert TrainConfig.from_dict(d) == config
    assert TrainConfig.from_dict(json.loads(json.dumps(d))) == config


def test_version_0_config_is_upgraded():
    old = fixture_config()
    config = TrainConfig.from_dict(old)
    assert config.amp == "auto"  # amp=True in 0.1.0: mixed precision on CUDA, off on the CPU
    assert TrainConfig.from_dict({**old, "amp": False}).amp == "off"
    assert config.critic_bn_stats == "update"  # what 0.1.0 did (its frozen-critic passes moved F's BN stats)
    # every other field new since schema 0 takes its default
    assert config.eval_amp is False and config.g_snapshot_every_steps is None and config.time_budget_min is None
    for name, value in old.items():
        if name != "amp":
            assert config.to_dict()[name] == value, name
    assert old == fixture_config()  # the caller's dict is not modified
    assert "schema_version" not in upgrade_config_dict(old)


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 99])
def test_newer_schema_is_refused_with_upgrade_advice(version):
    d = {**make_config("smoke").to_dict(), "schema_version": version}
    with pytest.raises(SchemaVersionError, match=rf"newer csigen \(schema version {version}\).*[Uu]pgrade csigen"):
        TrainConfig.from_dict(d)
    with pytest.raises(SchemaVersionError, match="newer csigen"):
        same_run_config(d, make_config("smoke"))


@pytest.mark.parametrize("version", ["1", -1, 1.5, True])
def test_invalid_schema_version_is_refused(version):
    with pytest.raises(ConfigError, match="invalid schema_version"):
        TrainConfig.from_dict({"schema_version": version})


def test_same_run_config_rules():
    old = fixture_config()
    same = TrainConfig.from_dict(old)
    assert same_run_config(old, same) == []
    # fields new since schema 0 are ignored only while the request leaves them at their defaults
    assert same_run_config(old, dataclasses.replace(same, critic_bn_stats="keep")) == []
    assert same_run_config(old, dataclasses.replace(same, eval_amp=True)) == ["eval_amp"]
    assert same_run_config(old, dataclasses.replace(same, time_budget_min=5.0)) == ["time_budget_min"]
    # how often G snapshots are saved says what a run keeps, not what it computes
    assert same_run_config(old, dataclasses.replace(same, g_snapshot_every_steps=2)) == []
    # a changed field is compared after the upgrade (True -> "auto")
    assert same_run_config(old, dataclasses.replace(same, amp="off")) == ["amp"]
    # environment fields never count; everything else does
    env = {"device": "cpu", "data_root": "/elsewhere", "download": False, "checkpoint_every_s": 1.0,
           "checkpoint_every_steps": None, "g_snapshot_every_steps": 3, "compile": True}
    assert set(env) == set(ENVIRONMENT_FIELDS)
    assert same_run_config(old, dataclasses.replace(same, **env)) == []
    assert same_run_config(old, dataclasses.replace(same, eval_samples=2, max_steps=8)) == ["max_steps",
                                                                                           "eval_samples"]
    # in a record of today's version every field is present, so every field is compared
    new = make_config("smoke", dataset="shapes", inlier="stripes", eval_amp=True)
    assert same_run_config(new.to_dict(), dataclasses.replace(new, eval_amp=False)) == ["eval_amp"]
    assert same_run_config(new.to_dict(), new) == []


# --------------------------------------------------------- the run_v0 fixture

def test_finished_old_run_is_reported_not_redone(tmp_path):
    out = copy_fixture(tmp_path)
    before = stamps(out)
    expected = json.loads((FIXTURE / "result.json").read_text())
    result = run(TrainConfig.from_dict(fixture_config()), out, progress=False)
    assert result == expected
    # the same run as today's code would configure it, on another device: still reported
    result = run(dataclasses.replace(TrainConfig.from_dict(fixture_config()), device="cpu", critic_bn_stats="keep"),
                 out, progress=False)
    assert result == expected
    assert stamps(out) == before and not (out / "checkpoint.pt").exists()
    # another configuration in the same folder: a clear error, nothing written
    with pytest.raises(RunConfigMismatchError, match=r"eval_samples: the run has 1, requested 3.*--force.*--out"):
        run(dataclasses.replace(TrainConfig.from_dict(fixture_config()), eval_samples=3), out, progress=False)
    assert stamps(out) == before


def test_old_records_are_collected(tmp_path):
    out = copy_fixture(tmp_path)
    runs = collect(tmp_path / "runs")
    expected = json.loads((FIXTURE / "result.json").read_text())
    assert len(runs) == 1  # an old record has one score: its own
    row = runs.iloc[0]
    assert row["run"] == str(out) and row["inlier_name"] == "stripes" and row["variant"] == "full"
    assert row["score"] == "shared" and row["auroc"] == pytest.approx(100 * expected["auroc"])
    assert load_result(out) == expected
    arrays = np.load(out / "scores.npz")
    assert arrays["scores"].shape == arrays["labels"].shape == arrays["is_inlier"].shape == (64,)
    history = pd.read_csv(out / "history.csv")
    assert list(history["step"]) == [1, 2, 3, 4]


def old_format_checkpoint(step: int) -> dict:
    """A csigen 0.1.0 checkpoint of the fixture's run at ``step``: its recorded structure, fresh weights."""
    meta = fixture_meta()
    fresh = Trainer(TrainConfig.from_dict(meta["config"]), None, progress=False).state_dict()
    state = {
        "format_version": meta["format_version"],
        "config": meta["config"],
        "signature": meta["signature"],
        **meta["scalars"],
        "step": step,
        "train_seconds": sum(h["seconds"] for h in meta["history"][:step]),
        "nets": {name: fresh["nets"][name] for name in meta["nets"]},
        "optimizers": {name: fresh["optimizers"][name] for name in meta["optimizers"]},
        "scaler": meta["scaler"],
        "rng": {name: fresh["rng"][name] for name in meta["rng_keys"]},
        "history": meta["history"][:step],
    }
    assert list(state) == meta["top_level_keys"]
    return state


def test_old_checkpoint_loads_and_resumes(tmp_path):
    meta = fixture_meta()
    out = tmp_path / "interrupted"
    out.mkdir()
    shutil.copy(FIXTURE / "config.json", out / "config.json")
    torch.save(old_format_checkpoint(step=3), out / "checkpoint.pt")  # as 0.1.0 wrote it

    state = load_checkpoint(out / "checkpoint.pt")
    assert state["schema_version"] == 0 and state["step"] == 3
    loaded = Trainer.from_run(out, device="cpu")
    assert loaded.step == 3 and loaded.config.amp == "auto" and loaded.config.critic_bn_stats == "update"

    # a different configuration is refused before anything is written
    before = stamps(out)
    with pytest.raises(RunConfigMismatchError, match="interrupted run.*max_steps: the run has 4, requested 6"):
        run(make_config("smoke", dataset="shapes", inlier="stripes", variant="full", max_steps=6), out,
            progress=False)
    assert stamps(out) == before

    # the same run (today's defaults for the fields 0.1.0 did not have) resumes at step 3 and does
    # the last step, a GAN block (gan_every=2), so every network and optimiser state is used
    config = dataclasses.replace(TrainConfig.from_dict(meta["config"]), critic_bn_stats="keep", device="cpu")
    result = run(config, out, progress=False)
    assert result["steps"] == 4 and result["schema_version"] == SCHEMA_VERSION
    history = pd.read_csv(out / "history.csv")
    assert list(history["step"]) == [1, 2, 3, 4]
    kept = pd.DataFrame(meta["history"][:3])
    pd.testing.assert_frame_equal(history.iloc[:3][kept.columns].reset_index(drop=True), kept,
                                  check_dtype=False)  # steps 1-3 come from the old checkpoint, not retrained
    assert json.loads((out / "config.json").read_text())["schema_version"] == SCHEMA_VERSION
    # a finished run keeps its weights only (csigen.disk): weights.pt, in today's schema
    assert not (out / "checkpoint.pt").exists()
    assert load_checkpoint(run_weights_file(out))["schema_version"] == SCHEMA_VERSION
    # and the finished run is now reported
    assert run(config, out, progress=False) == result


def test_newer_records_are_refused(tmp_path):
    config = make_config("smoke", dataset="shapes", inlier="stripes")
    out = tmp_path / "future"
    out.mkdir()
    (out / "result.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1,
                                                 "config": config.to_dict()}))
    with pytest.raises(SchemaVersionError, match="result.json was written by a newer csigen"):
        run(config, out, progress=False)
    save_checkpoint(tmp_path / "c.pt", {"config": config.to_dict()})
    path = tmp_path / "c.pt"
    state = torch.load(path, weights_only=True)
    torch.save({**state, "schema_version": SCHEMA_VERSION + 1}, path)
    with pytest.raises(CheckpointError, match="newer csigen.*[Uu]pgrade"):
        load_checkpoint(path)


# ------------------------------------------------------- re-running the CLI

def test_rerunning_the_train_command(tmp_path, capsys):
    """Issue 13: re-running the main job's command resumes, then reports; another config is an error."""
    out = tmp_path / "demo"
    args = ["train", "--dataset", "shapes", "--inlier", "stripes", "--variant", "csi", "--preset", "smoke",
            "--max-steps", "2", "--max-train", "8", "--max-test", "16", "--out", str(out), "--no-progress"]
    # an interrupted run: what `train` leaves when killed after its first checkpoint
    config = make_config("smoke", dataset="shapes", inlier="stripes", variant="csi", max_steps=2, max_train=8,
                         max_test=16)
    (out).mkdir()
    (out / "config.json").write_text(json.dumps(config.to_dict()))
    Trainer(config, out, progress=False).fit(stop_after_steps=1)
    first = pd.read_csv(out / "history.csv")

    assert main(args) == 0  # resumes (no --resume needed)
    captured = capsys.readouterr()
    assert "interrupted run" in captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["steps"] == 2 and result == json.loads((out / "result.json").read_text())
    history = pd.read_csv(out / "history.csv")
    pd.testing.assert_frame_equal(history.iloc[:1], first)  # step 1 (its timing included) was not redone

    before = stamps(out)
    for extra in ([], ["--resume"]):  # the same command again: reported, exit 0, nothing rewritten
        assert main(args + extra) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out.strip().splitlines()[-1]) == result
        assert "already finished" in captured.err
    assert stamps(out) == before

    other = [a if a != "2" else "1" for a in args]  # --max-steps 1: another configuration
    for extra in ([], ["--resume"]):
        assert main(other + extra) == 2
        err = capsys.readouterr().err
        assert "max_steps: the run has 2, requested 1" in err and "--force" in err and "--out" in err
    assert stamps(out) == before

    assert main(other + ["--force"]) == 0  # --force redoes it
    redone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert redone["steps"] == 1 and redone["config"]["max_steps"] == 1
    assert redone == json.loads((out / "result.json").read_text())


def test_a_csi_run_is_the_same_run_whatever_its_generative_fields(tmp_path):
    gan = dict(gan_every=3, gan_batch_size=2, z_dim=16, g_channels=8, d_channels=8, e_channels=8,
               gan_lr=1e-3, gan_betas=(0.5, 0.9), gan_loss="hinge", rec_lambda=10.0, rec_reduction="sum",
               critic_bn_stats="update", joint_bn_stats="keep")
    assert set(gan) == set(GENERATIVE_FIELDS)
    kw = dict(dataset="shapes", inlier="stripes", max_steps=3, checkpoint_every_steps=None)
    csi, full = (make_config("smoke", variant=v, **kw) for v in ("csi", "full"))
    assert same_run_config(csi.to_dict(), dataclasses.replace(csi, **gan)) == []
    # with a G they are other runs; and a csi record is never a full run
    in_order = [f.name for f in dataclasses.fields(TrainConfig) if f.name in gan]
    assert same_run_config(full.to_dict(), dataclasses.replace(full, **gan)) == in_order
    assert "variant" in same_run_config(csi.to_dict(), dataclasses.replace(full, **gan))
    # the claim behind the rule: a csi run trains F alike whatever the generative fields say
    weights = []
    for config in (csi, dataclasses.replace(csi, **gan)):
        trainer = Trainer(config, tmp_path / str(len(weights)), progress=False)
        for _ in range(3):
            trainer.run_step()
        weights.append(trainer.nets.F.state_dict())
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=0, msg=name)
