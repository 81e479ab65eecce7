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
Optimizers as in bench/model.py: ours minigpt.optim.AdamW over param_groups (no decay on biases, LayerNorm,
embeddings), the reference torch.optim.AdamW (its default: the for-loop path on CPU, foreach on CUDA), lr 1e-5,
weight decay 0.01. After the methods, the AdamW step alone over the full model's parameters: ours against
torch.optim.AdamW foreach (and fused where this torch has it), bench/adamw.py.

--device cuda / --dtype bf16 as in bench/model.py (bf16: forward and loss under autocast; the matmul peak is then
a bf16 torch.mm, so the MFU is against the bf16 peak).
Peak memory (peak_child): what training adds above the built model (gradients, optimizer state, activations),
measured for each side in its own fresh process (bench/children.py).

Ratios, not seconds: these machines are noisy. Timed steps alternate between the sides, and the header prints the
load average: when other processes compete for the cores (load above the core count), multi-threaded kernels wait
for descheduled threads and both sides slow down erratically; rerun on a quiet machine or with --threads 1.
"""
from __future__ import annotations

import gc
import os
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
    return results
