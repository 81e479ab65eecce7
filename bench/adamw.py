"""The AdamW step alone, over a model's parameters: minigpt.optim.AdamW against torch.optim.AdamW.

Used by `python run.py bench train` (its "AdamW step" table). The gradients are fixed random tensors in each
parameter's own memory layout (as autograd writes them), so only the optimizer is timed. Variants (each with its
own moments, all updating their own copy of the same parameters):

    ours           minigpt.optim.AdamW: the eight lines one parameter at a time (--explicit-math)
    torch fused    torch.optim.AdamW(fused=True): what the trainer runs by default (training/optimization.py)
    torch foreach  torch.optim.AdamW(foreach=True)
"""
from __future__ import annotations

import statistics
import time

import torch

import minigpt.optim as optim
from bench.timing import synchronize

VARIANTS = {
    "ours": lambda groups: optim.AdamW(groups, lr=1e-5),
    "torch fused": lambda groups: torch.optim.AdamW(groups, lr=1e-5, fused=True),
    "torch foreach": lambda groups: torch.optim.AdamW(groups, lr=1e-5, foreach=True),
}


def adamw_step_times(model: torch.nn.Module, repeats: int) -> dict:
    """{variant: median seconds of one optimizer step} over the trainable parameters of `model` (on its device).

    The variants are timed alternately (one step each, round after round), so load from other processes hits them
    alike; a variant this torch cannot run on the device is left out."""
    device = next(model.parameters()).device
    steps = {}
    for name, make in VARIANTS.items():
        params = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters() if p.requires_grad]
        g = torch.Generator(device="cpu").manual_seed(0)
        for p in params:
            p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=g) * 1e-3)
        try:
            opt = make([{"params": params, "weight_decay": 0.01}])
            opt.step()  # warm-up: allocates the moments
        except (RuntimeError, TypeError) as e:
            print(f"  (AdamW {name}: not available here: {str(e).splitlines()[0][:80]})")
            continue
        steps[name] = opt.step
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            synchronize(device)
            t0 = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def print_adamw_table(model: torch.nn.Module, repeats: int) -> dict:
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    times = adamw_step_times(model, repeats)
    print(f"  AdamW step over {n / 1e6:.1f}M parameters (median of {repeats}, interleaved):")
    ref = times.get("torch foreach")
    for name, t in times.items():
        vs = f"{t / ref:6.2f}x torch foreach" if ref else ""
        print(f"    {name:14} {t * 1e3:9.2f} ms   {vs}")
    return times
