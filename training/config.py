"""What a training run is: TrainConfig, every setting of the trainer with its default.

A task builds one directly, TrainConfig(out_dir="runs/x", epochs=3, lr=1e-5), or from its command line
(cli/training_flags.py: the flags --epochs, --lr, ... and config_from_args).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# The smallest value of each numeric setting: refused when the command line is parsed and in TrainConfig itself.
AT_LEAST = dict(epochs=0, batch_size=1, grad_accum=1, lr=0, weight_decay=0, warmup=0, max_grad_norm=0, seed=0,
                keep_best=0, patience=0, save_every=0, max_steps=0, eval_every_epochs=1)


@dataclass
class TrainConfig:
    out_dir: str
    epochs: int = 1
    batch_size: int = 8  # GLOBAL examples per micro-batch (split over the processes) ...
    grad_accum: int = 1  # ... times grad_accum micro-batches per optimizer step
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup: float = 0.0  # < 1: fraction of all optimizer steps; >= 1: a number of steps
    max_grad_norm: float = 1.0  # 0 = no clipping
    seed: int = 11711
    keep_best: int = 3  # best-epoch*.pt files kept by the dev metric; 0 = none
    patience: int = 0  # evaluations without improvement before stopping; 0 = never stop early
    resume: bool = False
    device: str = "auto"  # auto -> cuda, mps, cpu
    amp: bool = True  # bf16 autocast, on CUDA only
    save_every: int = 0  # also write last.pt every N optimizer steps (0 = at epoch ends only)
    max_steps: int = 0  # stop after N optimizer steps in all (0 = no limit); does not change the schedule
    eval_every_epochs: int = 1
    find_unused_parameters: bool = False  # DDP: set when some trainable parameters skip some forward passes
    schedule: str = "linear"  # linear: warmup then decay to 0; constant: warmup then --lr (training/optimization.py)
    select: str = "best"  # the weights the run ends with: the best dev epoch's, or the last epoch's
    optimizer: str = "adamw"  # adamw: minigpt/optim.py; course: minigpt/course_adamw.py
    explicit_math: bool = False  # True: AdamW one parameter at a time (foreach=False), the readable equations
    gradient_checkpointing: bool = False  # recompute each block in the backward: less memory, more compute
    compile: bool = False  # torch.compile the model in place (training/model_switches.py)
    # every parsed flag of the task (config_from_args fills it): --resume refuses a run whose settings differ
    settings: dict | None = None

    def __post_init__(self):
        if not str(self.out_dir).strip():
            raise ValueError("TrainConfig.out_dir (--out-dir) is empty: name a directory")
        for name, low in AT_LEAST.items():
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < low:
                raise ValueError(f"TrainConfig.{name} (--{name.replace('_', '-')}) must be >= {low}, "
                                 f"got {getattr(self, name)}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} {getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        if self.warmup >= 1 and self.warmup != int(self.warmup):
            raise ValueError(f"--warmup {self.warmup}: below 1 it is a fraction of the steps, from 1 on a "
                             "whole number of steps")


CHOICES = {"schedule": ("linear", "constant"), "select": ("best", "last"), "optimizer": ("adamw", "course")}
