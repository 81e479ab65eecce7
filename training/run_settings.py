"""What defines a training run, so that --resume continues the same run or refuses with every difference listed.

The record, stored in last.pt and built again on --resume:

    settings   every parsed flag of the task (TrainConfig.settings, filled by config_from_args) and every
               TrainConfig field: --pooling, --max-length, --dropout, --rdrop, ... all count, including flags
               added later, with no list to keep up to date
    model      the state_dict's names and shapes, and the config of every submodule that has one (GPT2Config:
               dropout, layer_norm_epsilon, ... which the weights alone do not show)
    files      size and SHA-256 of every data file the task reads (TrainConfig.data_files, which the task fills
               in: tasks/data/files.py's course_files), of every file a flag names (--augment, --load-head) and of
               the config and tokenizer files in a directory a flag names (--model DIR, --tokenizer DIR)
    paths      where each of those files is (run.py sweep fingerprints them again before reusing a finished run)
    n_train    the number of training examples

Only settings that cannot change the numbers may differ: IGNORED below (where files go, the device, --resume
itself, how often last.pt is written, where a smoke run stops: resumed runs are exact, see training/trainer.py;
--explicit-math, the same equations written out, equal to the fused kernels within float rounding on a CPU; on a
GPU with dropout its masks are other random draws, as on another device; --gradient-checkpointing and --compile,
training/model_switches.py).
A file read by only one of the two runs is not compared (the same settings read the same files).
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import asdict
from pathlib import Path

import torch.nn as nn

from training.checkpointing import FORMAT, CheckpointError, model_signature, signature_mismatches

IGNORED = {"out_dir", "device", "resume", "save_every", "max_steps", "find_unused_parameters", "settings",
           "explicit_math", "gradient_checkpointing", "compile"}
FIRST = ("seed", "batch_size", "grad_accum", "epochs", "lr", "weight_decay", "warmup", "max_grad_norm", "amp")
MODEL_DIR_FILES = ("config.json", "vocab.json", "merges.txt", "prefix_config.json")


def run_settings(cfg) -> dict:
    """The record's settings: every TrainConfig field and every parsed flag of the task (TrainConfig.settings)."""
    return {k: v for k, v in asdict(cfg).items() if k not in ("settings", "data_files")} | (cfg.settings or {})


def run_record(cfg, module: nn.Module, n_train: int) -> dict:
    """The record of a run (see the module docstring), made of plain values (loadable with weights_only).
    The data files are cfg.data_files, the files the task reads, as values."""
    settings = run_settings(cfg)
    configs = {name or "model": _plain(asdict(m.config)) for name, m in module.named_modules()
               if dataclasses.is_dataclass(getattr(m, "config", None))}
    files = files_read(settings, cfg.data_files)
    return {"settings": settings, "model": {"signature": model_signature(module), "configs": configs},
            "files": {label: _fingerprint(path) for label, path in files.items()},
            "paths": {label: str(path.absolute()) for label, path in files.items()}, "n_train": n_train}


def files_read(settings: dict, data_files: dict[str, str]) -> dict[str, Path]:
    """{label: path} of the task's data files and the files the settings name: what a record fingerprints."""
    files = {name: Path(path) for name, path in data_files.items()}
    for key, value in settings.items():
        if key in IGNORED or not isinstance(value, str) or not value:
            continue
        path = Path(value).expanduser()
        if path.is_file():
            files[f"--{key.replace('_', '-')} {path.name}"] = path
        elif path.is_dir():
            files |= {f"--{key.replace('_', '-')} {n}": path / n for n in MODEL_DIR_FILES if (path / n).is_file()}
    return {label: path for label, path in sorted(files.items()) if path.is_file()}


def _fingerprint(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _plain(d: dict) -> dict:
    return {k: v if isinstance(v, (bool, int, float, str, type(None))) else str(v) for k, v in d.items()}


def config_differences(saved: dict, current: dict) -> list[str]:
    """Differences of the submodules' configs (dropout, layer_norm_epsilon, ...) between two records; `fused`
    is --explicit-math's switch (IGNORED), not a setting of the model."""
    problems = []
    for name in sorted(set(saved["configs"]) | set(current["configs"])):
        old, new = saved["configs"].get(name, {}), current["configs"].get(name, {})
        problems += [f"{name}.config.{k}: {old.get(k)!r} -> {new.get(k)!r}"
                     for k in sorted(set(old) | set(new)) if k != "fused" and old.get(k) != new.get(k)]
    return problems


def settings_changes(old: dict, new: dict) -> list[str]:
    """Every setting that differs ("name: old -> new"), IGNORED ones aside; the trainer's main ones first."""
    keys = [k for k in FIRST if k in old or k in new]
    keys += sorted((set(old) | set(new)) - set(FIRST) - IGNORED)
    return [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" for k in keys
            if k not in IGNORED and old.get(k) != new.get(k)]


def setting_differences(saved: dict, current: dict) -> list[str]:
    """Every difference of settings, data files and training-set size that could change the numbers."""
    changed = settings_changes(saved["settings"], current["settings"])
    for label in sorted(set(saved["files"]) & set(current["files"])):
        a, b = saved["files"][label], current["files"][label]
        if a != b:
            size = f"{a['size']} -> {b['size']} bytes" if a["size"] != b["size"] else "same size"
            changed.append(f"file {label}: contents changed ({size}, sha256 {a['sha256'][:12]} -> "
                           f"{b['sha256'][:12]})")
    if saved["n_train"] != current["n_train"]:
        changed.append(f"training examples: {saved['n_train']} -> {current['n_train']}")
    return changed


def differences_before_start(saved: dict, settings: dict) -> list[str]:
    """setting_differences between a run's record and a run with `settings` not yet started (run.py sweep asks
    before it reuses a finished run): the settings, and the files the record lists (its "paths") as they are now;
    the training-set size follows from those. A record without paths (written before them): the settings."""
    paths = {label: Path(p) for label, p in saved.get("paths", {}).items()}
    files = {label: _fingerprint(path) for label, path in paths.items() if path.is_file()}
    return setting_differences(saved, {"settings": settings, "files": files, "n_train": saved["n_train"]})


def check_same_run(ckpt: dict, path: Path, record: dict) -> None:
    """Refuse (CheckpointError) to resume from another model's checkpoint or from a run with other settings,
    listing every difference in one message."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a trainer checkpoint (format {FORMAT!r}); --resume needs the "
                              "last.pt that train() wrote")
    saved = ckpt.get("record") or _legacy_record(ckpt, record)
    problems = signature_mismatches(saved["model"]["signature"], record["model"]["signature"])
    if problems:
        shown = "\n  ".join(problems[:10]) + ("\n  ..." if len(problems) > 10 else "")
        raise CheckpointError(f"{path} holds a different model ({len(problems)} differences):\n  {shown}")
    changed = setting_differences(saved, record) + config_differences(saved["model"], record["model"])
    if changed:
        raise CheckpointError(f"--resume: {path} was written by a run with other settings ({'; '.join(changed)}); "
                              "continuing would not reproduce it. Use the old values, or a new --out-dir.")


def _legacy_record(ckpt: dict, current: dict) -> dict:
    """A last.pt written before records existed: its config and signature, compared where it has them."""
    return {"settings": ckpt["config"] | {k: v for k, v in current["settings"].items() if k not in ckpt["config"]},
            "model": {"signature": ckpt["signature"], "configs": current["model"]["configs"]},
            "files": {}, "n_train": ckpt["n_train"]}
