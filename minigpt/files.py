"""Writing files so that a crash never leaves half of one, and the record of the input files a run read.

Atomic write: a crash (SIGKILL, power loss, a full disk) must never leave a half-written file under a real name.
So each file is written to a temporary `.X.<random>.tmp` beside `X` (removed when the write fails), flushed to
disk (fsync), then renamed over `X` (os.replace is atomic on POSIX and Windows): a reader sees either the old
complete file or the new complete one, never a mixture.

    atomic_write_text(path, text)     UTF-8, newlines as given
    atomic_write_bytes(path, data)
    atomic_save(obj, path)            torch.save
    atomic_write(path, write)         any writer: write(f) gets the open binary temporary file

A failed write raises OSError naming the path and the cause (for torch's own errors, the free space left).

FILES_READ: {name: path} of every data file a task read in this process (tasks/data/files.py records them); the
trainer fingerprints them so that --resume refuses a run whose data changed (training/run_settings.py).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

FILES_READ: dict[str, Path] = {}


def atomic_write(path: str | Path, write) -> Path:
    """write(f) into a temporary file beside `path`, flush it to disk, then rename it to `path`. Returns path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # a name no one else uses
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp made it private; the file is an ordinary output
        os.replace(tmp, path)  # the atomic step: `path` now names the complete new file
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        if isinstance(e, NotImplementedError):  # a programming error (e.g. a meta tensor), not the disk
            raise
        raise OSError(f"could not write {path}: {write_failure(e, path.parent)}; the file as it was before "
                      "is untouched") from e
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone already after a successful rename
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save(obj, path), atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def write_failure(e: Exception, directory: Path) -> str:
    """Why a write failed, in words: the OS's reason, or for torch's own errors the free space left."""
    if isinstance(e, OSError):
        return f"{e.strerror or e} (errno {e.errno})" if e.errno else str(e)
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        free = None
    if free is not None and free < 64 * 1024 * 1024:
        return f"No space left on device ({free:,} bytes free; torch: {e})"
    return f"{type(e).__name__}: {e}"


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); best effort, some systems cannot open directories."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
