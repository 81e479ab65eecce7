"""--gradient-checkpointing and --compile: the two switches the trainer throws on the model it is given.

Neither changes what a step computes. Gradient checkpointing recomputes each GPT-2 block in the backward pass
(minigpt/model.py, GPT2.set_gradient_checkpointing): the same gradients, with less activation memory and about a
third more compute. --compile hands the model to torch.compile (minigpt/compiling.py): the same equations in
fused kernels, equal within float rounding, after a compilation the first steps pay for. So --resume accepts a
change of either (training/run_settings.py, IGNORED).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from minigpt.compiling import compile_model


def switch_model(module: nn.Module, gradient_checkpointing: bool, compile: bool, device: torch.device) -> None:
    """Turn on, in place, what the flags ask: checkpointing in every GPT2 inside `module` (a GPT2 itself, or one
    wrapped by LoRA/DoRA, prefix-tuning or a classifier), then torch.compile of the whole module."""
    if gradient_checkpointing:
        gpts = [m for m in module.modules() if hasattr(m, "set_gradient_checkpointing")]
        if not gpts:
            raise ValueError(f"--gradient-checkpointing: the {type(module).__name__} being trained holds no minigpt "
                             "GPT2 whose blocks could be recomputed; run without it")
        for gpt in gpts:
            gpt.set_gradient_checkpointing(True)
    if compile:
        compile_model(module, device)
