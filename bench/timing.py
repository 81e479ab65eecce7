"""Timing for the benchmarks: the median of repeated runs, two sides timed alternately, the GPU waited for.

A CUDA call returns before its kernel ends, so a timed function on the GPU ends with synchronize(device).
Ratios, not seconds: these machines are noisy, so each figure is a median, and the two sides of a comparison run
alternately (a, b, a, b, ...), so that a burst of load from other processes hits both alike.
"""
from __future__ import annotations

import statistics
import time

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for the GPU's queued kernels; nothing on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of fn() over `repeats` runs, after `warmup` untimed ones."""
    return timed_pair(fn, lambda: None, repeats, warmup)[0]


def timed_pair(fn_a, fn_b, repeats: int, warmup: int = 1, device: torch.device | str = "cpu"):
    """(median seconds of fn_a(), of fn_b(), fn_a's last output, fn_b's last output): the two timed alternately
    after `warmup` untimed runs of each; on a GPU `device`, each run ends when its kernels end."""
    def run(fn):
        t0 = time.perf_counter()
        out = fn()
        synchronize(device)
        return time.perf_counter() - t0, out

    for _ in range(warmup):
        run(fn_a), run(fn_b)
    times_a, times_b = [], []
    for _ in range(repeats):
        t_a, out_a = run(fn_a)
        t_b, out_b = run(fn_b)
        times_a.append(t_a)
        times_b.append(t_b)
    return statistics.median(times_a), statistics.median(times_b), out_a, out_b


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds per call of each fn, one warm-up each, then `repeats` rounds alternating the sides.

    Alternating (and flipping the order every round) spreads slow phases of a shared machine over both sides.
    """
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for i in range(repeats):
        for key in list(fns)[:: 1 if i % 2 == 0 else -1]:
            t0 = time.perf_counter()
            fns[key]()
            times[key].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), min(v), max(v)) for k, v in times.items()}
