"""The trainer's optimizer and learning-rate schedule, as the flags choose them.

--optimizer adamw    AdamW (torch's equations, eps 1e-8); biases, LayerNorm weights and embeddings are exempt
                     from weight decay (optim.param_groups). PyTorch's fused kernel, torch.optim.AdamW(fused=True),
                     where the parameters' device has it; --explicit-math: minigpt/optim.py's AdamW, the plain
                     equations one parameter at a time
--optimizer course   training/course_adamw.py: the course's optimizer.py (eps 1e-6, bias corrections folded into
                     the step size, weight decay after the update, on every trainable parameter alike)

--schedule linear    lr rises linearly from 0 over --warmup steps, then falls linearly to 0 at the last step
--schedule constant  lr rises linearly from 0 over --warmup steps, then stays at --lr (with --warmup 0, as the
                     course trains: the same lr at every step)
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.optim import Optimizer

from minigpt.optim import AdamW, LRSchedule, linear_warmup_decay, param_groups
from training.course_adamw import CourseAdamW

FUSED_DEVICES = ("cpu", "cuda")  # where torch.optim.AdamW(fused=True) has its kernel (float parameters)


def build_optimizer(module: nn.Module, name: str, lr: float, weight_decay: float,
                    explicit_math: bool = False) -> Optimizer:
    """The optimizer the flags name, over `module`'s trainable parameters (see the module docstring)."""
    if name == "adamw":
        groups = param_groups(module, weight_decay)
        if explicit_math:
            return AdamW(groups, lr=lr, weight_decay=weight_decay)  # our equations, one parameter at a time
        params = [p for g in groups for p in g["params"]]
        fused = all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params) or None
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "course":
        trainable = [p for p in module.parameters() if p.requires_grad]
        return CourseAdamW(trainable, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"--optimizer {name!r}: choose adamw or course")


def load_optimizer_state(optimizer: Optimizer, saved: dict) -> None:
    """Continue `optimizer` from `saved`, the state_dict of ours or torch's AdamW (--resume may switch
    --explicit-math). Each parameter's state is taken as saved, its step count as torch keeps it (a float32
    tensor; runs of minigpt before fused AdamW saved an int). Each group keeps this optimizer's own settings
    (fused or not): the run's hyperparameters are the same (run_settings checks) and the schedule sets lr."""
    state = {i: {k: torch.tensor(float(v)) if k == "step" and not torch.is_tensor(v) else v for k, v in s.items()}
             for i, s in saved["state"].items()}
    ours = optimizer.state_dict()["param_groups"]
    if len(ours) != len(saved["param_groups"]):
        raise ValueError(f"the saved optimizer has {len(saved['param_groups'])} parameter groups, this one "
                         f"{len(ours)}")
    groups = [{**group, "params": saved_group["params"]} for group, saved_group in zip(ours, saved["param_groups"])]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


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
