"""The AdamW step alone, over a model's parameters: minigpt.optim.AdamW against torch.optim.AdamW.

Used by `python run.py bench train` (its "AdamW step" table). The gradients are fixed random tensors, so only the
optimizer is timed. Variants (each with its own moments, all updating their own copy of the same parameters):

    ours            minigpt.optim.AdamW: the eight lines on lists (torch._foreach_*); cache-sized pieces on CPU
    ours whole      the same on whole parameters (CHUNK = infinity): what the pieces buy on CPU
    ours explicit   minigpt.optim.AdamW(foreach=False): the eight lines one parameter at a time
    torch foreach   torch.optim.AdamW(foreach=True)
    torch fused     torch.optim.AdamW(fused=True), where this torch has it for the device
"""
from __future__ import annotations

import statistics
import time

import torch

import minigpt.optim as optim
from bench.timing import synchronize


def variants(device: torch.device) -> dict:
    """name -> (a function building the optimizer from param groups, the CHUNK it runs with)."""
    out = {"ours": (lambda g: optim.AdamW(g, lr=1e-5), optim.CHUNK)}
    if device.type == "cpu":
        out["ours whole"] = (lambda g: optim.AdamW(g, lr=1e-5), 1 << 62)
    out["ours explicit"] = (lambda g: optim.AdamW(g, lr=1e-5, foreach=False), optim.CHUNK)
    out["torch foreach"] = (lambda g: torch.optim.AdamW(g, lr=1e-5, foreach=True), optim.CHUNK)
    out["torch fused"] = (lambda g: torch.optim.AdamW(g, lr=1e-5, fused=True), optim.CHUNK)
    return out


def adamw_step_times(model: torch.nn.Module, repeats: int) -> dict:
    """{variant: median seconds of one optimizer step} over the trainable parameters of `model` (on its device).

    The variants are timed alternately (one step each, round after round), so load from other processes hits them
    alike; a variant this torch cannot run on the device (fused, on an old torch) is left out."""
    device = next(model.parameters()).device
    steps, chunks = {}, {}
    for name, (make, chunk) in variants(device).items():
        params = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters() if p.requires_grad]
        g = torch.Generator(device="cpu").manual_seed(0)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(device) * 1e-3
        groups = [{"params": params, "weight_decay": 0.01}]
        try:
            opt = make(groups)
            opt.step()  # warm-up: allocates the moments
        except (RuntimeError, TypeError) as e:
            print(f"  (AdamW {name}: not available here: {str(e).splitlines()[0][:80]})")
            continue
        steps[name], chunks[name] = opt.step, chunk
    times = {name: [] for name in steps}
    default_chunk = optim.CHUNK
    try:
        for _ in range(repeats):
            for name, step in steps.items():
                optim.CHUNK = chunks[name]
                synchronize(device)
                t0 = time.perf_counter()
                step()
                synchronize(device)
                times[name].append(time.perf_counter() - t0)
    finally:
        optim.CHUNK = default_chunk
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
