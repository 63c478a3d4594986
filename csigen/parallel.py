"""Many runs at once: a lock per run folder, one worker per device, a SLURM job array.

A sweep is a list of configs, one run folder each (:func:`csigen.results.run_dir`).
Workers take runs from that shared list:

* :func:`run_on_devices` starts one process per entry of ``devices``
  (``["cuda:0", "cuda:1"]``; repeat an entry to run two tasks on one device)
  on this machine; each trains one run at a time on its device.
* :func:`submit_sweep` submits the runs still missing as a job array through
  submitit (``pip install 'csigen[slurm]'``): one array job per run, one GPU
  each; ``cluster="local"`` or ``"debug"`` runs the same jobs on this machine
  (submitit's LocalExecutor / DebugExecutor: how the tests run it).

No two workers ever train or write the same run: a worker trains a run only
while it holds the run's :class:`RunLock` (``<run>/run.lock``), created
atomically (a hard link of a complete file, or ``O_CREAT | O_EXCL``), holding
the owner's pid, hostname and a heartbeat timestamp that a background thread
renews every ``heartbeat_every`` seconds. A lock is *stale*, and the next
worker takes it over, when its process is gone (same host and pid namespace:
checked at once) or its heartbeat is older than ``stale_after`` seconds
(another host: the only sign; clocks must agree to well within
``stale_after``). A worker whose lock was taken over (it stalled for longer
than ``stale_after``) notices at its next heartbeat and stops before its next
training step (:class:`LockLostError`) instead of writing on. Every run folder
keeps :func:`csigen.train.run`'s guarantees (atomic files, resume from
``checkpoint.pt``), so a killed worker costs at most the steps since its last
checkpoint, and a sweep launched again runs only what is missing: finished
runs (``result.json``) are read back, interrupted ones resume.

A run that fails (an exception) gets ``<run>/failed.json`` (error, traceback,
device, host, the launch's ``sweep_id``); the other workers of the same launch
do not retry it, a new launch does.

Import has no side effects; torch and submitit are imported when used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

#: The lock file in a run folder: JSON with pid, host, pid_namespace, token, owner_tag, started, heartbeat.
LOCK_FILE = "run.lock"
#: Short-lived mutual exclusion for changing or removing ``run.lock`` (held for milliseconds).
MUTEX_FILE = ".run.lock.mutex"
#: Record of a failed attempt (error, traceback, sweep_id, device, host, time); removed when the run finishes.
FAILED_FILE = "failed.json"
#: A lock whose heartbeat is older than this many seconds is stale (taken over). Ten minutes: far longer
#: than any pause of a healthy worker (its heartbeat thread runs during training, evaluation and I/O).
DEFAULT_STALE_AFTER_S = 600.0
#: A mutex file older than this is left by a killed process (it is held for milliseconds).
MUTEX_STALE_S = 30.0


class RunLockedError(RuntimeError):
    """Another live worker holds the run's lock."""


class LockLostError(RuntimeError):
    """This worker's lock was taken over by another worker (its heartbeat stalled past the timeout)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- identity
def _pid_namespace() -> str | None:
    """The pid namespace of this process (Linux), so pids are only compared within one namespace."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_identity() -> dict[str, Any]:
    """``{"pid", "host", "pid_namespace"}`` of this process, as recorded in a lock."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_namespace": _pid_namespace()}


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs (a zombie, killed but not yet reaped, does not).

    On Windows, where ``os.kill(pid, 0)`` would terminate the process, every pid counts as alive: there only
    the heartbeat timeout makes a lock stale.
    """
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    try:  # Linux: a zombie still answers kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def _same_machine(info: dict[str, Any]) -> bool:
    """Whether ``info``'s pid can be checked here: same hostname and (where known) same pid namespace."""
    me = process_identity()
    return info.get("host") == me["host"] and info.get("pid_namespace") == me["pid_namespace"]


# ----------------------------------------------------------------------------------- atomic files
def _create_exclusive(path: Path, payload: dict[str, Any]) -> bool:
    """Create ``path`` holding ``payload`` (JSON) only if it does not exist; True if this call created it.

    A complete temporary file is hard-linked to ``path`` (atomic, and never seen half written; also on
    NFS); where hard links are not supported, ``O_CREAT | O_EXCL`` and a write.
    """
    data = (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return True
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _read_json(path: Path) -> dict[str, Any] | None:
    """``path``'s JSON object; None if it is missing; ``{}`` if it is empty or not (yet) valid JSON."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _age(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return None


class _Mutex:
    """Mutual exclusion among workers for the few milliseconds in which ``run.lock`` is checked and then
    replaced or removed (heartbeat, release, taking over a stale lock), so that nobody ever removes or
    overwrites a lock it has not just verified. A mutex left by a killed process (its pid gone, or older
    than :data:`MUTEX_STALE_S`) is removed."""

    def __init__(self, folder: Path, timeout: float = 2 * MUTEX_STALE_S):
        self.path = folder / MUTEX_FILE
        self.timeout = timeout
        self.token = uuid.uuid4().hex

    def acquire(self) -> bool:
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        while True:
            if _create_exclusive(self.path, {**process_identity(), "token": self.token, "time": time.time()}):
                return True
            info = _read_json(self.path)
            if info is None:
                continue  # released meanwhile
            age = _age(self.path)
            dead = bool(info) and _same_machine(info) and not pid_alive(int(info.get("pid", -1)))
            if dead or (age is not None and age > MUTEX_STALE_S):
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            if time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def release(self) -> None:
        info = _read_json(self.path)
        if info and info.get("token") == self.token:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------------------------------- locks
def read_lock(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The lock record of ``run_dir`` (None: not locked; ``{}``: a lock file being written)."""
    return _read_json(Path(run_dir) / LOCK_FILE)


def lock_is_stale(info: dict[str, Any] | None, *, stale_after: float = DEFAULT_STALE_AFTER_S,
                  owner_tag: str | None = None, lock_age: float | None = None) -> tuple[bool, str]:
    """Whether a lock record may be taken over, and why (a sentence for the log).

    Stale: its process is gone (same host and pid namespace, so the pid can be checked); its heartbeat
    is older than ``stale_after`` seconds (the only test across hosts); or its ``owner_tag`` equals
    ``owner_tag`` (the same SLURM job, requeued after a time limit or preemption: SLURM runs a job id
    only once at a time). An empty record (a file whose writer was killed before writing) is stale when
    the file (``lock_age`` seconds old) is older than ``stale_after``.
    """
    if info is None:
        return True, "no lock"
    if not info:
        old = lock_age is not None and lock_age > stale_after
        return old, f"empty lock file, {lock_age or 0:.0f} s old"
    who = f"pid {info.get('pid')} on {info.get('host')}"
    if owner_tag is not None and info.get("owner_tag") == owner_tag:
        return True, f"held by {who} for the same job {owner_tag} (requeued)"
    if _same_machine(info) and not pid_alive(int(info.get("pid", -1))):
        return True, f"its process ({who}) is gone"
    age = time.time() - float(info.get("heartbeat", 0.0))
    if age > stale_after:
        return True, f"{who} sent no heartbeat for {age:.0f} s (timeout {stale_after:.0f} s)"
    return False, f"held by {who} (heartbeat {max(age, 0.0):.0f} s ago)"


class RunLock:
    """Exclusive right to train and write one run folder; see the module docstring.

    >>> lock = RunLock("runs/sweep/shapes-0-csi-smoke-s0")   # doctest: +SKIP
    >>> if lock.acquire():                                   # doctest: +SKIP
    ...     try: train()
    ...     finally: lock.release()

    Args:
        run_dir: the run folder (created if missing).
        stale_after: seconds without a heartbeat after which the lock may be taken over.
        heartbeat_every: seconds between heartbeats (default ``min(30, stale_after / 4)``).
        owner_tag: an identity that survives a restart of this worker, e.g. ``"slurm:1234_5"``: a lock
            with the same tag is taken over at once (the job was requeued). Never set it for workers that
            may run at the same time.
        log: where to say that a stale lock was taken over (default: stderr).
    """

    def __init__(self, run_dir: str | os.PathLike, *, stale_after: float = DEFAULT_STALE_AFTER_S,
                 heartbeat_every: float | None = None, owner_tag: str | None = None,
                 log: Callable[[str], None] | None = _log):
        if not stale_after > 0:
            raise ValueError(f"stale_after={stale_after!r}: use a positive number of seconds, e.g. 600")
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.stale_after = float(stale_after)
        self.heartbeat_every = float(heartbeat_every) if heartbeat_every else min(30.0, self.stale_after / 4)
        if not 0 < self.heartbeat_every < self.stale_after:
            raise ValueError(f"heartbeat_every={heartbeat_every!r} must be positive and below stale_after="
                             f"{stale_after!r}, or a live lock would look stale")
        self.owner_tag = owner_tag
        self.log = log or (lambda message: None)
        self.token = uuid.uuid4().hex
        self._held = False
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        """Acquired and neither released nor lost."""
        return self._held and not self._lost.is_set()

    @property
    def lost(self) -> bool:
        """The lock was taken over by another worker while this one held it."""
        return self._lost.is_set()

    def holder(self) -> dict[str, Any] | None:
        """The current lock record (whoever holds it), or None."""
        return read_lock(self.run_dir)

    def _record(self) -> dict[str, Any]:
        now = time.time()
        return {**process_identity(), "token": self.token, "owner_tag": self.owner_tag, "started": now,
                "heartbeat": now, "stale_after": self.stale_after}

    def acquire(self) -> bool:
        """Take the lock if it is free or stale; False if another live worker holds it (never waits for it)."""
        if self._held:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(8):  # a few rounds of: create, or judge the holder and take a stale lock over
            if _create_exclusive(self.path, self._record()):
                self._start()
                return True
            info = read_lock(self.run_dir)
            if info is None:
                continue  # released meanwhile
            stale, why = lock_is_stale(info, stale_after=self.stale_after, owner_tag=self.owner_tag,
                                       lock_age=_age(self.path))
            if not stale:
                return False
            with _Mutex(self.run_dir) as mine:
                if not mine:
                    return False
                current = read_lock(self.run_dir)
                if current is not None and current.get("token") == info.get("token"):
                    try:  # verified under the mutex: still the very lock judged stale
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                    self.log(f"{self.run_dir}: taking over a stale lock ({why})")
        return False

    def _start(self) -> None:
        self._held = True
        self._lost.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeats, name=f"heartbeat {self.run_dir.name}",
                                        daemon=True)
        self._thread.start()

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.heartbeat_every):
            try:
                self.beat()
            except OSError as exc:  # e.g. a full disk or a network file system hiccup: try at the next beat
                self.log(f"{self.run_dir}: heartbeat not written ({exc}); retrying in {self.heartbeat_every:.0f} s")

    def beat(self) -> bool:
        """Renew the heartbeat now (the background thread calls this); False if the lock was lost."""
        from csigen.checkpoint import atomic_write_json

        if not self._held or self._lost.is_set():
            return False
        with _Mutex(self.run_dir, timeout=self.heartbeat_every / 2) as mine:
            if not mine:
                return True  # busy: try at the next beat
            info = read_lock(self.run_dir)
            if not info or info.get("token") != self.token:
                self._lost.set()
                self._stop.set()
                self.log(f"{self.run_dir}: this worker's lock was taken over by "
                         f"{(info or {}).get('host')} pid {(info or {}).get('pid')}; stopping this run here")
                return False
            info["heartbeat"] = time.time()
            atomic_write_json(self.path, info)
        return True

    def check(self) -> None:
        """Raise :class:`LockLostError` if another worker took this lock over."""
        if self._lost.is_set():
            raise LockLostError(f"{self.run_dir}: another worker took over this run's lock (this worker "
                                f"stalled for more than {self.stale_after:.0f} s); it stopped here and "
                                "leaves the run to that worker")

    def release(self) -> None:
        """Stop the heartbeats and remove the lock if it is still this worker's."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if not self._held:
            return
        self._held = False
        with _Mutex(self.run_dir) as mine:
            info = read_lock(self.run_dir)
            if mine and info and info.get("token") == self.token:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass

    def __enter__(self):
        if not self.acquire():
            raise RunLockedError(f"{self.run_dir} is being trained by another worker "
                                 f"({lock_is_stale(self.holder(), stale_after=self.stale_after)[1]}); "
                                 f"wait for it, or remove {self.path} if that worker is certainly gone")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_guard(lock: RunLock):
    """A :class:`csigen.train.Callback` that stops training (:class:`LockLostError`) once ``lock`` is lost."""
    from csigen.train import Callback

    class LockGuard(Callback):
        def on_step(self, trainer, record) -> None:
            lock.check()

    return LockGuard()


def locked_run(config, out_dir: str | os.PathLike, *, callbacks: Sequence = (),
               stale_after: float = DEFAULT_STALE_AFTER_S, **run_kwargs: Any) -> dict[str, Any]:
    """:func:`csigen.train.run` under the run folder's :class:`RunLock`.

    Raises :class:`RunLockedError` (nothing written) if another live worker holds the run, and
    :class:`LockLostError` if the lock is taken over while training. ``run_kwargs`` go to ``run``.
    """
    from csigen.train import run

    with RunLock(out_dir, stale_after=stale_after) as lock:
        return run(config, out_dir, callbacks=[*callbacks, _lock_guard(lock)], **run_kwargs)


# ------------------------------------------------------------------------------------ sweep state
def write_failure(run_dir: str | os.PathLike, exc: BaseException, *, sweep_id: str | None,
                  device: str | None) -> Path:
    """Record a failed attempt as ``<run_dir>/failed.json`` (atomic)."""
    from csigen.checkpoint import atomic_write_json

    return atomic_write_json(Path(run_dir) / FAILED_FILE, {
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "sweep_id": sweep_id, "device": device, **process_identity(), "time": time.time()})


def _failed_in(run_dir: Path, sweep_id: str | None) -> dict[str, Any] | None:
    """The failure record of ``run_dir`` if it was written during launch ``sweep_id``."""
    if sweep_id is None:
        return None
    record = _read_json(run_dir / FAILED_FILE)
    return record if record and record.get("sweep_id") == sweep_id else None


def check_sweep_folders(configs: Sequence, root: str | os.PathLike) -> list:
    """The configs of a sweep without duplicates, after checking that each folder can hold its run.

    Raises :class:`csigen.config.RunConfigMismatchError` before anything runs if two configs would share
    a run folder or a folder already holds a run with another configuration (the message names every
    such folder and field).
    """
    from csigen.config import RunConfigMismatchError, same_run_config
    from csigen.results import run_dir

    unique: dict[Path, Any] = {}
    problems = []
    for config in configs:
        out = run_dir(root, config)
        if out in unique:
            diffs = same_run_config(unique[out].to_dict(), config)
            if diffs:
                problems.append(f"{out}: two configs of this sweep differ in {diffs}")
            continue
        unique[out] = config
        for name in ("result.json", "config.json"):
            path = out / name
            if path.exists():
                saved = json.loads(path.read_text())
                saved = saved.get("config", {}) if name == "result.json" else saved
                diffs = same_run_config(saved, config, what=str(path))
                if diffs:
                    problems.append(f"{out} holds a run with another configuration (fields {diffs})")
                break
    if problems:
        raise RunConfigMismatchError(
            "the sweep cannot start, nothing was run: " + "; ".join(problems) + ". Write the sweep to another "
            "folder (--out), or remove those run folders to redo them.")
    return list(unique.values())


def sweep_status(configs: Sequence, root: str | os.PathLike, *, sweep_id: str | None = None,
                 stale_after: float = DEFAULT_STALE_AFTER_S) -> list[dict[str, Any]]:
    """One dict per config: ``run`` (folder) and ``status``: ``"finished"`` (result.json), ``"failed"``
    (failed.json of launch ``sweep_id``, with its ``error``), ``"running"`` (a live lock, with ``holder``)
    or ``"missing"`` (to do: nothing, or an interrupted run that resumes)."""
    from csigen.results import run_dir

    rows = []
    for config in configs:
        out = run_dir(root, config)
        row: dict[str, Any] = {"run": str(out)}
        failed = _failed_in(out, sweep_id)
        if (out / "result.json").exists():
            row["status"] = "finished"
        elif failed is not None:
            row.update(status="failed", error=failed.get("error"))
        else:
            info = read_lock(out)
            stale, why = lock_is_stale(info, stale_after=stale_after, lock_age=_age(out / LOCK_FILE))
            if stale:
                row["status"] = "missing"
            else:
                row.update(status="running", holder=why)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- workers
def run_tasks(configs: Sequence, root: str | os.PathLike, *, device: str | None = None,
              sweep_id: str | None = None, wait_for_others: bool = True, poll_s: float = 2.0,
              stale_after: float = DEFAULT_STALE_AFTER_S, heartbeat_every: float | None = None,
              owner_tag: str | None = None, progress: bool = False, keep_checkpoint: bool = False,
              log: Callable[[str], None] = _log) -> list[dict[str, Any]]:
    """One worker: train every run of ``configs`` that no other worker holds, one at a time.

    Runs go in the list's order; a run is trained only under its :class:`RunLock`. A finished run is read
    back, an interrupted one resumes (:func:`csigen.train.run`). With ``wait_for_others`` the worker, once
    through the list, keeps polling (every ``poll_s`` s) the runs other workers hold until each is finished
    or failed, and takes over those whose worker died. ``device`` replaces each config's device (an
    environment field: the run folder and its records are the same run on any device). ``keep_checkpoint``
    goes to :func:`csigen.train.run`.

    Returns one outcome per config: ``{"run", "status", ...}`` with status ``"trained"`` (now; with
    ``auroc``), ``"finished"`` (before), ``"failed"`` (``error``; also written to ``failed.json``),
    ``"failed elsewhere"`` (by another worker of launch ``sweep_id``), ``"held"`` (another worker holds it;
    only without ``wait_for_others``) or ``"lost"`` (the lock was taken over; see :class:`LockLostError`).
    """
    from csigen.results import run_dir
    from csigen.train import run

    tag = f"[{device or 'worker'} pid {os.getpid()}] "
    outcomes: dict[int, dict[str, Any]] = {}
    pending = list(range(len(configs)))
    while pending:
        waiting = []
        for i in pending:
            config = configs[i]
            if device is not None:
                config = dataclasses.replace(config, device=device)
            out = run_dir(root, config)
            if (out / "result.json").exists():
                outcomes[i] = {"run": str(out), "status": "finished"}
                continue
            failed = _failed_in(out, sweep_id)
            if failed is not None:
                outcomes[i] = {"run": str(out), "status": "failed elsewhere", "error": failed.get("error")}
                continue
            holder = read_lock(out)  # a live holder: no need to try (trying writes a file)
            if holder is not None and not lock_is_stale(holder, stale_after=stale_after, owner_tag=owner_tag,
                                                        lock_age=_age(out / LOCK_FILE))[0]:
                waiting.append(i)
                continue
            lock = RunLock(out, stale_after=stale_after, heartbeat_every=heartbeat_every, owner_tag=owner_tag,
                           log=log)
            if not lock.acquire():
                waiting.append(i)
                continue
            try:
                log(f"{tag}{out.name}: training")
                t0 = time.perf_counter()
                result = run(config, out, resume=True, progress=progress, callbacks=[_lock_guard(lock)],
                             keep_checkpoint=keep_checkpoint)
                try:
                    (out / FAILED_FILE).unlink()  # an earlier launch's failure: superseded
                except FileNotFoundError:
                    pass
                outcomes[i] = {"run": str(out), "status": "trained", "auroc": result.get("auroc")}
                log(f"{tag}{out.name}: done in {time.perf_counter() - t0:.0f} s, AUROC "
                    f"{100 * result['auroc']:.2f}%")
            except LockLostError as exc:
                outcomes[i] = {"run": str(out), "status": "lost", "error": str(exc)}
                log(f"{tag}{exc}")
            except Exception as exc:  # noqa: BLE001 - recorded, then the next run; the launcher reports it
                if not lock.lost:
                    try:
                        write_failure(out, exc, sweep_id=sweep_id, device=device)
                    except OSError as write_error:  # e.g. the disk is full: report it, keep going
                        log(f"{tag}{out.name}: could not write {FAILED_FILE} ({write_error})")
                outcomes[i] = {"run": str(out), "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                log(f"{tag}{out.name}: FAILED: {type(exc).__name__}: {exc} (details in {out / FAILED_FILE})")
            finally:
                lock.release()
        if not wait_for_others:
            for i in waiting:
                out = run_dir(root, configs[i])
                why = lock_is_stale(read_lock(out), stale_after=stale_after)[1]
                outcomes[i] = {"run": str(out), "status": "held", "holder": why}
            break
        pending = waiting
        if pending:
            time.sleep(poll_s)
    return [outcomes[i] for i in range(len(configs))]


def check_devices(devices: Sequence[str]) -> list[str]:
    """``devices`` as given, after checking that each exists here (a clear error otherwise)."""
    import torch

    if not devices:
        raise ValueError("--devices needs at least one device, e.g. --devices cuda:0 cuda:1 (or cpu cpu)")
    checked = []
    for name in devices:
        if name == "auto":  # the GPU if there is one, else the CPU (csigen.train.resolve_device)
            checked.append(name)
            continue
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise ValueError(f"unknown device {name!r} in --devices ({exc}); use cpu, cuda or cuda:N") from exc
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise RuntimeError(f"--devices {name}: this machine has no CUDA GPU; use cpu (or run on a GPU "
                                   "machine)")
            if device.index is not None and device.index >= count:
                raise ValueError(f"--devices {name}: this machine has {count} GPU(s), cuda:0 to "
                                 f"cuda:{count - 1}")
        elif device.type not in ("cpu", "mps"):
            raise ValueError(f"--devices {name}: use cpu, cuda or cuda:N")
        checked.append(name)
    return checked


def select_worker_device(name: str):
    """The device of a sweep worker (``auto``, ``cpu``, ``cuda`` or ``cuda:N``), made CUDA's current one.

    ``torch.cuda.set_device`` needs an index: a bare ``cuda`` means the current GPU (as in
    :func:`csigen.train.resolve_device`), ``auto`` the GPU if there is one; before, a worker
    given either died at start (``torch.device("auto")`` is no device, ``set_device("cuda")``
    wants an index).
    """
    import torch

    from csigen.train import resolve_device

    device = resolve_device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device.index if device.index is not None else torch.cuda.current_device())
    return device


def _device_worker(argv: Sequence[str] | None = None) -> int:
    """One device worker process (started by :func:`run_on_devices` as ``python -m csigen.parallel``).

    Reads ``{"configs": [config dicts], "root", "sweep_id", "options"}`` as JSON from stdin.
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m csigen.parallel",
                                     description="a device worker of 'python -m csigen sweep --devices'")
    parser.add_argument("--device", required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    job = json.loads(sys.stdin.read())  # first: the launcher waits until every worker has its list

    import torch

    from csigen.config import TrainConfig

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # terminate -> finally blocks release the lock
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        select_worker_device(args.device)
    except (RuntimeError, ValueError) as exc:  # exit 2: the launcher logs it (1 means "a run failed")
        print(f"error: the worker for --devices {args.device} cannot use it: {exc}", file=sys.stderr)
        return 2
    configs = [TrainConfig.from_dict(d) for d in job["configs"]]
    try:
        outcomes = run_tasks(configs, job["root"], device=args.device, sweep_id=job["sweep_id"], **job["options"])
    except KeyboardInterrupt:
        return 130
    return 1 if any(o["status"] == "failed" for o in outcomes) else 0


def run_on_devices(configs: Sequence, root: str | os.PathLike, devices: Sequence[str], *,
                   progress: bool = True, stale_after: float = DEFAULT_STALE_AFTER_S,
                   heartbeat_every: float | None = None, poll_s: float = 2.0, keep_checkpoint: bool = False,
                   log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Train every run of ``configs`` into ``root``, one worker per entry of ``devices``, concurrently.

    Each worker (a ``python -m csigen.parallel`` process; this process when there is one device) trains
    one run at a time on its device, taking runs from the shared list under their locks
    (:func:`run_tasks`). Several ``"cpu"`` workers split the cores (``torch.set_num_threads``) unless
    ``OMP_NUM_THREADS`` is set. The results are the same as a serial :func:`csigen.results.sweep` of the
    same configs: each run depends on its config and seed only (on the CPU with the same number of
    threads per run, bit for bit). Ctrl-C stops every worker; each releases its lock, and the sweep
    launched again resumes from the checkpoints.

    Returns ``{"sweep_id", "devices", "runs": [sweep_status rows], "finished", "failed", "missing",
    "running"}`` (counts of runs).
    """
    import subprocess

    configs = check_sweep_folders(configs, root)
    devices = check_devices(devices)
    Path(root).mkdir(parents=True, exist_ok=True)
    sweep_id = uuid.uuid4().hex
    options = {"wait_for_others": True, "poll_s": poll_s, "stale_after": stale_after,
               "heartbeat_every": heartbeat_every, "keep_checkpoint": keep_checkpoint}
    log(f"sweep {sweep_id[:8]}: {len(configs)} runs into {root} on {len(devices)} worker(s): {' '.join(devices)}")
    if len(devices) == 1:
        run_tasks(configs, root, device=devices[0], sweep_id=sweep_id, progress=progress, log=log, **options)
    else:
        n_cpu = sum(1 for d in devices if d == "cpu")
        threads = (max(1, (os.cpu_count() or 1) // n_cpu)
                   if n_cpu and "OMP_NUM_THREADS" not in os.environ else None)
        job = json.dumps({"configs": [c.to_dict() for c in configs], "root": str(root), "sweep_id": sweep_id,
                          "options": options})
        procs = []
        try:
            for d in devices:
                cmd = [sys.executable, "-m", "csigen.parallel", "--device", d]
                if d == "cpu" and threads:
                    cmd += ["--threads", str(threads)]
                p = subprocess.Popen(cmd, stdin=subprocess.PIPE, text=True)
                procs.append(p)
                p.stdin.write(job)
                p.stdin.close()
            codes = [p.wait() for p in procs]
        except BaseException:
            for p in procs:
                if p.poll() is None:
                    p.terminate()  # SIGTERM: the worker releases its lock; its checkpoint stays
            for p in procs:
                p.wait()
            raise
        for d, code in zip(devices, codes):
            if code == 2:
                log(f"the worker for {d} could not use that device (its error is above): fix --devices; it ran "
                    "nothing")
            elif code not in (0, 1):
                log(f"the worker on {d} ended with exit code {code}; a run it left unfinished resumes when the "
                    "sweep is launched again")
    rows = sweep_status(configs, root, sweep_id=sweep_id, stale_after=stale_after)
    return {"sweep_id": sweep_id, "devices": list(devices), "runs": rows,
            **{k: sum(r["status"] == k for r in rows) for k in ("finished", "failed", "missing", "running")}}


# ------------------------------------------------------------------------------------------- SLURM
class SweepJob:
    """The function of one array job: train one run (a config dict) under its lock, on ``device``.

    submitit calls :meth:`checkpoint` when SLURM is about to stop the job (time limit, preemption): the
    job is requeued with the same config and resumes from the run's ``checkpoint.pt`` (the lock, tagged
    with the job id, is taken over by the requeued job at once).
    """

    def __init__(self, root: str, device: str = "auto", sweep_id: str | None = None,
                 stale_after: float = DEFAULT_STALE_AFTER_S, keep_checkpoint: bool = False):
        self.root, self.device, self.sweep_id = str(root), device, sweep_id
        self.stale_after, self.keep_checkpoint = stale_after, keep_checkpoint

    def __call__(self, config_dict: dict) -> dict[str, Any]:
        from csigen.config import TrainConfig

        try:
            import submitit

            job_id = submitit.JobEnvironment().job_id
        except Exception:  # noqa: BLE001 - not inside a submitit job (e.g. called directly): no requeue identity
            job_id = None
        config = TrainConfig.from_dict(config_dict)
        tasks = _job_tasks()
        if tasks > 1:  # --slurm-gpus K > 1: K processes (one per GPU) train this one run together
            return self._one_run_on_tasks(config, job_id)
        [outcome] = run_tasks([config], self.root, device=self.device, sweep_id=self.sweep_id,
                              wait_for_others=False, stale_after=self.stale_after,
                              keep_checkpoint=self.keep_checkpoint,
                              owner_tag=f"submitit:{job_id}" if job_id else None)
        if outcome["status"] in ("failed", "lost"):
            raise RuntimeError(f"{outcome['run']}: {outcome['error']}")
        return outcome

    def _one_run_on_tasks(self, config, job_id: str | None) -> dict[str, Any]:
        """This job's K tasks as one torchrun-style run (:mod:`csigen.distributed`), rank 0 holding the lock.

        submitit's ``TorchDistributedEnvironment`` exports RANK, WORLD_SIZE, MASTER_ADDR/PORT and LOCAL_RANK
        as torchrun would; rank 0 alone checks the folder and takes its lock, then tells the others whether
        to train (so all K processes train or none does); the run itself is ``csigen.train.run`` as under
        ``torchrun --nproc_per_node=K -m csigen train``. Returns rank 0's outcome (the job's result).
        """
        from submitit.helpers import TorchDistributedEnvironment

        from csigen import distributed
        from csigen.results import run_dir
        from csigen.train import run

        if self.device is not None:
            config = dataclasses.replace(config, device=self.device)
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        w = distributed.init_from_env(config.device)
        out, lock, decision = run_dir(self.root, config), None, None
        try:
            if w.is_main:
                if (out / "result.json").exists():
                    decision = "finished"
                else:
                    lock = RunLock(out, stale_after=self.stale_after,
                                   owner_tag=f"submitit:{job_id}" if job_id else None)
                    decision = "train" if lock.acquire() else "held"
            decision = distributed.broadcast_object(decision)
            if decision != "train":
                return {"run": str(out), "status": decision}
            result = run(config, out, resume=True, progress=False, keep_checkpoint=self.keep_checkpoint,
                         callbacks=[_lock_guard(lock)] if lock is not None else [])
            auroc = (result or {}).get("auroc")  # rank 0 evaluates; the other processes return None
            return {"run": str(out), "status": "trained", "auroc": auroc, "world_size": w.size, "rank": w.rank}
        finally:
            if lock is not None:
                lock.release()
            distributed.shutdown()

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Requeue this job with the same arguments (submitit's Checkpointable protocol)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(SweepJob(self.root, self.device, self.sweep_id, self.stale_after,
                                          self.keep_checkpoint), *args, **kwargs)


def _job_tasks() -> int:
    """The number of tasks (processes) of the submitit job this process belongs to (1 outside a job)."""
    try:
        import submitit

        return int(submitit.JobEnvironment().num_tasks)
    except Exception:  # noqa: BLE001 - not inside a submitit job
        return 1


def slurm_parameters(*, timeout_min: int = 24 * 60, gpus_per_job: int = 1, cpus_per_job: int = 8,
                     mem_gb: float | None = None, partition: str | None = None, account: str | None = None,
                     qos: str | None = None, constraint: str | None = None,
                     array_parallelism: int | None = None, setup: Iterable[str] = (),
                     name: str = "csigen-sweep") -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` keywords for one run per array job.

    ``gpus_per_job`` K > 1: K tasks (processes) per job, one per GPU, which train the job's run together
    (DistributedDataParallel, :meth:`SweepJob._one_run_on_tasks`); ``cpus_per_job`` is split among them.
    """
    tasks = max(1, int(gpus_per_job))
    params: dict[str, Any] = {"name": name, "timeout_min": int(timeout_min), "nodes": 1, "tasks_per_node": tasks,
                              "gpus_per_node": int(gpus_per_job), "cpus_per_task": max(1, int(cpus_per_job) // tasks)}
    if mem_gb is not None:
        params["mem_gb"] = float(mem_gb)
    for key, value in (("partition", partition), ("account", account), ("qos", qos),
                       ("constraint", constraint), ("array_parallelism", array_parallelism)):
        if value is not None:
            params[f"slurm_{key}"] = value
    if setup:
        params["slurm_setup"] = list(setup)
    return params


def submit_sweep(configs: Sequence, root: str | os.PathLike, *, cluster: str = "slurm", device: str = "auto",
                 folder: str | os.PathLike | None = None, stale_after: float = DEFAULT_STALE_AFTER_S,
                 keep_checkpoint: bool = False, log: Callable[[str], None] = _log, **slurm: Any) -> dict[str, Any]:
    """Submit the runs of ``configs`` still missing as one submitit job array (one run per job).

    Finished runs and runs held by a live worker are not submitted, so launching the same sweep again
    submits only what is missing. ``cluster``: ``"slurm"``, or ``"local"`` / ``"debug"`` (submitit's
    LocalExecutor / DebugExecutor: the same jobs on this machine, every job at once; for trying the cluster
    path on a few runs). ``slurm``: keywords of :func:`slurm_parameters`. ``folder``: submitit's logs and
    pickles (default ``root/slurm_logs``).

    Returns ``{"jobs": [submitit Job], "submitted": [run folders], "finished": n, "running": n,
    "sweep_id", "logs"}``.
    """
    try:
        import submitit
    except ImportError as exc:
        raise RuntimeError("--launcher slurm needs submitit: pip install 'csigen[slurm]' (or pip install "
                           "submitit)") from exc
    from csigen.results import run_dir

    configs = check_sweep_folders(configs, root)
    Path(root).mkdir(parents=True, exist_ok=True)
    rows = sweep_status(configs, root, stale_after=stale_after)
    todo = [c for c, r in zip(configs, rows) if r["status"] == "missing"]
    counts = {k: sum(r["status"] == k for r in rows) for k in ("finished", "running")}
    folder = Path(folder) if folder is not None else Path(root) / "slurm_logs"
    sweep_id = uuid.uuid4().hex
    report: dict[str, Any] = {"jobs": [], "submitted": [str(run_dir(root, c)) for c in todo], "sweep_id": sweep_id,
                              "logs": str(folder), **counts}
    log(f"{len(configs)} runs: {counts['finished']} finished, {counts['running']} running elsewhere, "
        f"{len(todo)} to submit")
    if not todo:
        return report
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = slurm_parameters(**slurm)
    if cluster != "slurm":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        if device == "cpu" or cluster == "debug":
            params["gpus_per_node"] = 0
    executor.update_parameters(**params)
    report["jobs"] = executor.map_array(SweepJob(str(root), device, sweep_id, stale_after, keep_checkpoint),
                                        [c.to_dict() for c in todo])
    ids = [j.job_id for j in report["jobs"]]
    log(f"submitted {len(ids)} job(s) ({cluster}): {ids[0]}{' ... ' + ids[-1] if len(ids) > 1 else ''}; "
        f"logs in {folder}")
    return report


def wait_for_jobs(jobs: Sequence) -> list[dict[str, Any]]:
    """Wait for submitit jobs; one dict per job: the job's outcome, or ``{"status": "failed", "error"}``."""
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.results()[0])  # task 0's (rank 0's) outcome; a job has K tasks with --slurm-gpus K
        except Exception as exc:  # noqa: BLE001 - submitit re-raises the job's error; reported per job
            message = str(exc).strip().splitlines()
            outcomes.append({"job": job.job_id, "status": "failed", "error": message[-1] if message else repr(exc)})
    return outcomes


if __name__ == "__main__":
    sys.exit(_device_worker())
