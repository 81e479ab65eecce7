"""minigpt/files.py, the one atomic writer: complete files or the old ones, never a partial file or a temporary
one left behind; a failure is an OSError naming the file and the cause."""
from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from minigpt.files import atomic_save, atomic_write, atomic_write_bytes, atomic_write_text


def test_text_bytes_and_tensors_round_trip(tmp_path):
    text = "line one\r\nline two\nünïcode\n"  # newlines as given, UTF-8
    assert atomic_write_text(tmp_path / "sub" / "a.txt", text) == tmp_path / "sub" / "a.txt"  # parents created
    assert (tmp_path / "sub" / "a.txt").read_bytes() == text.encode("utf-8")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], torch.arange(3))
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o644  # an ordinary file, not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "c.pt", "sub"]  # no temporary file


def test_a_failed_write_keeps_the_old_file_and_names_the_cause(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "metrics.jsonl", "old\n")

    def half_then_full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match=r"could not write .*metrics\.jsonl: No space left on device \(errno 28\)"):
        atomic_write(path, half_then_full)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]

    def torch_failure(f):  # torch.save reports its own write errors as RuntimeError
        raise RuntimeError("PytorchStreamWriter failed writing file data/0")

    with pytest.raises(OSError, match="RuntimeError: PytorchStreamWriter failed"):
        atomic_write(path, torch_failure)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_a_programming_error_is_not_reported_as_a_disk_problem(tmp_path):
    def unsupported(f):  # e.g. copying a meta tensor's data, which it does not have
        raise NotImplementedError("Cannot copy out of meta tensor")

    with pytest.raises(NotImplementedError):
        atomic_write(tmp_path / "m.pt", unsupported)
    assert not list(tmp_path.iterdir())
