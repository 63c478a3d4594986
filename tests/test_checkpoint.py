"""Atomic writes and safe loading of checkpoints."""

import os
import pickle

import pytest
import torch

from csigen.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_write_json,
    atomic_write_text,
    check_compatible,
    check_writable,
    load_checkpoint,
    save_checkpoint,
)
from csigen.config import SCHEMA_VERSION


def test_roundtrip_and_version(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.arange(3.0), "meta": {"step": 4, "h": [1.0, 2.0]}})
    state = load_checkpoint(path)
    assert state["format_version"] == FORMAT_VERSION and state["schema_version"] == SCHEMA_VERSION
    assert torch.equal(state["w"], torch.arange(3.0)) and state["meta"]["h"] == [1.0, 2.0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    atomic_write_json(target, {"auroc": 0.9})
    real_replace = os.replace

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "partial")
    monkeypatch.setattr(os, "replace", real_replace)
    assert '"auroc": 0.9' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # temp file cleaned up


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format_version": FORMAT_VERSION, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="would run code"):
        load_checkpoint(path)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)


def test_truncated_and_garbage_files(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.randn(1000)})
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt|corrupt"):
            load_checkpoint(bad)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_checkpoint(empty)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_version_and_foreign_files(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a csigen checkpoint"):
        load_checkpoint(path)


def test_schema_versions(tmp_path):
    """csigen 0.1.0 wrote no schema_version (version 0): loaded as 0; a newer one asks for an upgrade."""
    old = tmp_path / "old.pt"
    torch.save({"format_version": FORMAT_VERSION, "config": {"amp": True}, "step": 3}, old)
    state = load_checkpoint(old)
    assert state["schema_version"] == 0 and state["config"] == {"amp": True} and state["step"] == 3
    new = tmp_path / "new.pt"
    torch.save({"format_version": FORMAT_VERSION, "schema_version": SCHEMA_VERSION + 1}, new)
    with pytest.raises(CheckpointError, match=rf"new.pt' was written by a newer csigen \(schema version "
                                              rf"{SCHEMA_VERSION + 1}\).*[Uu]pgrade csigen"):
        load_checkpoint(new)
    torch.save({"format_version": FORMAT_VERSION, "schema_version": "one"}, new)
    with pytest.raises(CheckpointError, match="invalid schema_version 'one'"):
        load_checkpoint(new)


def test_check_compatible_names_the_difference():
    check_compatible({"dataset": "cifar10", "variant": "full"}, {"dataset": "cifar10", "variant": "full"}, "x")
    with pytest.raises(CheckpointError, match="variant: checkpoint has 'csi', this run has 'full'"):
        check_compatible({"dataset": "cifar10", "variant": "csi"}, {"dataset": "cifar10", "variant": "full"}, "x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(PermissionError, match="not writable"):
        check_writable(ro / "run")


def test_unwritable_folder_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(PermissionError, match="not writable.*--out"):
        check_writable(f / "run")
