"""Checkpoint files of the trainer: what they hold, model signatures, RNG states, the best-k bookkeeping.

Files in a run's out_dir:

    last.pt              everything needed to continue: model, optimizer, schedule, RNG states of every rank,
                         the position in the data (epoch, step within the epoch), history, best list, and the
                         run's record (training/run_settings.py: settings, model signature, data fingerprints)
    best-epoch{E:03d}.pt the weights after epoch E and its dev metrics, for the k best epochs only
    metrics.jsonl        one JSON line per finished epoch
    result.json          written by the task when the whole run is done (final dev metrics, best epoch): its
                         presence marks a finished run (`run.py sweep` skips those)
    run.json             the run's settings, written when it starts: the directory holds this run (training/out_dir.py)

Every file is written atomically (minigpt/files.py: a temporary file, fsync, rename), so a crash never leaves
a half-written file under a checkpoint's name.

Every file loads with `torch.load(..., weights_only=True)`: only tensors and plain Python values, so loading a
checkpoint never runs code.
"""
from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from minigpt.files import atomic_save, atomic_write_text

LAST = "last.pt"
FORMAT = "minigpt-trainer-1"  # the "format" entry of last.pt
METRICS = "metrics.jsonl"
RESULT = "result.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, from another model or run, or cannot be written."""


def best_path(out_dir: str | Path, epoch: int) -> Path:
    """The file for the best checkpoint after (1-based) epoch `epoch`."""
    return Path(out_dir) / f"best-epoch{epoch:03d}.pt"


def next_step(directory: Path) -> str:
    """What to do after a failed write: --resume only when there is a checkpoint to resume from."""
    if (Path(directory) / LAST).is_file():
        return "free space or fix permissions, then --resume"
    return "free space or fix permissions, then run again"


def write_run_file(path: str | Path, content) -> None:
    """Write a text file (`content` a str) or a checkpoint (a dict, torch.save) with minigpt.files' atomic
    writer; a failure becomes a CheckpointError that says what to do next."""
    path = Path(path)
    try:
        atomic_write_text(path, content) if isinstance(content, str) else atomic_save(content, path)
    except OSError as e:
        raise CheckpointError(f"{e} ({next_step(path.parent)})") from e


def write_result(out_dir: str | Path, metrics: dict, best_epoch: int | None, settings: dict) -> Path:
    """Write out_dir/result.json, the last file a finished run writes: its final dev `metrics`, the epoch whose
    weights gave them (None: untrained, or no dev evaluation kept) and what was run (the task's settings
    "finetune", "epochs" and "model")."""
    result = metrics | {"best_epoch": best_epoch, "finetune": settings["finetune"], "epochs": settings["epochs"],
                        "model": str(settings["model"])}
    path = Path(out_dir) / RESULT
    write_run_file(path, json.dumps(result, indent=2) + "\n")
    return path


def load_file(path: str | Path, map_location="cpu", missing: str = "no checkpoint at {path}") -> dict:
    """torch.load with clear errors: a missing file (the message `missing`) or a damaged one names the path."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(missing.format(path=path))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # it asks to build a Python object: loading it could run code
            raise CheckpointError(f"{path} is not a minigpt checkpoint: it holds Python objects other than tensors "
                                  "and plain values, which could run code when loaded. Do not load it with "
                                  "weights_only=False; delete it, or use a checkpoint minigpt wrote") from None
        reason = str(e).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]  # e.g. "Unsupported operand 222"
        raise CheckpointError(damaged(path, reason)) from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file raises many different errors
        raise CheckpointError(damaged(path, f"{type(e).__name__}: {e}".rstrip(": "))) from e


def damaged(path: Path, reason: str) -> str:
    return (f"cannot read checkpoint {path}: it is damaged or not a torch file ({reason}); delete it, or restore it "
            "from a copy")


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


def tidy_after_resume(out_dir: Path, history: list[dict], best: list[dict]) -> None:
    """Drop the metrics lines and best files written after last.pt was (a crash in between)."""
    write_run_file(out_dir / METRICS, "".join(json.dumps(h) + "\n" for h in history))
    remove_stale_best(out_dir, best)


def remove_stale_best(out_dir: str | Path, best: list[dict]) -> None:
    """Delete best-epoch*.pt files that the best list does not name (left by a run killed mid-bookkeeping)."""
    keep = {best_path(out_dir, e["epoch"]).name for e in best}
    for f in Path(out_dir).glob("best-epoch*.pt"):
        if f.name not in keep:
            f.unlink(missing_ok=True)
