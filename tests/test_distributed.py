"""One run on several processes (csigen.distributed): 2 gloo processes on the CPU equal one process.

The equality test trains two steps of ``csi`` and ``full`` (every update of
Algorithm 1, the frozen critics included), in float32 and in CPU bf16
autocast, on two processes spawned with the gloo backend, and computes a
one-process reference "the same way": the same trainer with the global batch
(``batch_size`` is global), each network run on each process's rows
separately (CPU K-process runs normalise BatchNorm per process), each
process's augmentations and latents drawn from its own generators
(:func:`csigen.distributed.step_seed`), and the NT-Xent rows in the all-gather's
order (process-major). Losses of every update, gradients and weights after the
steps must agree to 1e-5 (``full`` in bf16: the losses, to 2e-3; see
``LOSSES_ONLY``). F is a small stand-in for ResNet-18 with BatchNorm (16-bit
ResNet-18 on a CPU is slow; see tests/test_precision.py), G, D, E at 8 channels.
A 2-process run resumed from its checkpoint continues as the uninterrupted one.

A torchrun smoke run (2 gloo processes, ``python -m torch.distributed.run``)
must end with one result: one result.json with world_size 2, printed once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import csigen.augment
import csigen.losses
from csigen import distributed, models
from csigen.config import make_config
from csigen.data import load_task
from csigen.train import Trainer

K = 2  # processes
STEPS = 2  # the second step runs DDP's second iteration (rebuilt buckets, finished reductions)
CASES = {"csi-fp32": ("csi", "off"), "full-fp32": ("full", "off"), "csi-bf16": ("csi", "bf16"),
         "full-bf16": ("full", "bf16")}
TOLERANCE = 1e-5
#: full in bf16: losses only, to 2e-3 (bf16 keeps 8 bits: 4e-3 per rounding). Each process rounds its weight
#: gradients to 16 bits per autocast region (autocast casts a weight once per region and sums the gradients
#: of G's two passes, D's three, ... in bf16), which one process cannot reproduce; the gradients then differ
#: at bf16 resolution, and Adam's first steps (+-lr per element) turn that into weights that differ as much.
#: csi in bf16 (one pass of F per region) and full in float32 are compared to 1e-5, gradients and weights too.
LOSSES_ONLY = {"full-bf16": 2e-3}
NOISE = 1e-6  # gradients below this are rounding noise around an exact zero (see _assert_equal)


def TinyF(num_shifts=4, simclr_dim=128):  # noqa: N802 - used as a class
    # no conv bias: a bias before BatchNorm has an exact-zero gradient, whose rounding noise Adam amplifies
    return models.SmallF(num_shifts=num_shifts, simclr_dim=simclr_dim, conv_bias=False)
class SmallTrainer(Trainer):
    def _build_networks(self):
        nets = super()._build_networks()
        nets.F = TinyF(num_shifts=self.config.num_shifts)
        return nets


def _config(variant: str, amp: str, **kw):
    base = dict(dataset="shapes", inlier="circle", variant=variant, amp=amp, device="cpu", epochs=10,
                max_steps=4, batch_size=4, gan_every=1, max_train=16, max_test=32, eval_samples=1,
                g_channels=8, d_channels=8, e_channels=8, z_dim=16, checkpoint_every_steps=None,
                # NCHW: the 1e-5 equality compares convolutions over B and B/2 rows, whose rounding in channels_last
                # layout depends on the batch size (oneDNN picks other kernels); the algorithm under test is the same
                channels_last=False)
    base.update(kw)
    return make_config("smoke", **base)


def _task():
    return load_task("shapes", "circle", max_train=16, max_test=32)


def _snapshot(trainer) -> dict:
    """Losses of every step, and every network's gradients and weights (no BatchNorm running statistics)."""
    out = {"history": [dict(r) for r in trainer.history], "grads": {}, "params": {}}
    for name, net in trainer.nets.items():
        net = distributed.unwrap(net)
        net = getattr(net, "net", net)  # the reference's _PerProcess wrapper
        for key, p in net.named_parameters():
            out["params"][f"{name}.{key}"] = p.detach().clone()
            if p.grad is not None:
                out["grads"][f"{name}.{key}"] = p.grad.detach().clone()
    return out


# --------------------------------------------------------------------------- #
# The K processes
# --------------------------------------------------------------------------- #
def _worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=K)
    try:
        out = Path(out)
        task = _task()
        for name, (variant, amp) in CASES.items():
            trainer = SmallTrainer(_config(variant, amp), None, task=task, progress=False)
            trainer.fit(resume=False, stop_after_steps=STEPS)
            if rank == 0:
                torch.save(_snapshot(trainer), out / f"{name}.pt")
        # resume: one step, checkpoint (rank 0 writes), a new trainer on every process resumes the second
        run_dir = out / "resumed"
        first = SmallTrainer(_config("full", "off"), run_dir, task=task, progress=False)
        first.fit(resume=False, stop_after_steps=1)
        second = SmallTrainer(_config("full", "off"), run_dir, task=task, progress=False)
        second.fit(resume=True, stop_after_steps=STEPS - 1)
        if rank == 0:
            torch.save(_snapshot(second), out / "resumed.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """Run every case on K spawned gloo processes; rank 0's snapshots by case name."""
    out = tmp_path_factory.mktemp("ddp")
    ctx = mp.start_processes(_worker, args=(str(out / "store"), str(out)), nprocs=K, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-process run did not finish in 300 s (a process waiting in a collective?)")
    return {p.stem: torch.load(p, weights_only=False) for p in out.glob("*.pt")} | {"dir": out}


# --------------------------------------------------------------------------- #
# The one-process reference
# --------------------------------------------------------------------------- #
def _process_major(n: int, b: int) -> torch.Tensor:
    """Row order putting each process's rows together: blocks of K * b rows, process r owning b of each."""
    return torch.arange(n).view(-1, K, b).transpose(0, 1).reshape(-1)


def _per_process(fn, rows: int, generators=None):
    """``fn`` applied to each process's rows separately (with that process's generator), outputs in place."""

    def apply(x, **kwargs):
        order = _process_major(x.shape[0], rows)
        parts = x[order].chunk(K)
        if generators is not None:  # not the one-process run's generator: each process has its own
            kwargs.pop("generator", None)
            outs = [fn(part, generator=g, **kwargs) for part, g in zip(parts, generators)]
        elif torch.is_autocast_enabled("cpu"):
            # each process casts the weights to 16 bits for its own pass (autocast's weight cache is per
            # process), so their gradients are rounded per process, then summed in float32 as DDP does
            dtype = torch.get_autocast_dtype("cpu")
            outs = []
            for part in parts:
                with torch.autocast("cpu", dtype=dtype, cache_enabled=False):
                    outs.append(fn(part, **kwargs))
        else:
            outs = [fn(part, **kwargs) for part in parts]
        back = torch.argsort(order)
        if isinstance(outs[0], dict):
            return {k: torch.cat([o[k] for o in outs])[back] for k in outs[0]}
        return torch.cat(outs)[back]

    return apply


class _PerProcess(nn.Module):
    """A network run on each process's rows separately: BatchNorm statistics per process, as on K CPUs."""

    def __init__(self, net: nn.Module, rows: int, z_generators):
        super().__init__()
        self.net = net
        self.rows = rows
        self.z_generators = z_generators
        self._apply_rows = _per_process(self.net, rows)

    def forward(self, x, **kwargs):
        return self._apply_rows(x, **kwargs)

    def sample_latent(self, n, generator=None, device=None):
        return torch.cat([self.net.sample_latent(n // K, generator=g, device=device)
                          for g in self.z_generators])


def _reference(variant: str, amp: str, monkeypatch) -> dict:
    """One process, global batch, per-process BatchNorm and draws, NT-Xent rows in the all-gather's order."""
    config = _config(variant, amp)
    trainer = SmallTrainer(config, None, task=_task(), progress=False)
    b = trainer.batch_size // K
    aug_gens = [torch.Generator() for _ in range(K)]
    z_gens = [torch.Generator() for _ in range(K)]
    for name, net in trainer.nets.items():
        # networks without BatchNorm (D, E, D') treat each image on its own: they run on the whole batch, as
        # running them per process would also repeat D's spectral-norm power iteration once per process
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            setattr(trainer.nets, name, _PerProcess(net, b, z_gens))
    assert all(isinstance(net, _PerProcess) for name, net in trainer.nets.items() if name in ("F", "G"))
    flip = _per_process(csigen.augment.random_hflip, b, aug_gens)
    monkeypatch.setattr(csigen.augment, "random_hflip", flip)
    trainer.augment = _per_process(trainer.augment, b, aug_gens)
    nt_xent = csigen.losses.nt_xent

    def con_si_gathered(features, temperature=0.5):  # rows as the all-gather lays them out: process-major
        halves = [h[_process_major(h.shape[0], b)] for h in features.float().chunk(2)]
        return nt_xent(torch.cat(halves), temperature)

    monkeypatch.setattr(csigen.losses, "con_si", con_si_gathered)
    for _ in range(STEPS):
        for r in range(K):
            aug_gens[r].manual_seed(distributed.step_seed(config.seed, "aug", r, trainer.step))
            z_gens[r].manual_seed(distributed.step_seed(config.seed, "z", r, trainer.step))
        trainer.history.append(trainer.train_step())
    return _snapshot(trainer)


def _assert_equal(got: dict, want: dict, what: str, tolerance: float = TOLERANCE,
                  weights: bool = True) -> None:
    """Every loss of every step and (``weights``) every gradient and weight equal to ``tolerance``.

    Absolute up to 1, relative above.
    """
    assert len(got["history"]) == len(want["history"]) == STEPS
    for step, (g, w) in enumerate(zip(got["history"], want["history"])):
        keys = set(w) - {"seconds"}  # the time of a step is no result
        assert set(g) - {"seconds"} == keys, f"{what}: step {step + 1} records differ in keys"
        for key in keys:
            assert abs(g[key] - w[key]) <= tolerance * max(1.0, abs(w[key])), \
                f"{what}: step {step + 1} {key} {g[key]} vs {w[key]}"
    # a parameter whose exact gradient is zero (the bias of a convolution that feeds BatchNorm, as in G) has
    # gradients of rounding noise, which Adam turns into steps of +-lr: only its gradients are compared
    noise = {key for key, g in want["grads"].items() if g.abs().max() < NOISE}
    for part in ("grads", "params") if weights else ():
        assert got[part].keys() == want[part].keys(), f"{what}: {part} of other parameters"
        for key, value in want[part].items():
            if part == "params" and key in noise:
                continue
            torch.testing.assert_close(got[part][key], value, rtol=tolerance, atol=tolerance,
                                       msg=lambda m, key=key, part=part: f"{what}: {part} of {key}: {m}")


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_equal_one_process_with_per_process_batchnorm(case, two_process_runs, monkeypatch):
    variant, amp = CASES[case]
    got, want = two_process_runs[case], _reference(variant, amp, monkeypatch)
    _assert_equal(got, want, case, LOSSES_ONLY.get(case, TOLERANCE), weights=case not in LOSSES_ONLY)
    if variant == "full":  # every GAN update ran and produced gradients for G, D, E and D'
        assert {"d", "g_adv", "csi_s", "ld", "e_adv", "rec", "lrec", "joint"} <= set(got["history"][-1])
        assert {k.split(".")[0] for k in got["grads"]} == {"F", "G", "D", "E", "Dp"}


def test_a_resumed_two_process_run_continues_as_the_uninterrupted_one(two_process_runs):
    _assert_equal(two_process_runs["resumed"], two_process_runs["full-fp32"], "resumed")
    files = sorted(p.name for p in (two_process_runs["dir"] / "resumed").iterdir())
    assert files == ["checkpoint.pt", "history.csv"], files  # rank 0's files only, no stray temporaries


# --------------------------------------------------------------------------- #
# One process: everything as without csigen.distributed
# --------------------------------------------------------------------------- #
def test_one_process_helpers_change_nothing():
    features = torch.randn(8, 4)
    assert distributed.gather_views(features) is features
    record = {"step": 1, "csi": 2.0}
    assert distributed.mean_record(record) is record
    assert distributed.shard_rows(slice(4, 8)) == slice(4, 8)
    assert distributed.world() == distributed.World()
    assert distributed.process_device(torch.device("cuda", 3)) == torch.device("cuda", 3)
    trainer = SmallTrainer(_config("csi", "off"), None, task=_task(), progress=False)
    assert isinstance(trainer.nets.F, models.SmallF) and trainer.world.size == 1
    assert (trainer.process_batch_size, trainer.gan_batch_size) == (4, None)


def test_process_shares_and_refusals():
    two = distributed.World(rank=1, size=2)
    assert distributed.shard_rows(slice(8, 12), two) == slice(10, 12)
    assert distributed.process_batch_sizes(_config("full", "off", gan_batch_size=6), 4, two) == (2, 3)
    with pytest.raises(ValueError, match="multiple of 2"):
        distributed.process_batch_sizes(_config("csi", "off", batch_size=5), 5, two)
    with pytest.raises(ValueError, match="gan_batch_size=3"):
        distributed.process_batch_sizes(_config("full", "off", gan_batch_size=3), 4, two)
    with pytest.raises(ValueError, match="rollback"):
        distributed.check_config(_config("csi", "off", on_nonfinite="rollback"), two)
    with pytest.raises(ValueError, match="time budget"):
        distributed.check_config(_config("csi", "off", time_budget_min=5.0), two)
    distributed.check_config(_config("csi", "off", on_nonfinite="rollback"))  # one process: allowed


def test_each_process_and_step_draws_from_its_own_seed():
    seeds = {distributed.step_seed(0, stream, rank, step)
             for stream in ("aug", "z") for rank in range(4) for step in range(3)}
    assert len(seeds) == 2 * 4 * 3
    assert distributed.step_seed(7, "aug", 1, 5) == distributed.step_seed(7, "aug", 1, 5)
    assert distributed.step_seed(7, "aug", 1, 5) != distributed.step_seed(8, "aug", 1, 5)


# --------------------------------------------------------------------------- #
# torchrun
# --------------------------------------------------------------------------- #
def test_torchrun_two_processes_train_one_run(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={K}",
           "-m", "csigen", "train", "--dataset", "shapes", "--inlier", "circle", "--variant", "full",
           "--preset", "smoke", "--device", "cpu", "--max-steps", "2", "--max-train", "8", "--max-test", "16",
           "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1, proc.stdout  # rank 0 alone reports
    results = list(tmp_path.rglob("result.json"))
    assert results == [out / "result.json"]
    result = json.loads(results[0].read_text())
    assert (result["world_size"], result["global_batch"], result["per_process_batch"]) == (2, 4, 2)
    assert result["steps"] == 2 and printed[0]["world_size"] == 2
    assert (out / "weights.pt").is_file() and (out / "history.csv").is_file()
