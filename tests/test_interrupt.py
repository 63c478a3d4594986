"""Kill real training processes (SIGKILL) at different moments; nothing is lost.

A run is killed repeatedly - at random moments and in the middle of writing a
checkpoint - and resumed each time; it must end with the same weights and the
same AUROC as a run that was never interrupted, and every checkpoint left
behind must load.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from csigen.checkpoint import load_checkpoint
from csigen.disk import run_weights_file

DRIVER = Path(__file__).parent / "helpers" / "run_until_killed.py"
ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def start(out, *extra):
    return subprocess.Popen([sys.executable, str(DRIVER), str(out), *extra], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(out, *extra):
    proc = start(out, *extra)
    stdout, stderr = proc.communicate(timeout=900)
    return proc.returncode, stdout, stderr


def final_state(out):
    state = load_checkpoint(run_weights_file(out))  # weights.pt once finished (checkpoint.pt if killed just before)
    return state["step"], state["nets"], json.loads((Path(out) / "result.json").read_text())["auroc"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    code, stdout, stderr = finish(out)
    assert code == 0, stderr
    return final_state(out)


def same_nets(a, b):
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key}"


def test_sigkill_during_checkpoint_writes_then_resume(tmp_path, reference):
    out = tmp_path / "run"
    kills = 0
    for nth_write in (2, 3, 4):  # the driver counts every atomic file write of this process
        code, _, _ = finish(out, "--die-in-write", str(nth_write))
        assert code == -signal.SIGKILL
        kills += 1
        leftovers = [p for p in out.iterdir() if p.name.endswith(".tmp")]
        assert leftovers, "the kill should have left a half-written temporary file"
        if (out / "checkpoint.pt").exists():
            load_checkpoint(out / "checkpoint.pt")  # the last complete checkpoint is intact
    code, stdout, stderr = finish(out)
    assert code == 0, stderr
    step, nets, auroc = final_state(out)
    assert kills == 3 and step == reference[0]
    same_nets(nets, reference[1])
    assert auroc == reference[2]


def test_sigkill_at_random_moments_then_resume(tmp_path, reference):
    out = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    for _ in range(3):
        proc = start(out)
        time.sleep(rng.uniform(4.0, 12.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
        if (out / "checkpoint.pt").exists():
            load_checkpoint(out / "checkpoint.pt")
    code, stdout, stderr = finish(out)
    assert code == 0, stderr
    assert kills >= 1
    step, nets, auroc = final_state(out)
    assert step == reference[0]
    same_nets(nets, reference[1])
    assert auroc == reference[2]
    assert "AUROC" in stdout
