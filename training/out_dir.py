"""The output directory: one run at a time holds it (a lock), and a run writes only where it may.

A run writes only into a directory that is empty or that holds a run of its own, and never over its inputs:

    empty (or only the lock)      a fresh run: run.json records its settings (training/run_settings.py)
    run.json, the same settings   this run again (one killed before its first checkpoint, an --epochs 0 run):
                                  it may write over its own files; with last.pt, only as --resume
    run.json, other settings      another run: refused, listing the differences
    last.pt without run.json      a run written before run.json existed: --resume compares last.pt's record
    anything else                 the user's files: refused, naming them
    an input inside the out-dir   e.g. --model X/model --out-dir X, or X/model a link to the --model directory:
                                  the export would write over the model the run starts from: refused

Nothing is written before these checks pass. Then the temporary files of the atomic writer (minigpt/files.py:
.X.<8 hex digits>.tmp), which only a killed run leaves, are deleted anywhere under the out-dir (model/ and
predictions/ too); no other file is touched.

The lock: one run per output directory, an exclusive lock on <out-dir>/.lock, held while the run lives.

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

import json
import os
from contextlib import contextmanager
from pathlib import Path

from minigpt.files import is_temporary
from training.checkpointing import LAST, CheckpointError, write_run_file
from training.run_settings import IGNORED, settings_changes

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

RUN = "run.json"
RUN_FORMAT = "minigpt-run-1"
LOCK = ".lock"
_held: dict[Path, int | None] = {}  # directory -> the lock file's descriptor (None: no lock could be taken)

# ----- the lock: one run per directory ---------------------------------------------------------------------------
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


# ----- what a run may write over -----------------------------------------------------------------------------------


def claim_out_dir(out_dir: Path, settings: dict, resume: bool) -> None:
    """Check that the run may write into out_dir (the module docstring); a fresh run then removes the temporary
    files a killed run left and writes run.json. A --resume run is checked against last.pt by the trainer,
    which then calls remove_temporary_files."""
    make_out_dir(out_dir)
    check_inputs_outside(out_dir, settings)
    if resume:
        return
    check_own_run(out_dir, settings)
    remove_temporary_files(out_dir)
    record = {"format": RUN_FORMAT, "settings": settings}
    write_run_file(out_dir / RUN, json.dumps(record, indent=1, default=str) + "\n")


def check_inputs_outside(out_dir: Path, settings: dict) -> None:
    """Refuse an input a flag names (--model, --tokenizer, --load-head, ...) that lies in what the run writes:
    the out-dir, or a directory a link inside it leads to (the resolved paths are compared)."""
    written = [out_dir.resolve()] + [Path(d, n).resolve() for d, dirs, files in os.walk(out_dir)
                                     for n in dirs + files if Path(d, n).is_symlink()]
    for key, value in settings.items():
        if key in IGNORED or not isinstance(value, str) or not value or not Path(value).expanduser().exists():
            continue
        source = Path(value).expanduser().resolve()
        if any(source == w or w in source.parents for w in written):
            raise CheckpointError(f"--{key.replace('_', '-')} {value} lies inside --out-dir {out_dir}, which this "
                                  "run writes into (checkpoints, predictions, the model export): it would write "
                                  "over its own input. Choose another --out-dir (nothing was written)")


def check_own_run(out_dir: Path, settings: dict) -> None:
    """A fresh run may start in an empty directory or in one whose run.json records the same settings (and
    no last.pt, which only --resume continues)."""
    entries = sorted(p.name for p in out_dir.iterdir() if p.name != LOCK and not is_temporary(p.name))
    if not entries:
        return
    if RUN in entries:
        changes = settings_changes(read_run_settings(out_dir / RUN), json.loads(json.dumps(settings, default=str)))
        if changes:
            raise CheckpointError(f"--out-dir {out_dir} holds another run ({out_dir / RUN} records other settings: "
                                  f"{'; '.join(changes)}): choose a new --out-dir (nothing was overwritten)")
    if LAST in entries:
        raise CheckpointError(f"{out_dir / LAST} exists: pass --resume to continue that run, or choose "
                              "another --out-dir (nothing was overwritten)")
    if RUN not in entries:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise CheckpointError(f"--out-dir {out_dir} holds files that no minigpt run wrote ({shown}); a run "
                              "writes only into an empty directory or its own run's: choose a new --out-dir "
                              "(nothing was overwritten)")


def read_run_settings(path: Path) -> dict:
    """The settings a run.json records; a damaged one is a CheckpointError naming it."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
            raise ValueError(f"not a {RUN_FORMAT!r} record")
        return record["settings"]
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path} is damaged ({e}): it no longer says which run the directory holds; "
                              "choose a new --out-dir (nothing was overwritten)") from None


def remove_temporary_files(out_dir: Path) -> None:
    """Delete the atomic writer's temporary files anywhere under out_dir (links are not followed)."""
    for directory, _, files in os.walk(out_dir):
        for name in filter(is_temporary, files):
            Path(directory, name).unlink(missing_ok=True)
