"""Disk space (issue 13): slim finished runs, sweep estimates, and a clear message when the disk is full.

* A finished run keeps its networks in ``weights.pt`` and drops ``checkpoint.pt``
  (optimiser state) unless asked to keep it; ``Trainer.from_run``, ``eval`` and
  ``fid`` give the same answers on it as on the kept checkpoint, and a request
  to resume it says plainly that it is finished.
* The estimate of a run's size (from parameter counts) matches the files a run
  writes; a sweep that does not fit says so before it writes anything.
* A write that fails for lack of space (errno 28, faked) names the file, the
  space needed, that the last checkpoint is intact and how to resume; the run
  then resumes and ends as an uninterrupted one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pandas as pd
import pytest
import torch

from csigen import checkpoint, disk, fid, models
from csigen.cli import main
from csigen.config import make_config
from csigen.results import run_dir, sweep
from csigen.train import Callback, Trainer, run

SMALL = {"dataset": "shapes", "inlier": "stripes", "variant": "csi+g", "max_steps": 2, "batch_size": 2,
         "gan_every": 2, "max_train": 8, "max_test": 16, "eval_samples": 1, "device": "cpu"}
TRAIN_ARGS = ["train", "--dataset", "shapes", "--inlier", "stripes", "--variant", "csi", "--preset", "smoke",
              "--max-steps", "4", "--max-train", "8", "--max-test", "16", "--batch-size", "2", "--device", "cpu",
              "--no-progress"]
LAYER = "64"  # a small Inception layer of the offline, randomly initialised weights (not a FID)


def stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same csi+g smoke run twice: finished slim (default) and with keep_checkpoint=True."""
    root = tmp_path_factory.mktemp("slim")
    config = make_config("smoke", **SMALL)
    slim = run(config, root / "slim", progress=False)
    kept = run(config, root / "kept", progress=False, keep_checkpoint=True)
    return config, root / "slim", root / "kept", slim, kept


def test_a_finished_run_keeps_its_weights_only(runs):
    _, slim, kept, result, kept_result = runs
    assert (slim / "weights.pt").is_file() and not (slim / "checkpoint.pt").exists()
    assert (kept / "checkpoint.pt").is_file() and not (kept / "weights.pt").exists()
    assert not [p for p in slim.iterdir() if p.name.endswith(".tmp")]
    state = checkpoint.load_checkpoint(slim / "weights.pt")
    assert set(state) == {"format_version", "schema_version", *disk.WEIGHTS_KEYS}  # no optimisers, rng, history
    full = checkpoint.load_checkpoint(kept / "checkpoint.pt")
    assert state["step"] == full["step"] == result["steps"] == 2
    for name, net in full["nets"].items():
        assert all(torch.equal(net[k], state["nets"][name][k]) for k in net), name
    assert (slim / "weights.pt").stat().st_size < 0.6 * (kept / "checkpoint.pt").stat().st_size
    assert result["auroc"] == kept_result["auroc"]


def test_from_run_and_eval_work_on_a_slim_run(runs, capsys):
    config, slim, kept, result, _ = runs
    a, b = Trainer.from_run(slim, config=config), Trainer.from_run(kept, config=config)
    assert a.step == b.step == 2 and a.total_steps == b.total_steps
    for name, net in b.nets.items():
        other = dict(a.nets.items())[name].state_dict()
        assert all(torch.equal(v, other[k]) for k, v in net.state_dict().items()), name
    pd.testing.assert_frame_equal(a.history_frame(), pd.read_csv(slim / "history.csv"))  # read from history.csv
    assert main(["eval", "--run", str(slim), "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["auroc"] == result["auroc"] and evaluated["steps"] == 2  # the trained weights, not fresh ones


def test_fid_command_on_a_slim_run(runs, tmp_path, capsys):
    _, slim, _, _, _ = runs
    weights = fid.make_offline_inception_weights(tmp_path / "random-inception.pth")
    args = ["fid", "--run", str(slim), "--weights", str(weights), "--samples", "16", "--max-reference", "8",
            "--feature-layer", LAYER, "--bn-samples", "32", "--batch-size", "16", "--device", "cpu"]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["source"] == "weights.pt" and record["step"] == 2 and record["not_a_fid"] is True
    assert json.loads((slim / fid.FID_FILE).read_text()) == record


def test_resuming_a_slim_finished_run_says_it_is_finished(runs, tmp_path, capsys):
    config, slim, _, result, _ = runs
    out = tmp_path / "copy"
    shutil.copytree(slim, out)
    before = stamps(out)
    with pytest.raises(disk.FinishedRunError, match=r"holds a finished run.*weights\.pt.*cannot be resumed"):
        Trainer(config, out, progress=False).fit(resume=True)
    assert run(config, out, progress=False) == result  # the same request again: reported, nothing loaded
    assert stamps(out) == before

    (out / "result.json").unlink()  # a finished run without its record: not retrained silently
    before = stamps(out)
    with pytest.raises(disk.FinishedRunError, match=r"--force.*--out.*keep_checkpoint"):
        run(config, out, progress=False)
    assert stamps(out) == before
    redone = run(config, out, progress=False, force=True)  # force: trained again from step 0
    assert redone["steps"] == 2 and redone["auroc"] == result["auroc"]


def test_the_cli_reports_a_slim_finished_run(tmp_path, capsys):
    out = tmp_path / "demo"
    args = TRAIN_ARGS[:] + ["--out", str(out)]
    args[args.index("4")] = "1"  # --max-steps 1
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not (out / "checkpoint.pt").exists() and (out / "weights.pt").exists()
    for extra in ([], ["--resume"]):
        assert main(args + extra) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out.strip().splitlines()[-1]) == first
        assert "already finished" in captured.err and "weights.pt" in captured.err and "--force" in captured.err
    assert main(args + ["--force", "--keep-checkpoint"]) == 0
    assert (out / "checkpoint.pt").exists() and not (out / "weights.pt").exists()  # one set of weights


class _Interrupted(Exception):
    pass


class _InterruptAt(Callback):
    def __init__(self, step: int):
        self.at = step

    def on_step(self, trainer, record):
        if trainer.step >= self.at:
            raise _Interrupted


def test_a_forced_run_discards_the_old_records_before_it_trains(runs, tmp_path):
    """--force used to leave the old result.json in place while the run trained again: interrupted, the
    folder then read as the old finished run (and eval scored new weights against old scores)."""
    config, slim, _, result, _ = runs
    from csigen.figures import FIGURE2_FEATURES_FILE

    assert {fid.FID_FILE, fid.FID_RECORDS_FILE, FIGURE2_FEATURES_FILE} <= set(disk.RECORD_FILES)
    out = tmp_path / "copy"
    shutil.copytree(slim, out)
    for name in (fid.FID_FILE, fid.FID_RECORDS_FILE, FIGURE2_FEATURES_FILE):
        (out / name).write_text("{}")
    (out / fid.G_SNAPSHOT_DIR).mkdir(exist_ok=True)
    (out / fid.G_SNAPSHOT_DIR / "step_000009.pt").write_bytes(b"the old run's G")
    with pytest.raises(_Interrupted):
        run(config, out, progress=False, force=True, resume=False, callbacks=[_InterruptAt(1)])
    left = {p.name for p in out.iterdir()}
    assert not left & {*disk.RECORD_FILES, disk.WEIGHTS_FILE, fid.G_SNAPSHOT_DIR}, left
    assert "config.json" in left
    steps = []
    redone = run(config, out, progress=False, callbacks=[_Recorder(steps)])  # trained, not "already finished"
    assert steps and redone["steps"] == 2 and redone["auroc"] == result["auroc"]
    assert json.loads((out / "result.json").read_text()) == redone


class _Recorder(Callback):
    def __init__(self, steps: list):
        self.steps = steps

    def on_step(self, trainer, record):
        self.steps.append(trainer.step)


def test_continue_trains_a_kept_run_further_and_refuses_a_slim_one(tmp_path, capsys):
    kept, slim = tmp_path / "kept", tmp_path / "slim"
    two = TRAIN_ARGS[:]
    two[two.index("4")] = "2"  # --max-steps 2
    assert main(two + ["--out", str(kept), "--keep-checkpoint"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    (kept / fid.FID_FILE).write_text("{}")  # a measurement of the 2-step G: stale once G trains on
    before = stamps(kept)
    refused = {"another seed": (TRAIN_ARGS + ["--seed", "1"], "seed"),
               "no longer": (two, "is at step 2 and this configuration trains 2 steps"),
               "a time budget": (TRAIN_ARGS + ["--time-budget", "1"], "time-budget")}
    for why, (args, message) in refused.items():  # checked before anything is deleted
        assert main(args + ["--out", str(kept), "--continue"]) == 2, why
        assert message in capsys.readouterr().err, why
        assert stamps(kept) == before, why
    assert main(TRAIN_ARGS + ["--out", str(kept), "--continue"]) == 0  # --max-steps 4
    further = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert further["steps"] == 4 and further["config"]["max_steps"] == 4
    assert list(pd.read_csv(kept / "history.csv")["step"]) == [1, 2, 3, 4]  # steps 1-2 kept, 3-4 added
    assert not (kept / fid.FID_FILE).exists() and (kept / "weights.pt").is_file()  # finished slim this time

    assert main(two + ["--out", str(slim)]) == 0
    capsys.readouterr()
    before = stamps(slim)
    assert main(TRAIN_ARGS + ["--out", str(slim), "--continue"]) == 2
    err = capsys.readouterr().err
    assert "nothing to continue" in err and "weights.pt" in err and "--keep-checkpoint" in err and "--force" in err
    assert main(TRAIN_ARGS + ["--out", str(slim), "--continue", "--force"]) == 2
    assert "contradict" in capsys.readouterr().err
    assert stamps(slim) == before


# ------------------------------------------------------------------------------------------ estimates

def test_the_estimate_matches_the_files_a_run_writes(runs):
    config, slim, kept, _, _ = runs
    est = disk.estimate_run_disk(config)
    assert est.weights == pytest.approx((slim / "weights.pt").stat().st_size, rel=0.01)
    assert est.checkpoint == pytest.approx((kept / "checkpoint.pt").stat().st_size, rel=0.01)
    folder = sum(p.stat().st_size for p in slim.rglob("*") if p.is_file() and p.parent == slim
                 and not p.name.startswith("fid"))
    assert folder <= est.finished <= folder + 1_000_000
    assert est.peak >= 2 * est.checkpoint and est.steps == 2
    assert disk.estimate_run_disk(config, keep_checkpoint=True).finished == est.finished + est.checkpoint - est.weights
    # F alone at CSI's sizes: ResNet-18's weights and as much again of LARS momentum (float32)
    csi = disk.estimate_run_disk(make_config("paper", dataset="cifar10", inlier="cat", variant="csi"))
    with torch.device("meta"):
        n_f = sum(p.numel() for p in models.ResNet18(variant="cifar", num_shifts=4).parameters())
    assert csi.optimizer == 4 * n_f and 4 * n_f < csi.weights < 4.01 * n_f


def test_a_sweep_estimates_only_what_is_left_to_do(tmp_path):
    configs = [make_config("smoke", dataset="shapes", inlier=c, variant=v, max_steps=2)
               for c in ("stripes", "square") for v in ("csi", "full")]
    per_run = {v: disk.estimate_run_disk(configs[i]) for i, v in ((0, "csi"), (1, "full"))}
    est = disk.estimate_sweep_disk(configs, tmp_path)
    assert (est.runs, est.to_do) == (4, 4)
    assert est.finished_bytes == 2 * per_run["csi"].finished + 2 * per_run["full"].finished
    assert est.peak_bytes == est.finished_bytes + per_run["full"].peak - per_run["full"].finished
    assert est.per_variant == {"csi": per_run["csi"].finished, "full": per_run["full"].finished}
    done = run_dir(tmp_path, configs[1])
    done.mkdir(parents=True)
    (done / "result.json").write_text("{}")  # a finished run needs nothing more
    assert disk.estimate_sweep_disk(configs, tmp_path).finished_bytes == est.finished_bytes - per_run["full"].finished
    assert "3 of 4 runs to do" in disk.estimate_sweep_disk(configs, tmp_path).describe()


def test_a_sweep_that_does_not_fit_stops_before_writing(tmp_path, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5_000_000, 5_000_000))
    configs = [make_config("smoke", dataset="shapes", inlier="stripes", variant="csi", max_steps=1)]
    root = tmp_path / "sweep"
    with pytest.raises(disk.NotEnoughSpaceError) as info:
        sweep(configs, root, progress=False)
    message = str(info.value)
    assert "not enough disk space" in message and "5.0 MB free" in message and "--no-disk-check" in message
    assert info.value.errno == errno.ENOSPC and not root.exists()
    code = main(["sweep", "--dataset", "shapes", "--inliers", "stripes", "--variants", "csi", "--out", str(root),
                 "--no-progress"])
    assert code == 2 and "not enough disk space" in capsys.readouterr().err and not root.exists()


# ------------------------------------------------------------------------------------------ a full disk

def _fail_nth_checkpoint_write(monkeypatch, n: int) -> dict:
    """Make the n-th write of a torch file (checkpoint.pt / weights.pt: zip archives) fail with ENOSPC."""
    real = checkpoint._write_and_sync
    seen = {"torch_writes": 0}

    def write(fd, data):
        if data[:2] == b"PK":
            seen["torch_writes"] += 1
            if seen["torch_writes"] == n:
                os.close(fd)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(checkpoint, "_write_and_sync", write)
    return seen


def test_a_full_disk_names_the_file_keeps_the_checkpoint_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = TRAIN_ARGS + ["--out", str(out)]  # smoke: a checkpoint every 2 steps, 4 steps
    _fail_nth_checkpoint_write(monkeypatch, 2)  # the checkpoint of step 4; step 2's is on disk
    assert main(args) == 2
    err = capsys.readouterr().err
    path = out / "checkpoint.pt"
    assert f"while writing {path}" in err and "needs" in err and "MB free" in err
    assert "the previous checkpoint.pt is intact" in err and "last checkpoint" in err
    assert "run the same command" in err and "continues from its last checkpoint" in err
    assert checkpoint.load_checkpoint(path)["step"] == 2  # intact, loadable
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    first = pd.read_csv(out / "history.csv")

    monkeypatch.undo()  # space freed: the same command resumes and finishes
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "interrupted run" in captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["steps"] == 4 and (out / "weights.pt").exists()
    pd.testing.assert_frame_equal(pd.read_csv(out / "history.csv").iloc[:2], first.iloc[:2])


def test_a_full_disk_before_the_first_checkpoint_says_the_run_starts_over(tmp_path, monkeypatch):
    config = make_config("smoke", **{**SMALL, "variant": "csi"})
    _fail_nth_checkpoint_write(monkeypatch, 1)
    with pytest.raises(disk.DiskFullError) as info:
        Trainer(config, tmp_path, progress=False).fit()
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert info.value.filename == str(tmp_path / "checkpoint.pt") and info.value.needed > 40_000_000
    assert "no checkpoint yet: it will start from step 0" in str(info.value)
    assert "checkpoint.pt was not written" in str(info.value)


def test_a_full_disk_for_any_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    checkpoint.atomic_write_text(target, "old")

    def no_space(fd, data):
        os.close(fd)
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(checkpoint, "_write_and_sync", no_space)
    with pytest.raises(disk.DiskFullError, match=r"over its quota while writing .*result\.json.*needs 5 B free"):
        checkpoint.atomic_write_text(target, "newer")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    def denied(fd, data):
        os.close(fd)
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(checkpoint, "_write_and_sync", denied)
    with pytest.raises(PermissionError) as info:  # other errors pass through unchanged
        checkpoint.atomic_write_text(target, "newer")
    assert not isinstance(info.value, disk.DiskFullError) and target.read_text() == "old"
