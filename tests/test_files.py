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


def test_ctrl_c_inside_torch_save_stays_an_interruption(tmp_path):
    """torch.save's zip writer turns a KeyboardInterrupt raised in the middle of its writes into a RuntimeError
    ("unexpected pos"), which was reported as a disk error (exit 1 instead of 130)."""
    path = atomic_save({"w": torch.zeros(4)}, tmp_path / "last.pt")
    before = path.read_bytes()

    class CtrlC:  # the temporary file, interrupted on its third write
        def __init__(self, f):
            self.f, self.calls = f, 0

        def write(self, data):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, lambda f: torch.save({"w": torch.ones(1000)}, CtrlC(f)))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_the_temporary_names_are_exactly_the_writers_own(tmp_path, monkeypatch):
    """is_temporary recognises the writer's `.X.<8 hex>.tmp` and nothing a user would name *.tmp."""
    from minigpt.files import is_temporary

    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(os.path.basename(src)), real_replace(src, dst)))
    atomic_write_text(tmp_path / "model.safetensors", "x")
    assert len(seen) == 1 and is_temporary(seen[0]) and seen[0].startswith(".model.safetensors.")
    for name in ("notes.tmp", ".notes.tmp", "x.12345678.tmp", ".x.1234567.tmp", ".x.ABCDEF12.tmp", ".x.12345678.tmp~"):
        assert not is_temporary(name), name
