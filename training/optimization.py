"""The trainer's optimizer and learning-rate schedule, as the flags choose them.

--optimizer adamw    minigpt/optim.py's AdamW (torch's equations, eps 1e-8); biases, LayerNorm weights and
                     embeddings are exempt from weight decay (optim.param_groups); --explicit-math runs its
                     plain form, one parameter at a time (foreach=False)
--optimizer course   training/course_adamw.py: the course's optimizer.py (eps 1e-6, bias corrections folded into
                     the step size, weight decay after the update, on every trainable parameter alike)

--schedule linear    lr rises linearly from 0 over --warmup steps, then falls linearly to 0 at the last step
--schedule constant  lr rises linearly from 0 over --warmup steps, then stays at --lr (with --warmup 0, as the
                     course trains: the same lr at every step)
"""
from __future__ import annotations

import torch.nn as nn

from minigpt.optim import AdamW, LRSchedule, linear_warmup_decay, param_groups
from minigpt.optimizer_base import Optimizer
from training.course_adamw import CourseAdamW


def build_optimizer(module: nn.Module, name: str, lr: float, weight_decay: float,
                    foreach: bool = True) -> Optimizer:
    """foreach=False (--explicit-math): AdamW updates one parameter at a time, the plain equations."""
    if name == "adamw":
        return AdamW(param_groups(module, weight_decay), lr=lr, weight_decay=weight_decay, foreach=foreach)
    if name == "course":
        trainable = [p for p in module.parameters() if p.requires_grad]
        return CourseAdamW(trainable, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"--optimizer {name!r}: choose adamw or course")


def warmup_constant(step: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: 0 -> 1 linearly over warmup_steps, then 1 (step counts from 0)."""
    return step / warmup_steps if step < warmup_steps else 1.0


def build_scheduler(optimizer: Optimizer, name: str, warmup_steps: int, total_steps: int) -> LRSchedule:
    """The named schedule (minigpt/optim.py's LRSchedule); its state_dict saves the step for resuming."""
    if name == "linear":
        return LRSchedule(optimizer, lambda s: linear_warmup_decay(s, warmup_steps, total_steps))
    if name == "constant":
        return LRSchedule(optimizer, lambda s: warmup_constant(s, warmup_steps))
    raise ValueError(f"--schedule {name!r}: choose linear or constant")
