"""One run per output directory: an exclusive lock on <out-dir>/.lock, held while the run lives.

Two runs writing into one --out-dir would overwrite each other's checkpoints, predictions and result.json. So a
run locks the directory once, before the task reads anything (run.py, around the task's main), and a second
run refuses at once, naming the pid that holds it:

    fd = open(<out-dir>/.lock); flock(fd, LOCK_EX | LOCK_NB)     refused while another process holds it
    write our pid into the file                                   for the message of the run that is refused

The kernel releases a flock when its process ends, however it ends (exit, exception, SIGKILL, a crash), so a
stale lock file left by a killed run is simply taken over: its pid is no longer holding anything. The file itself
is never deleted (deleting it would let two runs lock two different files); it is emptied on release.
A script that calls training.train() itself, not through run.py, takes it with `with locked(out_dir): ...`.
On systems without fcntl (Windows) no lock is taken.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK = ".lock"
_held: dict[Path, int | None] = {}  # directory -> the lock file's descriptor (None: no lock could be taken)


class OutDirLockedError(RuntimeError):
    """Another running process holds the output directory."""


def make_out_dir(out_dir: str | Path) -> Path:
    """Create --out-dir (and its parents); a clear error when it is a file or cannot be created."""
    path = Path(out_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--out-dir {path} is a file, not a directory: choose another --out-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"--out-dir {path}: cannot create the directory: {e.strerror or e}") from None
    return path


def acquire(out_dir: str | Path) -> None:
    """Lock `out_dir` for this process (created if missing), or OutDirLockedError naming the holder's pid."""
    path = make_out_dir(out_dir).resolve()
    if path in _held:
        raise RuntimeError(f"--out-dir {path} is already locked by this process: a run takes its lock once")
    if fcntl is None:
        _held[path] = None
        return
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only directory: no run can write there, the first write names the problem
        _held[path] = None
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OutDirLockedError(f"--out-dir {path} is in use by another run (pid {holder}, lock file "
                                f"{path / LOCK}): wait for it to end, or choose another --out-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd


def release(out_dir: str | Path) -> None:
    """Undo acquire(): empty the lock file and unlock it."""
    path = Path(out_dir).expanduser().resolve()
    if path not in _held:
        return
    fd = _held.pop(path)
    if fd is not None:
        os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock


@contextmanager
def locked(out_dir: str | Path):
    """with locked(out_dir): ... holds the directory for the block."""
    acquire(out_dir)
    try:
        yield
    finally:
        release(out_dir)
