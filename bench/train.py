"""`python run.py bench train`: a full training step of every fine-tuning method, ours vs transformers + peft.

Same process, same random weights (bench/model.py's build_pair), fp32, dropout 0.1 in train mode on both sides.

    full     every weight trains                    GPT2 + minigpt AdamW   vs GPT2LMHeadModel + torch.optim.AdamW
    lora     r=8, alpha 16, dropout 0.1, c_attn + c_proj (inject_adapters)  vs peft LoraConfig(fan_in_fan_out=True)
    dora     the same with DoRA                                             vs peft LoraConfig(use_dora=True)
    prefix   10 prefix positions, MLP hidden 512 (PrefixTuning)            vs peft PrefixTuningConfig(prefix_projection)

peft matches target names by their last dotted parts, so ["c_attn", "c_proj"] also adapts mlp.c_proj; we pass the
same two names to inject_adapters, which matches the same way: both sides adapt the same 36 layers of gpt2.

It prints, per method: tokens/s of forward + backward + optimizer step (median of interleaved repeats) and the
ratio ours / reference; the peak memory of the steps (a fresh child process per side); and the model FLOPs per
second as a fraction of the fp32 matmul peak measured in the same run (a large square torch.mm).

Model FLOPs per token: bench/flops.py.

Both sides run the same loss code: bench/model.py's train_step_fn (next-token cross-entropy over all positions) for
the LM methods; cross-entropy of the 5-class logits for --task sentiment, where a batch is right-padded rows of
random lengths T/2..T (pad = eos) and tokens/s counts every position of the padded batch (both sides compute all).
Optimizers as in bench/model.py: ours as the trainer builds it (training/optimization.py: torch's fused AdamW
over param_groups, no decay on biases, LayerNorm, embeddings; --explicit-math: minigpt.optim.AdamW), the reference
torch.optim.AdamW (its default: the for-loop path on CPU, foreach on CUDA), lr 1e-5, weight decay 0.01. After the
methods, the AdamW step alone over the full model's parameters: minigpt.optim.AdamW against torch.optim.AdamW
fused and foreach, bench/adamw.py.

--device cuda / --dtype bf16 as in bench/model.py (bf16: forward and loss under autocast; the matmul peak is then
a bf16 torch.mm, so the MFU is against the bf16 peak).
Peak memory (peak_child): what training adds above the built model (gradients, optimizer state, activations),
measured for each side in its own fresh process (bench/children.py).

--gradient-checkpointing and --compile (training/model_switches.py, the trainer's switches): after the tables above,
our model for each method is timed plain and with each switch on, the steps of the variants interleaved, same
config, same batch: tokens/s, the first step (for --compile: the compilation, which the first step pays for), and
the peak memory of 3 steps above the model and its AdamW moments (activations and gradients; a fresh child process
per variant, after one warm-up step that compiles and allocates the moments; on CUDA torch.cuda.max_memory_allocated).

Ratios, not seconds: these machines are noisy. Timed steps alternate between the sides, and the header prints the
load average: when other processes compete for the cores (load above the core count), multi-threaded kernels wait
for descheduled threads and both sides slow down erratically; rerun on a quiet machine or with --threads 1.
"""
from __future__ import annotations

import ctypes
import gc
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from bench.adamw import print_adamw_table
from bench.children import all_at_once
from bench.flops import LORA, METHODS, NUM_LABELS, PREFIX, TARGETS, flops_per_token, matmul_peak_gflops
from bench.model import (
    add_device_arguments,
    bench_device,
    build_pair,
    make_optimizer,
    memory_mib,
    parse_config,
    peak_above_now,
    precision,
    set_fused,
    train_step_fn,
)
from bench.timing import interleaved, synchronize
from minigpt import GPT2
from minigpt.settings import checked_text, number
from tasks.model_flags import add_explicit_math_argument
from training.model_switches import switch_model

SWITCHES = ("checkpointing", "compile")  # --gradient-checkpointing, --compile: each timed beside the plain run

# ----- the two sides --------------------------------------------------------------------------------------------


def adapt(side: str, method: str, model):
    """Wrap a fresh GPT-2 (ours or transformers') for `method`; returns the model to train (train mode)."""
    if method == "full":
        return model.train()
    if side == "ours":
        if method == "prefix":
            from minigpt.prefix import PrefixTuning

            return PrefixTuning(model, **PREFIX).train()
        from minigpt.lora import inject_adapters

        return inject_adapters(model.train(), method, targets=TARGETS, **LORA)
    import peft

    if method == "prefix":
        config = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=PREFIX["n_prefix"],
                                         prefix_projection=True, encoder_hidden_size=PREFIX["hidden"])
    else:
        config = peft.LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                 target_modules=list(TARGETS), fan_in_fan_out=True, use_dora=method == "dora")
    return peft.get_peft_model(model, config).train()


def build_classifier_pair(config: str, seed: int = 0):
    """Our GPT-2 + classification head (tasks/heads.py, pooling = last real token) and transformers'
    GPT2ForSequenceClassification (num_labels 5, pad_token_id = eos), same body and head weights.

    Our head has a bias (set to 0 here) and dropout on the pooled vector; theirs has neither: B x C work, noise.
    """
    import copy

    from transformers import GPT2ForSequenceClassification

    from tasks.heads import GPT2Classifier

    ours_lm, hf_lm = build_pair(parse_config(config), seed)
    hf_config = copy.deepcopy(hf_lm.config)
    hf_config.num_labels, hf_config.pad_token_id = NUM_LABELS, ours_lm.config.eos_token_id
    hf = GPT2ForSequenceClassification(hf_config)
    hf.transformer.load_state_dict(hf_lm.transformer.state_dict())
    ours = GPT2Classifier(ours_lm, NUM_LABELS, pooling="last")
    with torch.no_grad():
        ours.head.proj.weight.copy_(hf.score.weight)  # (K, C) both
        ours.head.proj.bias.zero_()
    return ours.train(), hf.train()


def build_models(task: str, method: str, config: str):
    """(ours, transformers), same random weights, adapted for `method`, in train mode."""
    if task == "sentiment":
        return build_classifier_pair(config)
    ours, hf = build_pair(parse_config(config))
    return adapt("ours", method, ours), adapt("transformers", method, hf)


def gpt2_config(model):
    """Our GPT2Config of either side's model (the classifier keeps it on its body)."""
    return model.body.config if hasattr(model, "body") else model.config


def make_batch(task: str, vocab: int, eos: int, B: int, T: int, seed: int = 0) -> dict:
    """LM: random ids (B, T). sentiment: right-padded rows of random lengths T/2..T, pad = eos, labels 0..4."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab - 1, (B, T), generator=g)  # vocab - 1 = eos is never a real token
    if task == "lm":
        return {"ids": ids}
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0] = T  # the longest row fills the batch, as a collator pads to the longest
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T): 1 = real token, right padding
    return {"ids": ids.masked_fill(mask == 0, eos), "mask": mask,
            "labels": torch.randint(0, NUM_LABELS, (B,), generator=g)}


def max_logit_difference(task: str, ours, ref, batch: dict) -> float | None:
    """Eval-mode max |logit difference| of the two sides (fresh adapters change nothing); None for prefix-tuning,
    whose two sides start from different random prefixes."""
    from minigpt.prefix import PrefixTuning

    if isinstance(ours, PrefixTuning):
        return None
    ours.eval(), ref.eval()
    with torch.no_grad():
        inputs = {"input_ids": batch["ids"]}
        if task == "sentiment":
            inputs["attention_mask"] = batch["mask"]
        diff = ours(**inputs).logits - ref(**inputs).logits
    ours.train(), ref.train()
    return diff.abs().max().item()


def step_fn(task: str, side: str, model, batch: dict, autocast=nullcontext):
    """One training step as a closure: zero_grad, forward, loss, backward, optimizer step."""
    optimizer = make_optimizer(side, model)
    if task == "lm":
        return train_step_fn(model, optimizer, batch["ids"], autocast)  # bench/model.py: next-token cross-entropy

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = model(input_ids=batch["ids"], attention_mask=batch["mask"]).logits  # (B, K) on both sides
            loss = F.cross_entropy(logits.float(), batch["labels"])
        loss.backward()
        optimizer.step()
        synchronize(batch["ids"].device)

    return step


# ----- memory --------------------------------------------------------------------------------------------------


def peak_child(task: str, side: str, method: str, config: str, B: int, T: int, device: str = "cpu",
               dtype: str = "fp32") -> dict:
    """In a fresh process (bench/children.py): build, keep one side, reset the kernel's peak-RSS counter, run 3
    steps; the MiB of peak resident memory above the built model (so building the other side does not count)."""
    ours, hf = build_models(task, method, config)
    model, ours_cfg = (ours if side == "ours" else hf).to(device), gpt2_config(ours)
    del ours, hf
    gc.collect()
    batch = to_device(make_batch(task, ours_cfg.vocab_size, ours_cfg.eos_token_id, B, T), device)
    fn = step_fn(task, side, model, batch, precision(torch.device(device), dtype))
    above = peak_above_now(fn, device=device)  # the built model (and batch) do not count; what the steps add does
    return {"above_model": above, "peak": memory_mib("VmHWM")}


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def peak_memory(task: str, method: str, config: str, B: int, T: int, device: str = "cpu",
                dtype: str = "fp32") -> dict:
    """{side: peak_child's result} for both sides of `method`, each in its own fresh process, both at once."""
    sides = ("ours", "transformers")
    results = all_at_once(peak_child, [(task, side, method, config, B, T, device, dtype) for side in sides])
    return dict(zip(sides, results))


# ----- the switches: gradient checkpointing, torch.compile -------------------------------------------------------


def switched_model(task: str, method: str, config: str, switch: str, device: str, fused: bool = True):
    """Our model for `method` on `device` with one switch of training/model_switches.py on: "plain" (none),
    "checkpointing" (each block recomputed in the backward pass) or "compile" (torch.compile, inductor)."""
    ours = set_fused(build_models(task, method, config)[0].to(device), fused)
    switch_model(ours, gradient_checkpointing=switch == "checkpointing", compile=switch == "compile",
                 device=torch.device(device))
    return ours


def switch_step(task: str, method: str, config: str, switch: str, B: int, T: int, device: str, autocast,
                fused: bool = True):
    """A training step (closure) of our switched model on the benchmark's batch (B, T)."""
    model = switched_model(task, method, config, switch, device, fused)
    cfg = gpt2_config(model)
    batch = to_device(make_batch(task, cfg.vocab_size, cfg.eos_token_id, B, T), device)
    return model, step_fn(task, "ours", model, batch, autocast)


def time_switches(settings: Settings, method: str, switches: list[str], device: torch.device, autocast) -> dict:
    """{switch: {"first_step_s", "tokens_per_s"}}: the first step of each variant timed alone (it compiles), then
    the median step of `repeats` interleaved rounds (bench/timing.py)."""
    B, T = settings.batch_size, settings.seq_len
    fns, first = {}, {}
    for switch in switches:
        _, fns[switch] = switch_step(settings.task, method, settings.config, switch, B, T, str(device), autocast,
                                     not settings.explicit_math)
        t0 = time.perf_counter()
        fns[switch]()  # each step ends with a synchronize
        first[switch] = time.perf_counter() - t0
    t = interleaved(fns, settings.repeats)  # {switch: (median, min, max) seconds}
    return {s: {"first_step_s": first[s], "tokens_per_s": B * T / t[s][0]} for s in switches}


def release_freed_memory() -> None:
    """Give the heap memory freed so far back to the OS (glibc's malloc_trim), so resident memory is live memory;
    nothing where the C library has no malloc_trim."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def switch_peak_child(task: str, method: str, config: str, switch: str, B: int, T: int, device: str = "cpu",
                      dtype: str = "fp32") -> float:
    """In a fresh process (bench/children.py): our switched model, one warm-up step (it compiles and allocates the
    AdamW moments), its gradients dropped; the MiB of peak memory that 3 more steps add (activations, gradients)."""
    model, fn = switch_step(task, method, config, switch, B, T, device, precision(torch.device(device), dtype))
    fn()
    for p in model.parameters():
        p.grad = None
    release_freed_memory()
    return peak_above_now(fn, device=device)


def switch_peaks(settings: Settings, method: str, switches: list[str]) -> dict:
    """{switch: peak MiB} of switch_peak_child, one fresh process per variant, all at once."""
    calls = [(settings.task, method, settings.config, switch, settings.batch_size, settings.seq_len,
              settings.device, settings.dtype) for switch in switches]
    return dict(zip(switches, all_at_once(switch_peak_child, calls)))


def bench_switches(settings: Settings, methods, device: torch.device, autocast) -> dict:
    """Print and return {method: {switch: {"tokens_per_s", "first_step_s", "peak_mib"}}} for "plain" and each
    switch the flags chose."""
    switches = ["plain"] + [s for s, on in zip(SWITCHES, (settings.gradient_checkpointing, settings.compile)) if on]
    print(f"  ours with --{' --'.join(switch_flag(s) for s in switches[1:])} beside the plain run "
          f"(peak MiB: 3 steps above the model and its AdamW moments, after a warm-up step; fresh process each)")
    print(f"  {'run':24} {'tok/s':>9} {'vs plain':>8} {'first step s':>12} {'peak MiB':>9} {'vs plain':>8}")
    results = {}
    for method in methods:
        rows = time_switches(settings, method, switches, device, autocast)
        peaks = {} if settings.no_memory else switch_peaks(settings, method, switches)
        for switch, row in rows.items():
            row["peak_mib"] = peaks.get(switch)
            name = method if switch == "plain" else f"{method} + {switch}"
            speed = row["tokens_per_s"] / rows["plain"]["tokens_per_s"]
            mem = (f"{row['peak_mib']:9.0f} {row['peak_mib'] / max(peaks['plain'], 1e-9):7.2f}x" if peaks
                   else f"{'-':>9} {'-':>8}")
            print(f"  {name:24} {row['tokens_per_s']:9.1f} {speed:7.2f}x {row['first_step_s']:12.2f} {mem}")
        results[method] = rows
    return results


def switch_flag(switch: str) -> str:
    return {"checkpointing": "gradient-checkpointing", "compile": "compile"}[switch]


# ----- the command ----------------------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("--config", type=checked_text(parse_config), default="gpt2",
                        help="preset size to build with random weights (or GPT2Config fields key=value,...)")
    parser.add_argument("--task", choices=("lm", "sentiment"), default="lm",
                        help="lm: next-token loss (every method); sentiment: GPT-2 + 5-class head, full fine-tuning")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                        help="methods to run (default: all four for lm, full for sentiment)")
    parser.add_argument("--batch-size", type=number(int, 1), default=4)
    parser.add_argument("--seq-len", type=number(int, 2), default=128)
    parser.add_argument("--repeats", type=number(int, 1), default=5, help="timed rounds per method (median reported)")
    parser.add_argument("--matmul-size", type=number(int, 1), default=2048, help="n of the n x n x n matmul peak")
    parser.add_argument("--threads", type=number(int, 0), default=0, help="torch threads (0 = PyTorch's default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="also run ours with every block recomputed in the backward pass: tokens/s and peak "
                             "memory beside the plain run")
    parser.add_argument("--compile", action="store_true",
                        help="also run ours under torch.compile: tokens/s, compile time (the first step) and peak "
                             "memory beside the plain run")
    add_explicit_math_argument(parser)  # ours only; the peak-memory children measure the fused path
    add_device_arguments(parser)


@dataclass(frozen=True)
class Settings:
    """What the benchmark measures (the flags above, built once in main)."""
    config: str = "gpt2"
    task: str = "lm"
    methods: list[str] | None = None  # None: every method (lm), full (sentiment)
    batch_size: int = 4
    seq_len: int = 128
    repeats: int = 5
    matmul_size: int = 2048
    threads: int = 0
    no_memory: bool = False
    gradient_checkpointing: bool = False  # also time and measure ours with each block recomputed
    compile: bool = False  # also time and measure ours under torch.compile
    explicit_math: bool = False
    device: str = "cpu"
    dtype: str = "fp32"


def settings_from_args(args) -> Settings:
    return Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})


def main(args) -> None:
    run_benchmark(settings_from_args(args))


def run_benchmark(settings: Settings) -> dict:
    """Measure and print; returns {method: {"tokens_per_s": {side: ...}, "ratio": ..., ...}} (for tests)."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    methods = settings.methods or (("full",) if settings.task == "sentiment" else METHODS)
    if settings.task == "sentiment" and list(methods) != ["full"]:
        raise SystemExit("bench train --task sentiment measures full fine-tuning only (--methods full)")
    B, T = settings.batch_size, settings.seq_len
    device = bench_device(settings.device)
    autocast = precision(device, settings.dtype)
    peak = matmul_peak_gflops(settings.matmul_size, settings.repeats, device,
                              torch.bfloat16 if settings.dtype == "bf16" else torch.float32)
    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"bench train: {settings.config}, random init, {settings.dtype} on {settings.device} ({where}), "
          f"batch {B} x {T}, "
          f"task {settings.task}, {settings.repeats} interleaved repeats, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"  {settings.dtype} matmul peak ({settings.matmul_size}^3 torch.mm): {peak:.1f} GFLOP/s")
    print(f"  {'method':8} {'ours tok/s':>11} {'reference':>10} {'ratio':>7}   {'spread ours / ref':>19}"
          f"   {'MFU ours':>8} {'MFU ref':>8}  {'GFLOP/tok':>9}  {'|dlogit|':>8}")
    results = {}
    for method in methods:
        ours, ref = build_models(settings.task, method, settings.config)
        ours, ref = set_fused(ours.to(device), not settings.explicit_math), ref.to(device)
        cfg = gpt2_config(ours)
        batch = to_device(make_batch(settings.task, cfg.vocab_size, cfg.eos_token_id, B, T), device)
        diff = max_logit_difference(settings.task, ours, ref, batch)
        fns = {side: step_fn(settings.task, side, m, batch, autocast)
               for side, m in (("ours", ours), ("transformers", ref))}
        t = interleaved(fns, settings.repeats)
        speed = {k: B * T / v[0] for k, v in t.items()}
        spread = {k: (v[2] - v[1]) / v[0] for k, v in t.items()}  # (max - min) / median
        fpt = flops_per_token(method, cfg, T, settings.task)
        mfu = {k: s * fpt / (peak * 1e9) for k, s in speed.items()}
        results[method] = {"tokens_per_s": speed, "ratio": speed["ours"] / speed["transformers"], "mfu": mfu,
                           "flops_per_token": fpt, "spread": spread, "max_logit_difference": diff}
        print(f"  {method:8} {speed['ours']:11.1f} {speed['transformers']:10.1f} {results[method]['ratio']:6.2f}x"
              f"   {spread['ours']:8.0%} / {spread['transformers']:7.0%}"
              f"   {mfu['ours']:8.1%} {mfu['transformers']:8.1%}"
              f"  {fpt / 1e9:9.3f}  {'-' if diff is None else f'{diff:.1e}':>8}")
        del ours, ref, fns
        gc.collect()
    print(f"  spread = (max - min) / median of the timed steps; load average now {os.getloadavg()[0]:.1f}")
    model = GPT2(parse_config(settings.config)).to(device)  # the full model: every parameter trains
    results["adamw_step_s"] = print_adamw_table(model, settings.repeats)
    del model
    if not settings.no_memory:
        print(f"  {'peak MiB':8} {'ours':>11} {'reference':>10} {'ratio':>7}   (peak RSS of 3 steps above the "
              "built model; fresh process per side)")
        for method in methods:
            mem = {side: peak["above_model"] for side, peak in
                   peak_memory(settings.task, method, settings.config, B, T, settings.device, settings.dtype).items()}
            results[method]["peak_mib"] = mem
            print(f"  {method:8} {mem['ours']:11.0f} {mem['transformers']:10.0f} "
                  f"{mem['ours'] / max(mem['transformers'], 1e-9):6.2f}x")
    if settings.gradient_checkpointing or settings.compile:
        for method, rows in bench_switches(settings, methods, device, autocast).items():
            results[method]["switches"] = rows
    return results
