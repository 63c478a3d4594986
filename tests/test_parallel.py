"""Many runs at once (csigen.parallel): run locks, device workers, the submitit / SLURM launcher.

Runs here are tiny (1 step of 4 images, 8 training and 16 test images, R = 1) so that two CPU workers, a
serial sweep and a submitit job fit in about a minute on a 2-core CPU.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from csigen import parallel as P
from csigen.checkpoint import atomic_write_json
from csigen.cli import main
from csigen.config import RunConfigMismatchError, make_config
from csigen.results import run_dir, sweep

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
#: A worker that takes a run's lock and keeps it (heartbeats every 60 s) until it is killed.
HOLD_LOCK = """import sys, time
from csigen.parallel import RunLock
lock = RunLock(sys.argv[1], heartbeat_every=60)
assert lock.acquire()
print("locked", flush=True)
time.sleep(300)
"""


def tiny(inlier, variant="csi"):
    # NCHW: the workers split the cores, and channels_last convolutions round differently at 1 and 2 threads
    # (scores apart by ~5e-4 after a training step), which would hide what the comparison below checks
    return make_config("smoke", dataset="shapes", inlier=inlier, variant=variant, max_steps=1, batch_size=4,
                       max_train=8, max_test=16, eval_samples=1, channels_last=False)


def foreign_lock(run, *, heartbeat_age, owner_tag=None):
    """A lock record written by a worker on another machine (its pid cannot be checked from here)."""
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run / P.LOCK_FILE, {"pid": 12345, "host": "another-node", "pid_namespace": None,
                                          "token": "theirs", "owner_tag": owner_tag,
                                          "started": time.time() - heartbeat_age,
                                          "heartbeat": time.time() - heartbeat_age})


# ----------------------------------------------------------------------------------------------- locks
def test_lock_is_exclusive_records_its_owner_and_is_released(tmp_path):
    run = tmp_path / "run"
    a, b = P.RunLock(run), P.RunLock(run)
    assert a.acquire() and a.held
    record = P.read_lock(run)
    assert record["pid"] == os.getpid() and record["host"] and record["token"] == a.token
    assert abs(record["heartbeat"] - time.time()) < 60
    assert not b.acquire()  # a live holder (this very process) is respected
    with pytest.raises(P.RunLockedError, match="another worker"), P.RunLock(run):
        pass
    a.release()
    assert not (run / P.LOCK_FILE).exists() and not a.held
    assert b.acquire()
    b.release()


def test_live_lock_of_another_process_is_respected_and_a_killed_ones_is_taken_over(tmp_path):
    run = run_dir(tmp_path, tiny("circle"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert P.read_lock(run)["pid"] == holder.pid
        assert not P.RunLock(run).acquire()
        # a worker skips the held run (writes nothing into it) instead of training it a second time
        [outcome] = P.run_tasks([tiny("circle")], tmp_path, wait_for_others=False, log=lambda m: None)
        assert outcome["status"] == "held" and f"pid {holder.pid}" in outcome["holder"]
        assert sorted(p.name for p in run.iterdir()) == [P.LOCK_FILE]
        assert P.sweep_status([tiny("circle")], tmp_path)[0]["status"] == "running"

        holder.send_signal(signal.SIGKILL)  # no chance to release: the lock file stays behind
        deadline = time.time() + 10
        while P.pid_alive(holder.pid) and time.time() < deadline:  # killed, not yet reaped: a zombie
            time.sleep(0.05)
        assert (run / P.LOCK_FILE).exists() and P.read_lock(run)["pid"] == holder.pid
        messages = []
        lock = P.RunLock(run, log=messages.append)
        assert lock.acquire()  # at once: its process is gone (no need to wait for the heartbeat timeout)
        assert P.read_lock(run)["pid"] == os.getpid()
        assert len(messages) == 1 and f"pid {holder.pid}" in messages[0] and "gone" in messages[0]
        lock.release()
    finally:
        holder.kill()
        holder.wait()


def test_train_command_takes_the_run_lock_and_refuses_a_folder_another_worker_trains(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--dataset", "shapes", "--inlier", "circle", "--variant", "csi", "--preset", "smoke",
            "--max-steps", "1", "--batch-size", "4", "--max-train", "8", "--max-test", "16", "--eval-samples", "1",
            "--out", str(run), "--no-progress"]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], env=ENV, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "being trained by another worker" in err and f"pid {holder.pid}" in err
        assert sorted(p.name for p in run.iterdir()) == [P.LOCK_FILE]  # nothing written beside the lock
    finally:
        holder.kill()
        holder.wait()
    assert main(args) == 0  # the holder is gone: its lock is taken over at once and the run trains
    assert (run / "result.json").exists() and not (run / P.LOCK_FILE).exists()


def test_lock_of_another_machine_is_stale_only_after_its_heartbeat_timeout(tmp_path):
    run = tmp_path / "run"
    foreign_lock(run, heartbeat_age=5)
    assert not P.RunLock(run, stale_after=60).acquire()  # fresh heartbeat: a live worker elsewhere
    foreign_lock(run, heartbeat_age=120)
    lock = P.RunLock(run, stale_after=60, log=lambda m: None)
    assert lock.acquire() and P.read_lock(run)["token"] == lock.token
    lock.release()
    # a requeued SLURM job takes over the lock of its own earlier incarnation at once, nobody else does
    foreign_lock(run, heartbeat_age=5, owner_tag="submitit:77_3")
    assert not P.RunLock(run, owner_tag="submitit:77_4").acquire()
    lock = P.RunLock(run, owner_tag="submitit:77_3", log=lambda m: None)
    assert lock.acquire()
    lock.release()


def _race(lock, barrier, won):
    barrier.wait()
    if lock.acquire():
        won.append(lock)


def test_only_one_of_many_racing_workers_takes_a_stale_lock(tmp_path):
    run = tmp_path / "run"
    for _ in range(5):
        foreign_lock(run, heartbeat_age=1000)
        locks = [P.RunLock(run, stale_after=60, log=lambda m: None) for _ in range(8)]
        barrier, won = threading.Barrier(len(locks)), []
        threads = [threading.Thread(target=_race, args=(lock, barrier, won)) for lock in locks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and P.read_lock(run)["token"] == won[0].token
        won[0].release()
        assert not (run / P.MUTEX_FILE).exists()


def test_heartbeat_renews_the_lock_and_a_worker_whose_lock_was_taken_over_stops(tmp_path):
    run = tmp_path / "run"
    lock = P.RunLock(run, stale_after=5, heartbeat_every=0.1, log=lambda m: None)
    assert lock.acquire()
    first = P.read_lock(run)["heartbeat"]
    deadline = time.time() + 10
    while P.read_lock(run)["heartbeat"] == first and time.time() < deadline:
        time.sleep(0.05)
    assert P.read_lock(run)["heartbeat"] > first
    lock.check()  # still ours
    # another worker took the lock over (this one had stalled past the timeout)
    atomic_write_json(run / P.LOCK_FILE, {**P.read_lock(run), "token": "someone-else"})
    deadline = time.time() + 10
    while not lock.lost and time.time() < deadline:
        time.sleep(0.05)
    assert lock.lost and not lock.held
    with pytest.raises(P.LockLostError, match="took over"):
        lock.check()
    lock.release()
    assert P.read_lock(run)["token"] == "someone-else"  # never removes a lock that is not its own


def test_a_failed_run_is_recorded_and_not_retried_within_the_same_launch(tmp_path):
    bad = make_config("smoke", dataset="imagefolder", inlier=0, variant="csi", data_root=str(tmp_path / "none"))
    [first] = P.run_tasks([bad], tmp_path, sweep_id="launch-1", log=lambda m: None)
    assert first["status"] == "failed"
    record = json.loads((run_dir(tmp_path, bad) / P.FAILED_FILE).read_text())
    assert record["sweep_id"] == "launch-1" and record["error"] == first["error"] and "Traceback" in record["traceback"]
    assert not (run_dir(tmp_path, bad) / P.LOCK_FILE).exists()  # released
    [again] = P.run_tasks([bad], tmp_path, sweep_id="launch-1", log=lambda m: None)
    assert again["status"] == "failed elsewhere"
    assert P.sweep_status([bad], tmp_path, sweep_id="launch-1")[0]["status"] == "failed"
    [retried] = P.run_tasks([bad], tmp_path, sweep_id="launch-2", log=lambda m: None)  # a new launch retries
    assert retried["status"] == "failed"


# --------------------------------------------------------------------------------------- device workers
def _logged(capfd, name):
    return [line for line in capfd.readouterr().err.splitlines() if f"{name}: training" in line]


@pytest.mark.slow
def test_two_cpu_workers_give_the_serial_sweeps_results_and_a_relaunch_runs_only_whats_missing(tmp_path, capfd):
    configs = [tiny("circle"), tiny("star")]
    sweep(configs, tmp_path / "serial", progress=False)
    report = P.run_on_devices(configs, tmp_path / "parallel", ["cpu", "cpu"], poll_s=0.2, progress=False)
    assert report["finished"] == 2 and report["failed"] == report["missing"] == 0
    err = capfd.readouterr().err
    for config in configs:  # each run trained exactly once, by one of the two workers
        name = run_dir(tmp_path, config).name
        assert sum(f"{name}: training" in line for line in err.splitlines()) == 1, err
        serial = json.loads((run_dir(tmp_path / "serial", config) / "result.json").read_text())
        parallel = json.loads((run_dir(tmp_path / "parallel", config) / "result.json").read_text())
        assert parallel["scores"] == serial["scores"] and parallel["steps"] == serial["steps"] == 1
        a = np.load(run_dir(tmp_path / "serial", config) / "scores.npz")
        b = np.load(run_dir(tmp_path / "parallel", config) / "scores.npz")
        # CPU workers split the cores (torch.set_num_threads), and a different thread count may sum
        # in another order: the same run up to float rounding, the same AUROCs exactly (above)
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)
        assert not (run_dir(tmp_path / "parallel", config) / P.LOCK_FILE).exists()

    # launched again: nothing is trained again, the finished runs are read back (only what is missing runs:
    # see the submitit test below, where the launcher skips finished runs)
    stamps = {c.inlier: (run_dir(tmp_path / "parallel", c) / "result.json").stat().st_mtime_ns for c in configs}
    report = P.run_on_devices(configs, tmp_path / "parallel", ["cpu"], poll_s=0.2, progress=False)
    assert report["finished"] == 2 and "training" not in capfd.readouterr().err
    assert stamps == {c.inlier: (run_dir(tmp_path / "parallel", c) / "result.json").stat().st_mtime_ns
                      for c in configs}


def test_sweep_refuses_folders_of_other_runs_and_missing_devices_before_running(tmp_path, capsys):
    other = make_config("smoke", dataset="shapes", inlier="circle", variant="csi", max_steps=3)
    run = run_dir(tmp_path, other)
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(other.to_dict()))
    with pytest.raises(RunConfigMismatchError, match="max_steps"):
        P.check_sweep_folders([make_config("smoke", dataset="shapes", inlier="circle", variant="csi")], tmp_path)
    code = main(["sweep", "--dataset", "shapes", "--inliers", "circle", "--variants", "csi", "--out", str(tmp_path),
                 "--devices", "cpu", "cpu", "--no-progress"])
    assert code == 2 and "nothing was run" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
    if not torch.cuda.is_available():
        code = main(["sweep", "--dataset", "shapes", "--inliers", "circle", "--variants", "csi",
                     "--out", str(tmp_path / "gpu"), "--devices", "cuda:0", "cuda:1", "--no-progress"])
        assert code == 2 and "no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cpu, cuda or cuda:N"):
        P.check_devices(["tpu"])


def test_a_worker_takes_auto_and_a_bare_cuda(tmp_path, monkeypatch, capsys):
    """``--devices auto`` (accepted by check_devices) and a bare ``cuda`` killed every worker at start:
    ``torch.device("auto")`` is no device and ``torch.cuda.set_device("cuda")`` wants an index."""
    import io

    job = {"configs": [], "root": str(tmp_path), "sweep_id": "s", "options": {}}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(job)))
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # the worker's SIGTERM handler: not in pytest
    assert P._device_worker(["--device", "auto"]) == 0
    assert P.select_worker_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    chosen = []  # a GPU machine, faked: which index becomes the current device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert P.select_worker_device("cuda") == torch.device("cuda") and chosen == [0]
    assert P.select_worker_device("cuda:1") == torch.device("cuda", 1) and chosen == [0, 1]
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(job)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: (_ for _ in ()).throw(RuntimeError("bad ordinal")))
    assert P._device_worker(["--device", "cuda:7"]) == 2  # not 1, which the launcher reads as "a run failed"
    assert "--devices cuda:7" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- submitit
@pytest.mark.slow
def test_submitit_local_executor_runs_the_job_array_and_submits_only_whats_missing(tmp_path):
    configs = [tiny("circle"), tiny("star")]
    held = P.RunLock(run_dir(tmp_path, configs[1]))  # star: in progress elsewhere (a live lock)
    assert held.acquire()
    try:
        report = P.submit_sweep(configs, tmp_path, cluster="local", device="cpu", timeout_min=10,
                                log=lambda m: None)
        assert report["submitted"] == [str(run_dir(tmp_path, configs[0]))] and report["running"] == 1
        [outcome] = P.wait_for_jobs(report["jobs"])
        assert outcome["status"] == "trained", outcome
    finally:
        held.release()
    result = json.loads((run_dir(tmp_path, configs[0]) / "result.json").read_text())
    assert result["steps"] == 1 and outcome["auroc"] == result["auroc"]
    assert not (run_dir(tmp_path, configs[0]) / P.LOCK_FILE).exists()
    # launched again: circle is finished and not resubmitted; star (no longer held) is
    again = P.submit_sweep(configs, tmp_path, cluster="debug", device="cpu", log=lambda m: None)
    assert again["finished"] == 1 and again["submitted"] == [str(run_dir(tmp_path, configs[1]))]
    assert len(again["jobs"]) == 1  # (DebugExecutor: would run in this process when its result is asked for)


@pytest.mark.slow
def test_a_job_of_two_tasks_trains_one_run_on_two_processes(tmp_path):
    """--slurm-gpus 2: each array job starts two processes that train its run together (gloo on the CPU)."""
    configs = [tiny("circle")]
    report = P.submit_sweep(configs, tmp_path, cluster="local", device="cpu", timeout_min=10, gpus_per_job=2,
                            cpus_per_job=2, log=lambda m: None)
    [job] = report["jobs"]
    [outcome] = P.wait_for_jobs([job])
    assert outcome["status"] == "trained" and outcome["world_size"] == 2, outcome
    out = run_dir(tmp_path, configs[0])
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["global_batch"] == 4 and outcome["auroc"] == result["auroc"]
    assert not (out / P.LOCK_FILE).exists()
    assert [r["rank"] for r in job.results()] == [0, 1]  # both tasks trained it


def test_cli_submits_a_slurm_job_array_with_the_requested_resources(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/job.sbatch\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "runs"
    held = P.RunLock(run_dir(out, make_config("smoke", dataset="shapes", inlier="star", variant="csi")))
    assert held.acquire()  # in progress elsewhere: not submitted again
    try:
        code = main(["sweep", "--dataset", "shapes", "--inliers", "circle", "star", "square", "--variants", "csi",
                     "--out", str(out), "--launcher", "slurm", "--slurm-partition", "gpu", "--slurm-time", "90",
                     "--slurm-parallel", "8", "--slurm-mem-gb", "32", "--slurm-setup", "source venv/bin/activate"])
    finally:
        held.release()
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["job_ids"] == ["4242_0", "4242_1"] and report["running"] == 1
    assert [Path(p).name for p in report["submitted"]] == ["shapes-circle-csi-smoke-s0", "shapes-square-csi-smoke-s0"]
    script = (tmp_path / "job.sbatch").read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "source venv/bin/activate",
                 "-m submitit.core._submit"):
        assert line in script, script


def test_slurm_parameters_of_a_multi_gpu_job_start_one_task_per_gpu():
    one = P.slurm_parameters(gpus_per_job=1, cpus_per_job=8)
    assert (one["tasks_per_node"], one["gpus_per_node"], one["cpus_per_task"]) == (1, 1, 8)
    four = P.slurm_parameters(gpus_per_job=4, cpus_per_job=32, partition="gpu")
    assert (four["tasks_per_node"], four["gpus_per_node"], four["cpus_per_task"]) == (4, 4, 8)
    assert four["slurm_partition"] == "gpu" and four["nodes"] == 1
