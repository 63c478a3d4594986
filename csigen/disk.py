"""Disk space: slim finished runs, disk estimates for sweeps, and a clear message when the disk is full.

A run folder (written by :func:`csigen.train.run`) holds, while it trains,
``checkpoint.pt``: every network's weights plus their optimisers' state (LARS
momentum for F, Adam's two moments for G, D, E, D'), random states and history,
so it can resume exactly. Once the run has finished, only the weights are
needed (the notebooks, ``eval``, ``fid`` and ``figures`` load networks, never
optimisers), so :func:`finish_run_files` writes them into one file,
``weights.pt`` (:data:`WEIGHTS_FILE`), and deletes ``checkpoint.pt``, unless
the run was started with ``keep_checkpoint=True`` (``--keep-checkpoint``).
This halves a finished ``csi`` run and shrinks a ``full`` run by more
(:func:`estimate_run_disk` computes the sizes from the networks' parameter
counts; the README's "Disk space" lists them for the presets).

* :func:`run_weights_file` is where a run's networks are read from:
  ``checkpoint.pt`` when present (an interrupted run, or one kept with
  ``keep_checkpoint``), else ``weights.pt`` (a slim finished run).
  :meth:`csigen.train.Trainer.from_run`, :mod:`csigen.fid` and
  :mod:`csigen.figures` go through it.
* A slim run cannot be trained further (its optimiser state is gone): asking
  :meth:`~csigen.train.Trainer.fit` to resume it raises :class:`FinishedRunError`,
  which says so and what to do instead.
* :func:`estimate_sweep_disk` / :func:`check_sweep_space` estimate, before a
  sweep starts, the space its runs will take and compare it with the free
  space of the target folder (:func:`shutil.disk_usage`).
* :func:`no_space_error` turns a write that failed for lack of space (errno
  ``ENOSPC`` or ``EDQUOT``) into :class:`DiskFullError`, whose message names the
  file, the space needed, says that the last checkpoint is intact and how to
  resume. :func:`csigen.checkpoint.atomic_write_bytes` raises it.

Importing this module does nothing; torch is imported only by the functions
that build networks or load files.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csigen.checkpoint import CheckpointError

__all__ = [
    "CHECKPOINT_FILE", "RECORD_FILES", "WEIGHTS_FILE", "DiskFullError", "FinishedRunError", "NotEnoughSpaceError", "RunDisk",
    "SweepDisk", "check_sweep_space", "discard_records_for_retraining", "estimate_run_disk", "estimate_sweep_disk", "finish_run_files",
    "format_bytes", "has_run_weights", "is_no_space", "network_state_bytes", "no_space_error", "refuse_to_resume_finished",
    "run_weights_file", "weights_state",
]

#: The resumable state of a run (weights, optimisers, random states, history); written by Trainer.save_checkpoint.
CHECKPOINT_FILE = "checkpoint.pt"
#: The networks' weights of a finished run, in one file (what ``checkpoint.pt`` becomes when a run finishes).
WEIGHTS_FILE = "weights.pt"
#: The keys of a checkpoint that ``weights.pt`` keeps: the networks and what describes them. Dropped:
#: ``optimizers``, ``precision`` (fp16 loss scalers), ``rng`` and ``history`` (``history.csv`` has it).
WEIGHTS_KEYS = ("config", "signature", "step", "total_steps", "lr_scale", "rollbacks", "train_seconds", "nets",
                "time_budget")
#: Errors that mean "the disk (or the user's quota, e.g. Google Drive's) is full".
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

# Dataset sizes used only to estimate a run's number of steps (history.csv) and test images (scores.npz)
# when the config does not cap them: training images of one inlier class and test images of all classes.
_TRAIN_PER_CLASS = {"cifar10": 5000, "cifar100": 2500, "imagenet30": 1300, "shapes": 600}
_TEST_IMAGES = {"cifar10": 10000, "cifar100": 10000, "imagenet30": 3000, "shapes": 1600}
_UNKNOWN_TRAIN, _UNKNOWN_TEST = 5000, 10000  # imagefolder: sizes unknown until it is read; CIFAR-like
#: Bytes of history.csv per training step (measured on smoke runs: about 100 B for csi's 7 columns, 210 for
#: full's 17; doubled, since longer runs have longer step numbers and loss values).
_HISTORY_BYTES_PER_STEP = {"csi": 200, "csi+g": 340, "full": 420}
#: config.json, result.json and the pickling overhead of the .pt files: a generous constant per run.
_RECORDS_BYTES = 256 * 1024


class FinishedRunError(CheckpointError):
    """A finished run was asked to resume training; its optimiser state was dropped (slim run)."""


class DiskFullError(OSError):
    """A write failed because the disk (or quota) is full; the message names the file and the fix.

    ``errno`` is the original error's (``ENOSPC`` or ``EDQUOT``); ``filename`` the file
    that was being written, ``needed`` the bytes that write needed.
    """

    def __init__(self, message: str, *, errno_: int, filename: str, needed: int):
        super().__init__(message)
        self.errno, self.filename, self.needed = errno_, filename, needed

    def __str__(self) -> str:  # OSError would print "[Errno 28] ..." before a tuple; the message says it all
        return self.args[0]


class NotEnoughSpaceError(OSError):
    """A sweep would not fit on the disk of its target folder (see :func:`check_sweep_space`)."""

    def __init__(self, message: str, estimate: SweepDisk):
        super().__init__(message)
        self.errno, self.estimate = errno.ENOSPC, estimate

    def __str__(self) -> str:
        return self.args[0]


def format_bytes(n: float) -> str:
    """``n`` bytes in decimal units, e.g. ``"92.1 MB"``, ``"1.20 GB"`` (as disks and Google Drive count)."""
    n = float(n)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.2f} {unit}" if unit in ("GB", "TB") else f"{value:.1f} {unit}"
    return f"{int(n)} B"


# ----------------------------------------------------------------------------------------------
# Slim finished runs
# ----------------------------------------------------------------------------------------------
def run_weights_file(run_dir: str | os.PathLike) -> Path:
    """The file a run's networks are loaded from: ``checkpoint.pt`` if present, else ``weights.pt``.

    ``checkpoint.pt`` comes first: it is the newest state of a run that is still
    training or was interrupted, and a finished run kept with ``keep_checkpoint``
    has no ``weights.pt``. Raises :class:`FileNotFoundError` (saying what to do)
    when the folder has neither.
    """
    run_dir = Path(run_dir)
    for name in (CHECKPOINT_FILE, WEIGHTS_FILE):
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(
        f"no checkpoint in {str(run_dir)!r} (neither {CHECKPOINT_FILE} nor a finished run's {WEIGHTS_FILE}): "
        "train the run first "
        "(csigen.train.run(config, run_dir) or `python -m csigen train ... --out DIR`), or check the folder")


def has_run_weights(run_dir: str | os.PathLike) -> bool:
    """True when the folder holds a run's networks (``checkpoint.pt`` or ``weights.pt``)."""
    return any((Path(run_dir) / name).is_file() for name in (CHECKPOINT_FILE, WEIGHTS_FILE))


def weights_state(state: dict[str, Any]) -> dict[str, Any]:
    """The part of a trainer's :meth:`~csigen.train.Trainer.state_dict` that ``weights.pt`` keeps (:data:`WEIGHTS_KEYS`)."""
    return {k: state[k] for k in WEIGHTS_KEYS if k in state}


def finish_run_files(trainer, out_dir: str | os.PathLike, *, keep_checkpoint: bool = False) -> Path:
    """Leave a finished run's folder with its weights in one file; returns the file the networks are in.

    Called by :func:`csigen.train.run` after ``result.json`` is written. By
    default the networks go into ``weights.pt`` (written atomically first) and
    ``checkpoint.pt`` (weights plus optimiser state) is deleted afterwards, so at
    every moment one complete copy of the weights is on disk. With
    ``keep_checkpoint=True`` ``checkpoint.pt`` stays (the run can be trained
    further, e.g. with a larger ``max_steps``) and a ``weights.pt`` left by an
    earlier run in the folder is removed, so the folder holds one set of weights.
    """
    from csigen.checkpoint import save_checkpoint

    out = Path(out_dir)
    checkpoint, weights = out / CHECKPOINT_FILE, out / WEIGHTS_FILE
    if keep_checkpoint:
        if not checkpoint.is_file():
            trainer.save_checkpoint()
        weights.unlink(missing_ok=True)
        return checkpoint
    save_checkpoint(weights, weights_state(trainer.state_dict()))
    checkpoint.unlink(missing_ok=True)
    return weights


#: What a run's evaluation and measurements write, derived from its networks: stale once they train again
#: (csigen.fid's FID_FILE and FID_RECORDS_FILE, csigen.figures' FIGURE2_FEATURES_FILE: not imported, they import torch).
RECORD_FILES = ("result.json", "scores.npz", "fid.json", "fid_records.json", "figure2_features.pt")


def discard_records_for_retraining(out_dir: str | os.PathLike, *, restart: bool) -> list[str]:
    """Remove what a run folder holds of a run that is about to be trained again (``force=True``); returns the names.

    Without this, a forced run's folder kept the old ``result.json`` while it trained:
    ``table``, ``figures`` and sweeps reported the old run as finished, and an interrupted
    forced run was then "already finished" (or scored with its new, partly trained
    weights against the old ``scores.npz``). ``result.json`` goes first, so at no moment
    does the folder read as a finished run whose files disagree. Always removed:
    :data:`RECORD_FILES` (with Figure 2's cached features) and ``weights.pt``; with ``restart`` (training from step 0,
    not continuing ``checkpoint.pt``) also ``checkpoint.pt``, ``history.csv`` and the
    G snapshots (``g_snapshots/``). ``config.json`` is rewritten by the caller.
    """
    out = Path(out_dir)
    names = [*RECORD_FILES, WEIGHTS_FILE] + ([CHECKPOINT_FILE, "history.csv"] if restart else [])
    removed = []
    for name in names:
        if (out / name).is_file():
            (out / name).unlink()
            removed.append(name)
    if restart and (out / "g_snapshots").is_dir():  # csigen.fid.G_SNAPSHOT_DIR (not imported: it imports torch)
        shutil.rmtree(out / "g_snapshots")
        removed.append("g_snapshots/")
    return removed


def refuse_to_resume_finished(out_dir: str | os.PathLike | None) -> None:
    """Raise :class:`FinishedRunError` when ``out_dir`` holds a slim finished run (``weights.pt``, no checkpoint).

    Called when training is asked to resume from a folder without
    ``checkpoint.pt``: a slim run cannot continue (its optimiser state was
    dropped when it finished), and starting over silently would overwrite it.
    """
    if out_dir is None:
        return
    out = Path(out_dir)
    if (out / CHECKPOINT_FILE).exists() or not (out / WEIGHTS_FILE).is_file():
        return
    where = f"{str(out)!r}"
    result = "its result.json" if (out / "result.json").is_file() else "no result.json (deleted?)"
    raise FinishedRunError(
        f"{where} holds a finished run: its weights are in {WEIGHTS_FILE} and {result}; its optimiser state was "
        f"dropped when it finished, so it cannot be resumed or trained further. To use it: "
        f"Trainer.from_run({where}), `python -m csigen eval --run {out}` (scores), `fid` or `figures`. "
        "To train again: start over with resume=False (or --force), or use another folder (--out). "
        "Runs that should stay resumable after they finish: run(..., keep_checkpoint=True) (--keep-checkpoint).")


# ----------------------------------------------------------------------------------------------
# Estimates
# ----------------------------------------------------------------------------------------------
def _image_size(config) -> int:
    """The networks' input size of ``config``'s dataset (csigen.data's defaults: 224 for ImageNet-30, else 32)."""
    return 224 if config.dataset == "imagenet30" else 32


def _network_sizes(config) -> dict[str, tuple[int, int]]:
    """``{name: (state_dict bytes, parameter bytes)}`` of each network of ``config``'s variant and sizes.

    The networks are built on PyTorch's ``meta`` device (no memory, no
    initialisation cost) by :meth:`csigen.train.Trainer._build_networks`, the
    one place that builds them, so the estimate follows any change of the models.
    Sizes are remembered per model (:meth:`~csigen.config.TrainConfig.model_signature`
    without the class, and the input size).
    """
    signature = {k: v for k, v in config.model_signature().items() if k != "inlier"}
    key = (tuple(sorted(signature.items())), _image_size(config))
    if key not in _SIZES:
        import types

        import torch

        from csigen.train import Trainer

        stub = types.SimpleNamespace(config=config, task=types.SimpleNamespace(image_size=_image_size(config)))
        with torch.device("meta"):
            nets = Trainer._build_networks(stub)
        _SIZES[key] = {name: (sum(t.numel() * t.element_size() for t in net.state_dict().values()),
                              sum(p.numel() * p.element_size() for p in net.parameters()))
                       for name, net in nets.items()}
    return dict(_SIZES[key])


_SIZES: dict[tuple, dict[str, tuple[int, int]]] = {}


def network_state_bytes(config) -> dict[str, int]:
    """Bytes of each network's ``state_dict`` (parameters and buffers) for ``config``'s variant and sizes."""
    return {name: state for name, (state, _) in _network_sizes(config).items()}


def _optimizer_copies(config, name: str) -> int:
    """Tensors of optimiser state per parameter: Adam keeps 2 (both moments), SGD/LARS 1 (momentum) or 0."""
    if name != "F" or config.f_optimizer == "adam":
        return 2
    return 1 if config.f_momentum else 0


def _planned_steps(config) -> tuple[int, str]:
    """The run's number of steps as far as the config tells it, and how it was found."""
    n_train = _TRAIN_PER_CLASS.get(config.dataset, _UNKNOWN_TRAIN)
    if config.max_train is not None:
        n_train = min(n_train, config.max_train)
    steps = config.planned_steps(n_train)
    how = "epochs x steps per epoch" + (", capped by max_steps" if config.max_steps else "")
    if config.time_budget_min is not None:
        how += " (a time budget decides the real count)"
    return steps, how


@dataclass(frozen=True)
class RunDisk:
    """Estimated disk use of one run, in bytes (see :func:`estimate_run_disk`)."""

    weights: int          #: the networks' weights (weights.pt's tensors)
    optimizer: int        #: optimiser state (in checkpoint.pt only)
    checkpoint: int       #: checkpoint.pt: weights + optimiser state
    snapshots: int        #: g_snapshots/ (G every g_snapshot_every_steps steps)
    records: int          #: history.csv, scores.npz, config.json, result.json, file overhead
    finished: int         #: the finished folder (weights.pt, or checkpoint.pt with keep_checkpoint) + the rest
    peak: int             #: the most at any moment: old checkpoint + its replacement being written + the rest
    steps: int            #: the steps the estimate assumes
    keep_checkpoint: bool
    networks: dict[str, int] = field(default_factory=dict)  #: weights' bytes per network (F, G, D, E, Dp)


def estimate_run_disk(config, *, keep_checkpoint: bool = False) -> RunDisk:
    """Disk use of a run of ``config``, computed from the networks' parameter counts.

    Weights and optimiser state are float32 (mixed precision keeps float32
    master weights): a ``csi`` run's F (ResNet-18, 11.5 M parameters) is 46 MB,
    its LARS momentum as much again; G, D, E, D' each keep Adam's two moments.
    ``peak`` counts two checkpoints because a checkpoint is written to a
    temporary file beside the previous one, which is replaced only once the new
    one is complete. ``records`` estimates history.csv from the number of steps
    (epochs x steps per epoch, capped by max_steps; the dataset's usual size
    when max_train is None), scores.npz from the test set and adds a constant for
    the JSON files and file overhead.
    """
    sizes = _network_sizes(config)
    nets = network_state_bytes(config)
    weights = sum(nets.values())
    optimizer = sum(_optimizer_copies(config, name) * params for name, (_, params) in sizes.items())
    checkpoint = weights + optimizer
    steps, _ = _planned_steps(config)
    snapshots = 0
    if config.uses_generator and config.g_snapshot_every_steps:
        snapshots = (steps // int(config.g_snapshot_every_steps)) * nets["G"]
    n_test = _TEST_IMAGES.get(config.dataset, _UNKNOWN_TEST)
    if config.max_test is not None:
        n_test = min(n_test, config.max_test)
    records = steps * _HISTORY_BYTES_PER_STEP[config.variant] + n_test * 4 * 8 + _RECORDS_BYTES
    finished = (checkpoint if keep_checkpoint else weights) + snapshots + records
    peak = 2 * checkpoint + snapshots + records
    return RunDisk(weights=weights, optimizer=optimizer, checkpoint=checkpoint, snapshots=snapshots,
                   records=records, finished=finished, peak=max(peak, finished), steps=steps,
                   keep_checkpoint=keep_checkpoint, networks=nets)


@dataclass(frozen=True)
class SweepDisk:
    """A sweep's estimated disk use against the free space of its folder (see :func:`estimate_sweep_disk`)."""

    root: str
    runs: int            #: runs in the sweep
    to_do: int           #: runs without result.json (to train)
    finished_bytes: int  #: what the runs still to do will occupy when all have finished
    peak_bytes: int      #: the most needed at any moment (finished_bytes + one run's training overhead)
    free_bytes: int      #: free space of root's disk now
    per_variant: dict[str, int] = field(default_factory=dict)  #: a finished run's size per variant
    keep_checkpoint: bool = False

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.free_bytes

    def describe(self) -> str:
        """One paragraph: what the sweep needs, what is free, per-variant run sizes."""
        sizes = ", ".join(f"{v} {format_bytes(b)}" for v, b in self.per_variant.items())
        kind = "with checkpoint.pt kept" if self.keep_checkpoint else "slim: weights.pt, no optimiser state"
        return (f"disk: {self.to_do} of {self.runs} runs to do; about {format_bytes(self.finished_bytes)} when "
                f"finished ({kind}; one finished run: {sizes or 'none to do'}), at most "
                f"{format_bytes(self.peak_bytes)} while the last one trains; {format_bytes(self.free_bytes)} free "
                f"on the disk of {self.root}")


def _free_bytes(folder: Path) -> tuple[int, Path]:
    """Free space of the disk ``folder`` is (or will be) on: its nearest existing ancestor's."""
    probe = folder.expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free, probe


def estimate_sweep_disk(configs: Iterable, root: str | os.PathLike, *, keep_checkpoint: bool = False) -> SweepDisk:
    """Estimate what running ``configs`` into ``root`` (:func:`csigen.results.run_dir`) will take on disk.

    Runs whose folder already has ``result.json`` need nothing more. For the
    others: the sum of their finished sizes, plus the largest training overhead
    (peak minus finished: one run trains at a time). An interrupted run's
    existing checkpoint is not subtracted, so the estimate errs on the safe side.
    Networks are sized once per distinct model (:func:`estimate_run_disk`).
    """
    from csigen.results import run_dir

    root = Path(root)
    configs = list(configs)
    cache: dict[tuple, RunDisk] = {}
    finished = overhead = to_do = 0
    per_variant: dict[str, int] = {}
    for config in configs:
        if (run_dir(root, config) / "result.json").is_file():
            continue
        to_do += 1
        key = (tuple(sorted(config.model_signature().items())), config.dataset, config.f_optimizer,
               bool(config.f_momentum), config.g_snapshot_every_steps, config.max_steps, config.epochs,
               config.batch_size, config.max_train, config.max_test)
        if key not in cache:
            cache[key] = estimate_run_disk(config, keep_checkpoint=keep_checkpoint)
        est = cache[key]
        finished += est.finished
        overhead = max(overhead, est.peak - est.finished)
        per_variant[config.variant] = max(per_variant.get(config.variant, 0), est.finished)
    free, _ = _free_bytes(root)
    return SweepDisk(root=str(root), runs=len(configs), to_do=to_do, finished_bytes=finished,
                     peak_bytes=finished + overhead, free_bytes=free, per_variant=per_variant,
                     keep_checkpoint=keep_checkpoint)


def check_sweep_space(configs: Iterable, root: str | os.PathLike, *, keep_checkpoint: bool = False) -> SweepDisk:
    """:func:`estimate_sweep_disk`, raising :class:`NotEnoughSpaceError` when the sweep does not fit.

    The message says how much is needed and free, and the ways out: free
    space, another folder, a smaller sweep, or starting anyway (each run then
    stops with :class:`DiskFullError` when the disk fills, and resumes later).
    """
    est = estimate_sweep_disk(configs, root, keep_checkpoint=keep_checkpoint)
    if est.fits:
        return est
    short = est.peak_bytes - est.free_bytes
    keep = (" Without --keep-checkpoint (keep_checkpoint=False) finished runs keep their weights only, "
            "which is much smaller." if keep_checkpoint else "")
    raise NotEnoughSpaceError(
        f"not enough disk space for this sweep: it needs about {format_bytes(est.peak_bytes)} in {str(root)!r} "
        f"({est.to_do} runs to train; finished runs "
        + ", ".join(f"{v}: {format_bytes(b)} each" for v, b in est.per_variant.items())
        + f"), and that disk has {format_bytes(est.free_bytes)} free ({format_bytes(short)} short)."
        + keep
        + " Free some space (e.g. delete run folders you no longer need, or empty Google Drive's trash), "
        "write the sweep to a bigger disk (--out / root), or split it into smaller sweeps (fewer --inliers, "
        "--variants or --seeds). To start anyway, pass --no-disk-check (check_disk=False): a run that fills "
        "the disk then stops with a message naming the file, its last checkpoint stays intact, and it resumes "
        "once space is freed.", est)


# ----------------------------------------------------------------------------------------------
# A full disk
# ----------------------------------------------------------------------------------------------
def no_space_error(path: str | os.PathLike, needed: int, cause: OSError) -> DiskFullError:
    """The :class:`DiskFullError` for a write of ``needed`` bytes to ``path`` that failed with ``cause``.

    The message names the file and the space needed and free; says that the
    previous version of the file is intact (writes go to a temporary file that
    replaces the target only when complete, and the temporary file is deleted)
    and whether the folder's last checkpoint is intact (with its time); and says
    how to resume: free space or move the folder, then run the same command again.
    """
    path = Path(path)
    free_text = "unknown"
    try:
        free_text = format_bytes(shutil.disk_usage(path.parent).free)
    except OSError:
        pass
    previous = (f"the previous {path.name} is intact" if path.exists()
                else f"{path.name} was not written (no partial file is left)")
    checkpoint = path.parent / CHECKPOINT_FILE
    if checkpoint.is_file():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(checkpoint.stat().st_mtime))
        state = (f"The run's last checkpoint, {checkpoint} (written {when}), is intact: training resumes from it.")
    elif path.name == CHECKPOINT_FILE:
        state = "This run had no checkpoint yet: it will start from step 0."
    else:
        state = ""
    quota = " or over its quota" if cause.errno == errno.EDQUOT else ""
    return DiskFullError(
        f"no space left on the disk of {path.parent}{quota} while writing {path}: the write needs "
        f"{format_bytes(needed)} free, the disk has {free_text} free. Nothing was lost: {previous}. {state} "
        f"To resume: free at least {format_bytes(needed)} there (delete run folders you no longer need, the "
        f"{CHECKPOINT_FILE} of finished runs, unneeded g_snapshots/ folders, or empty Google Drive's trash), or "
        f"copy the run folder to a disk with space and point --out (OUT in a notebook) there; then run the same "
        f"command (or cell) again: a finished run is reported, an interrupted one continues from its last "
        f"checkpoint.".replace("  ", " "),
        errno_=cause.errno or errno.ENOSPC, filename=str(path), needed=int(needed))


def is_no_space(exc: BaseException) -> bool:
    """True for an OSError that means the disk or quota is full."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS and not isinstance(exc, DiskFullError)
