"""`python run.py bench model`: our GPT-2 vs transformers' GPT2LMHeadModel, same weights, same process.

Prints tokens/s of a training step (forward + backward + AdamW step) and of an inference forward, with the
ratio ours / reference, and the peak memory of each (measured in a fresh child process per side, so one side's
allocations cannot hide the other's). Ratios, not seconds: these machines are noisy.
"""
from __future__ import annotations

import gc
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def build_pair(name, seed: int = 0):
    """Our GPT2 and transformers' GPT2LMHeadModel with the same random weights (dropout 0.1, train mode).

    name: a preset ("gpt2", ...) or a GPT2Config (bench/train.py's tiny test configs).
    """
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    from minigpt import GPT2, GPT2Config
    from minigpt.checkpoint import hf_state_dict_to_minigpt

    cfg = name if isinstance(name, GPT2Config) else GPT2Config.from_name(name)
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(HFConfig(**{k: v for k, v in cfg.to_hf_dict().items() if k != "architectures"}))
    ours = GPT2(cfg)
    ours.load_state_dict(hf_state_dict_to_minigpt(hf.state_dict()))
    return ours, hf


def train_step_fn(model, optimizer, ids):
    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()

    return step


def infer_fn(model, ids):
    @torch.no_grad()
    def forward():
        model(ids)

    return forward


def make_optimizer(side: str, model):
    if side == "ours":
        from minigpt.optim import AdamW, param_groups

        return AdamW(param_groups(model, 0.01), lr=1e-5)
    return torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed_pair(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Median seconds of fn_a() and fn_b(), timed alternately (a, b, a, b, ...) after a warm-up of each, so that
    a burst of load from other processes hits both sides alike."""
    fn_a(), fn_b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times_a), statistics.median(times_b)


def memory_mib(key: str) -> float:
    """VmRSS (resident now) or VmHWM (resident peak) of this process, MiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) / 1024


def peak_above_now(fn, runs: int = 3) -> float:
    """MiB of peak resident memory that `runs` calls of fn() add on top of what is resident now.

    The kernel's peak counter is reset first (/proc/self/clear_refs), so whatever was built before (both models,
    say) does not count."""
    gc.collect()
    before = memory_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    for _ in range(runs):
        fn()
    return memory_mib("VmHWM") - before


def peak_memory_child(side: str, mode: str, name: str, batch: int, seq: int) -> float:
    """Run one side in a fresh process; return the peak resident memory (MiB) its steps add to the built model."""
    root = str(Path(__file__).resolve().parent.parent)
    code = (
        f"import sys, torch; sys.path.insert(0, {root!r}); from bench.model import *;"
        f"ours, hf = build_pair({name!r}); m = ours if {side!r} == 'ours' else hf; del ours, hf;"
        f"ids = torch.randint(0, m.config.vocab_size, ({batch}, {seq}));"
        f"m.train() if {mode!r} == 'train' else m.eval();"
        f"fn = train_step_fn(m, make_optimizer({side!r}, m), ids) if {mode!r} == 'train' else infer_fn(m, ids);"
        "print(peak_above_now(fn))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"peak-memory child ({side}, {mode}) failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def add_arguments(parser) -> None:
    parser.add_argument("--config", default="gpt2", help="preset size to build with random weights")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = PyTorch's default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")


def main(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, hf = build_pair(args.config)
    B, T = args.batch_size, args.seq_len
    ids = torch.randint(0, ours.config.vocab_size, (B, T))
    tokens = B * T
    print(f"bench model: {args.config}, random init, fp32, {torch.get_num_threads()} threads, batch {B} x {T}")
    ours.eval(), hf.eval()
    with torch.no_grad():
        diff = (ours(ids).logits - hf(ids).logits).abs().max().item()
    print(f"  same weights: max |logit difference| = {diff:.2e}")
    rows = []
    for mode in ("train", "inference"):
        fns = []
        for side, model in (("ours", ours), ("transformers", hf)):
            model.train() if mode == "train" else model.eval()
            fns.append(train_step_fn(model, make_optimizer(side, model), ids) if mode == "train"
                       else infer_fn(model, ids))
        t_ours, t_ref = timed_pair(*fns, repeats=args.repeats)
        rows.append((mode, tokens / t_ours, tokens / t_ref))
    print(f"  {'':10} {'ours tok/s':>12} {'transformers':>13} {'ratio':>7}")
    for mode, a, b in rows:
        print(f"  {mode:10} {a:12.1f} {b:13.1f} {a / b:6.2f}x")
    if not args.no_memory:
        print(f"  {'peak MiB':10} {'ours':>12} {'transformers':>13} {'ratio':>7}")
        for mode in ("train", "inference"):
            a = peak_memory_child("ours", mode, args.config, B, T)
            b = peak_memory_child("transformers", mode, args.config, B, T)
            print(f"  {mode:10} {a:12.0f} {b:13.0f} {a / max(b, 1e-9):6.2f}x")
