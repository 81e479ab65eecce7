"""`python run.py bench model`: our GPT-2 vs transformers' GPT2LMHeadModel, same weights, same process.

Prints tokens/s of a training step (forward + backward + AdamW step) and of an inference forward, with the
ratio ours / reference, and the peak memory of each (measured in a fresh child process per side, so one side's
allocations cannot hide the other's; bench/children.py). Ratios, not seconds: these machines are noisy.

The ratio also moves from one process to the next (on the 2-core CPU machine, 36 single-process inference
measurements ranged from 1.01x to 1.28x, median 1.08x), so `--processes N` repeats the whole measurement in N
fresh processes and reports the median ratio with its range.

--device cuda runs both sides on the GPU (steps end with a synchronize, so the timings are the GPU's); --dtype
bf16 runs the forward and loss of both sides under torch.autocast(bfloat16) (on CPU too, where this torch supports
it), the weights and the AdamW step staying fp32 (mixed precision, as the tasks train).
"""
from __future__ import annotations

import gc
import re
import statistics
from contextlib import nullcontext

import torch

from bench.children import all_at_once, one_after_another
from bench.timing import synchronize, timed_pair
from minigpt.settings import checked_text, number
from tasks.model_flags import add_explicit_math_argument

MODES = ("train", "inference")  # a training step (forward + backward + AdamW), an inference forward


def build_pair(name, seed: int = 0):
    """Our GPT2 and transformers' GPT2LMHeadModel with the same random weights (dropout 0.1, train mode).

    name: a preset ("gpt2", ...) or a GPT2Config (bench/train.py's tiny test configs).
    """
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    from minigpt import GPT2, GPT2Config
    from minigpt.checkpoint import hf_state_dict_to_minigpt

    cfg = name if isinstance(name, GPT2Config) else parse_config(name)
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(HFConfig(**{k: v for k, v in cfg.to_hf_dict().items() if k != "architectures"}))
    ours = GPT2(cfg)
    ours.load_state_dict(hf_state_dict_to_minigpt(hf.state_dict()))
    return ours, hf


def parse_config(text: str):
    """A preset name ("gpt2") or GPT2Config fields "n_layer=2,n_head=2,n_embd=64,vocab_size=300" (tests)."""
    from minigpt import GPT2Config
    from minigpt.config import PRESETS

    if "=" not in text:
        if text not in PRESETS:
            raise ValueError(f"{text!r}: not a preset ({', '.join(PRESETS)}) nor key=value,... fields")
        return GPT2Config.from_name(text)
    fields = {}
    for item in text.split(","):
        key, _, value = (s.strip() for s in item.partition("="))
        try:
            fields[key] = float(value) if key in ("dropout", "layer_norm_epsilon") else int(value)
        except ValueError:
            raise ValueError(f"{text!r}: {item!r} is not key=number") from None
    fields.setdefault("eos_token_id", fields.get("vocab_size", 50257) - 1)  # the last token, as in GPT-2
    try:
        return GPT2Config(**fields)
    except TypeError as e:
        raise ValueError(f"{text!r}: {e}") from None


def bench_device(name: str) -> torch.device:
    """--device: cpu, or cuda where a CUDA GPU is visible (else a one-line error)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA GPU is visible to this process (use --device cpu)")
    return torch.device(name)


def precision(device: torch.device, dtype: str):
    """--dtype as a context-manager factory: fp32 -> nothing; bf16 -> torch.autocast(device, bfloat16).

    bf16 on a CPU is tried on one small matmul first, so a torch without CPU autocast says so in one line."""
    if dtype == "fp32":
        return nullcontext
    if dtype != "bf16":
        raise ValueError(f"--dtype {dtype!r}: expected fp32 or bf16")
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            ok = torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
        if ok.dtype != torch.bfloat16:
            raise RuntimeError("autocast left the matmul in fp32")
    except RuntimeError as e:
        raise RuntimeError(f"--dtype bf16: bfloat16 autocast does not work on {device.type} here ({e})") from None
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def train_step_fn(model, optimizer, ids, autocast=nullcontext):
    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = model(ids).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        synchronize(ids.device)

    return step


def infer_fn(model, ids, autocast=nullcontext):
    @torch.no_grad()
    def forward():
        with autocast():
            model(ids)
        synchronize(ids.device)

    return forward


def set_fused(model, fused: bool):
    """GPT2.set_fused on every GPT-2 inside `model` (a GPT2, or one wrapped by a classifier or prefix-tuning)."""
    from minigpt import GPT2

    for m in model.modules():
        if isinstance(m, GPT2):
            m.set_fused(fused)
    return model


def is_fused(model) -> bool:
    from minigpt import GPT2

    return all(m.config.fused for m in model.modules() if isinstance(m, GPT2))


def make_optimizer(side: str, model):
    if side == "ours":
        from training.optimization import build_optimizer

        return build_optimizer(model, "adamw", 1e-5, 0.01, explicit_math=not is_fused(model))  # as the trainer
    return torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)


def memory_mib(key: str) -> float:
    """VmRSS (resident now) or VmHWM (resident peak) of this process, MiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) / 1024


def peak_above_now(fn, runs: int = 3, device: str = "cpu") -> float:
    """MiB of peak resident memory that `runs` calls of fn() add on top of what is resident now.

    The kernel's peak counter is reset first (/proc/self/clear_refs), so whatever was built before (both models,
    say) does not count. On CUDA: the peak of torch's GPU allocations above the allocated memory now."""
    gc.collect()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        for _ in range(runs):
            fn()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    before = memory_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    for _ in range(runs):
        fn()
    return memory_mib("VmHWM") - before


def peak_memory_child(side: str, mode: str, name: str, batch: int, seq: int, device: str = "cpu",
                      dtype: str = "fp32") -> float:
    """In a fresh process (bench/children.py): build the pair, keep one side, and return the peak memory (MiB) that
    its steps add to the built model (resident memory on CPU, torch's GPU allocations on CUDA)."""
    ours, hf = build_pair(name)
    model = (ours if side == "ours" else hf).to(device)
    del ours, hf
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)
    autocast = precision(torch.device(device), dtype)
    model.train() if mode == "train" else model.eval()
    fn = (train_step_fn(model, make_optimizer(side, model), ids, autocast) if mode == "train"
          else infer_fn(model, ids, autocast))
    return peak_above_now(fn, device=device)


def add_arguments(parser) -> None:
    parser.add_argument("--config", type=checked_text(parse_config), default="gpt2",
                        help="preset size to build with random weights (or GPT2Config fields key=value,...)")
    parser.add_argument("--batch-size", type=number(int, 1), default=4)
    parser.add_argument("--seq-len", type=number(int, 2), default=128)
    parser.add_argument("--repeats", type=number(int, 1), default=5,
                        help="timed runs per measurement (median reported)")
    parser.add_argument("--processes", type=number(int, 1), default=1,
                        help="repeat the timing in this many fresh processes: median ratio and its range")
    parser.add_argument("--threads", type=number(int, 0), default=0, help="torch threads (0 = PyTorch's default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    add_explicit_math_argument(parser)  # ours only; the peak-memory children measure the fused path
    add_device_arguments(parser)


def add_device_arguments(parser) -> None:
    """--device and --dtype (bench model and bench train)."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where both sides run (cuda without a visible GPU is an error) (default: %(default)s)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                        help="fp32, or bf16: forward and loss under torch.autocast(bfloat16), fp32 weights and "
                             "AdamW (default: %(default)s)")


def measure(config: str, B: int, T: int, repeats: int, device: str = "cpu", dtype: str = "fp32",
            explicit_math: bool = False) -> dict:
    """{"logit_difference": max |ours - reference|, "train": (ours tok/s, reference tok/s), "inference": (...)}.

    The logit difference is taken in fp32 whatever --dtype (it checks the weights, not the precision)."""
    dev = bench_device(device)
    autocast = precision(dev, dtype)
    ours, hf = build_pair(config)
    ours, hf = set_fused(ours.to(dev), not explicit_math), hf.to(dev)
    ids = torch.randint(0, ours.config.vocab_size, (B, T)).to(dev)
    ours.eval(), hf.eval()
    with torch.no_grad():
        result = {"logit_difference": (ours(ids).logits - hf(ids).logits).abs().max().item()}
    for mode in MODES:
        fns = []
        for side, model in (("ours", ours), ("transformers", hf)):
            model.train() if mode == "train" else model.eval()
            fns.append(train_step_fn(model, make_optimizer(side, model), ids, autocast) if mode == "train"
                       else infer_fn(model, ids, autocast))
        t_ours, t_ref, _, _ = timed_pair(*fns, repeats=repeats)  # each step waits for the GPU itself
        result[mode] = (B * T / t_ours, B * T / t_ref)
    return result


def measure_with_threads(threads: int, *measure_args) -> dict:
    """`measure` after setting torch's thread count (0: PyTorch's default); run in a fresh child process."""
    if threads:
        torch.set_num_threads(threads)
    return measure(*measure_args)


def main(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    B, T = args.batch_size, args.seq_len
    precision(bench_device(args.device), args.dtype)  # a bad --device / --dtype fails here, in one line
    where = f"{torch.get_num_threads()} threads" if args.device == "cpu" else torch.cuda.get_device_name()
    print(f"bench model: {args.config}, random init, {args.dtype} on {args.device} ({where}), batch {B} x {T}")
    if args.processes == 1:
        runs = [measure(args.config, B, T, args.repeats, args.device, args.dtype, args.explicit_math)]
    else:
        call = (args.threads, args.config, B, T, args.repeats, args.device, args.dtype, args.explicit_math)
        runs = one_after_another(measure_with_threads, [call] * args.processes, desc="processes")
    print(f"  same weights: max |logit difference| = {max(r['logit_difference'] for r in runs):.2e}")
    spread = f"   ratio over {len(runs)} processes: min - max" if len(runs) > 1 else ""
    print(f"  {'':10} {'ours tok/s':>12} {'transformers':>13} {'ratio':>7}{spread}")
    for mode in MODES:
        ours = statistics.median(r[mode][0] for r in runs)
        ref = statistics.median(r[mode][1] for r in runs)
        ratios = [r[mode][0] / r[mode][1] for r in runs]
        line = f"  {mode:10} {ours:12.1f} {ref:13.1f} {statistics.median(ratios):6.2f}x"
        print(line + (f"   {min(ratios):.2f} - {max(ratios):.2f}" if len(runs) > 1 else ""))
    if not args.no_memory:
        print(f"  {'peak MiB':10} {'ours':>12} {'transformers':>13} {'ratio':>7}")
        jobs = [(side, mode) for mode in MODES for side in ("ours", "transformers")]
        peaks = iter(all_at_once(peak_memory_child, [(*job, args.config, B, T, args.device, args.dtype)
                                                     for job in jobs]))
        for mode in MODES:
            a, b = next(peaks), next(peaks)
            print(f"  {mode:10} {a:12.0f} {b:13.0f} {a / max(b, 1e-9):6.2f}x")
