"""Checkpoint files of the trainer: atomic writes, model signatures, RNG states, the best-k bookkeeping.

Files in a run's out_dir:

    last.pt              everything needed to continue: model, optimizer, schedule, RNG states of every rank,
                         the position in the data (epoch, step within the epoch), history, best list, config
    best-epoch{E:03d}.pt the weights after epoch E and its dev metrics, for the k best epochs only
    metrics.jsonl        one JSON line per finished epoch
    result.json          written by the task when the whole run is done (final dev metrics, best epoch): its
                         presence marks a finished run (`run.py sweep` skips those)

Atomic write: a crash (SIGKILL, power loss, full disk) must never leave a half-written file under a checkpoint's
name. So each file is written to a temporary `X.<random>.tmp` in the same directory (removed when the write
fails), flushed to disk (fsync), then renamed over `X` (os.replace is atomic on POSIX and Windows): readers see
either the old complete file or the new complete one.

Every file loads with `torch.load(..., weights_only=True)`: only tensors and plain Python values, so loading a
checkpoint never runs code.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

LAST = "last.pt"
FORMAT = "minigpt-trainer-1"  # the "format" entry of last.pt
METRICS = "metrics.jsonl"
RESULT = "result.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, from another model or run, or cannot be written."""


def best_path(out_dir: str | Path, epoch: int) -> Path:
    """The file for the best checkpoint after (1-based) epoch `epoch`."""
    return Path(out_dir) / f"best-epoch{epoch:03d}.pt"


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")  # a name no one else uses
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # the atomic step: `path` now names the complete new file
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CheckpointError(f"could not write {path}: {write_failure(e, path.parent)}; files already in "
                              f"{path.parent} are untouched ({next_step(path.parent)})") from e
    _fsync_dir(path.parent)


def write_failure(e: Exception, directory: Path) -> str:
    """Why a write failed, in words: the OS's reason, or for torch's own errors the free space left."""
    if isinstance(e, OSError):
        return f"{e.strerror or e} (errno {e.errno})"
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        free = None
    if free is not None and free < 64 * 1024 * 1024:
        return f"No space left on device ({free:,} bytes free; torch: {e})"
    return f"{type(e).__name__}: {e}"


def next_step(directory: Path) -> str:
    """What to do after a failed write: --resume only when there is a checkpoint to resume from."""
    if (Path(directory) / LAST).is_file():
        return "free space or fix permissions, then --resume"
    return "free space or fix permissions, then run again"


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


def atomic_save(obj: dict, path: str | Path) -> None:
    """torch.save(obj, path) through a temporary file + rename; CheckpointError names the path on failure."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | Path) -> None:
    _atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def write_result(out_dir: str | Path, metrics: dict, best_epoch: int | None, args) -> Path:
    """Write out_dir/result.json, the last file a finished run writes: its final dev `metrics`, the epoch whose
    weights gave them (None: untrained, or no dev evaluation kept) and what was run (--finetune, --epochs,
    --model of the task's parsed `args`)."""
    result = metrics | {"best_epoch": best_epoch, "finetune": args.finetune, "epochs": args.epochs,
                        "model": str(args.model)}
    path = Path(out_dir) / RESULT
    atomic_write_text(json.dumps(result, indent=2) + "\n", path)
    return path


def load_file(path: str | Path, map_location="cpu") -> dict:
    """torch.load with clear errors: a missing file or a damaged one names the path."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # it asks to build Python objects: loading it could run code
        raise CheckpointError(f"{path} is not a minigpt checkpoint: it holds Python objects other than tensors "
                              "and plain values, which could run code when loaded. Do not load it with "
                              "weights_only=False; delete it, or use a checkpoint minigpt wrote") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file raises many different errors
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e


def model_signature(module: nn.Module) -> dict[str, list[int]]:
    """name -> shape of every state_dict entry: two models can exchange weights iff their signatures match."""
    return {name: list(t.shape) for name, t in module.state_dict().items()}


def signature_mismatches(saved: dict[str, list[int]], current: dict[str, list[int]]) -> list[str]:
    """Human-readable differences between a checkpoint's signature and the model's (empty: compatible)."""
    problems = [f"{n}: checkpoint {saved[n]} vs model {current[n]}"
                for n in saved if n in current and saved[n] != current[n]]
    problems += [f"{n}: in the model, not in the checkpoint" for n in current if n not in saved]
    problems += [f"{n}: in the checkpoint, not in the model" for n in saved if n not in current]
    return problems


def capture_rng_state(device: torch.device) -> dict:
    """The state of every random generator training uses (dropout draws from torch's)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's state holds an ndarray; as a list it stays loadable with weights_only=True
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def update_best(best: list[dict], entry: dict, k: int) -> tuple[list[dict], list[dict]]:
    """Add `entry` ({"epoch", "score", "metrics"}) to the best list; keep the k highest scores.

    Ties go to the earlier epoch. Returns (new best list, entries that fell out: their files get deleted).
    """
    ranked = sorted(best + [entry], key=lambda e: (-e["score"], e["epoch"]))
    kept, dropped = ranked[:k], ranked[k:]
    return kept, [e for e in dropped if e is not entry]


def remove_stale_best(out_dir: str | Path, best: list[dict]) -> None:
    """Delete best-epoch*.pt files that the best list does not name (left by a run killed mid-bookkeeping)."""
    keep = {best_path(out_dir, e["epoch"]).name for e in best}
    for f in Path(out_dir).glob("best-epoch*.pt"):
        if f.name not in keep:
            f.unlink(missing_ok=True)
