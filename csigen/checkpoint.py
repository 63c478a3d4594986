"""Atomic, safe checkpoint and result files.

* Every file is written to a temporary name in the same folder, flushed,
  fsync'ed and renamed over the target (``os.replace`` is atomic on POSIX and
  Windows), so a process killed at any moment (SIGKILL included) leaves either
  the previous complete file or the new complete file, never a torn one.
* Checkpoints are loaded with ``torch.load(..., weights_only=True)``: a file
  that would run code when unpickled is refused with :class:`CheckpointError`.
* Every checkpoint carries :data:`FORMAT_VERSION` (the layout of the file),
  ``schema_version`` (:data:`csigen.config.SCHEMA_VERSION`, the meaning of its
  config and records; absent in csigen 0.1.0's checkpoints, which are version
  0 and load unchanged: their config is upgraded by
  :meth:`csigen.config.TrainConfig.from_dict`) and the config that made it, so
  a checkpoint from another dataset, variant or model size is refused with a
  message that says what differs, and one from a newer csigen is refused with
  a message that says to upgrade.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from csigen.config import SCHEMA_VERSION, ConfigError, check_schema_version

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message says why and what to do."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows, where directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_and_sync(fd: int, data: bytes) -> None:
    """Write ``data`` to the open file ``fd``, flush and fsync it; closes ``fd``."""
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename).

    A write that fails because the disk (or quota) is full leaves the previous
    file untouched, deletes the temporary file and raises
    :class:`csigen.disk.DiskFullError` (an ``OSError``), whose message names the
    file, the space needed, the state of the folder's last checkpoint and how
    to resume.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        _write_and_sync(fd, data)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        from csigen.disk import is_no_space, no_space_error

        if is_no_space(exc):
            raise no_space_error(path, len(data), exc) from exc
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files left by a process killed mid-write (``.<name>.*.tmp``)."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        if path.name.startswith(".write-test."):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove we can write there, before long work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise PermissionError(
            f"output folder {str(folder)!r} is not writable ({exc.strerror or exc}); "
            "pass another folder with --out (or CSIGEN_OUT in the notebooks)"
        ) from exc
    return folder


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Save ``payload`` (tensors, dicts, lists, numbers, strings) atomically.

    ``format_version`` and ``schema_version`` are added. The payload must be
    loadable with ``weights_only=True``: only tensors and plain Python containers.
    """
    payload = {"format_version": FORMAT_VERSION, "schema_version": SCHEMA_VERSION, **payload}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check its format and schema versions.

    The returned dict always has ``schema_version`` (0 for csigen 0.1.0's
    checkpoints, which lack it); its ``config`` is returned as saved (read it
    with :meth:`csigen.config.TrainConfig.from_dict`, which upgrades it).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: truncated or corrupt file, a file that would execute
            code when loaded, an incompatible format version, or a schema
            version from a newer csigen (the message says to upgrade).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text or "weights_only" in text:
            raise CheckpointError(
                f"refusing to load {str(path)!r}: it contains objects that would run code when "
                "unpickled (only tensors and plain containers are allowed). Do not load files from "
                "sources you do not trust; csigen checkpoints never need this."
            ) from exc
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt ({exc}); delete it and re-run") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupt ({type(exc).__name__}: {exc}); "
            "delete it (or restore a copy) and re-run; training restarts from the beginning"
        ) from exc
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{str(path)!r} is not a csigen checkpoint (no format_version)")
    version = payload["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {version}, this csigen reads version "
            f"{FORMAT_VERSION}; use the csigen version that wrote it or retrain"
        )
    try:
        payload["schema_version"] = check_schema_version(payload.get("schema_version", 0),
                                                         f"checkpoint {str(path)!r}")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    return payload


def check_compatible(saved: dict[str, Any], expected: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose model signature (dataset, variant, sizes...) differs."""
    diffs = [
        f"{k}: checkpoint has {saved.get(k)!r}, this run has {expected[k]!r}"
        for k in expected
        if saved.get(k) != expected[k]
    ]
    if diffs:
        raise CheckpointError(
            f"checkpoint {str(path)!r} comes from another setup ("
            + "; ".join(diffs)
            + "). Use a different output folder, or match the settings, or pass resume=False "
            "to start over."
        )
