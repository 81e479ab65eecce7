"""Writing files so that a crash never leaves half of one.

Atomic write: a crash (SIGKILL, power loss, a full disk) must never leave a half-written file under a real name.
So each file is written to a temporary `.X.<8 hex digits>.tmp` beside `X` (removed when the write fails),
flushed to disk (fsync), then renamed over `X` (os.replace is atomic on POSIX and Windows): a reader sees either
the old complete file or the new complete one, never a mixture. A kill (SIGKILL, power loss) can still leave the
temporary file; `is_temporary(name)` recognises exactly the names this writer makes, so that a run can delete its
own leftovers and nothing else (training/out_dir.py).

    atomic_write_text(path, text)     UTF-8, newlines as given
    atomic_write_bytes(path, data)
    atomic_save(obj, path)            torch.save
    atomic_write(path, write)         any writer: write(f) gets the open binary temporary file

A failed write raises OSError naming the path and the cause (for torch's own errors, the free space left).
Ctrl-C stays a KeyboardInterrupt, even where torch.save reports it as a RuntimeError of its zip writer.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

import torch

TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # the name of atomic_write's temporary file


def atomic_write(path: str | Path, write) -> Path:
    """write(f) into a temporary file beside `path`, flush it to disk, then rename it to `path`. Returns path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # an ordinary output, whatever the umask
        os.replace(tmp, path)  # the atomic step: `path` now names the complete new file
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        if isinstance(e, NotImplementedError):  # a programming error (e.g. a meta tensor), not the disk
            raise
        if _interrupted(e):  # Ctrl-C inside torch.save's writer: it is still the user's interruption
            raise KeyboardInterrupt from None
        raise OSError(f"could not write {path}: {write_failure(e, path.parent)}; the file as it was before "
                      "is untouched") from e
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful rename
    _fsync_dir(path.parent)
    return path


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Create `.{name}.{8 random hex digits}.tmp` beside `path` (O_EXCL: a name no one else uses)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), tmp
        except FileExistsError:
            continue


def is_temporary(name: str) -> bool:
    """Is `name` a temporary file atomic_write makes (`.X.<8 hex digits>.tmp`)?"""
    return TEMPORARY.fullmatch(name) is not None


def _interrupted(e: BaseException) -> bool:
    """Was `e` raised while a KeyboardInterrupt was propagating (torch's zip writer turns it into its own error)?"""
    while e is not None:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__context__
    return False


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
