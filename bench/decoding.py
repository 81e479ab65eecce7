"""`python run.py bench decoding`: our decoders vs transformers' `generate`, chrF and MBR vs sacrebleu.

Same process, same random GPT-2 (--config: the `gpt2` preset unless told; --device cpu or cuda, --dtype fp32 or
bf16) loaded into both implementations: a 32-token prompt, 64 new tokens, tokens per second of greedy, top-p
sampling, contrastive search (k=4) and beam search (4 beams), the ratio ours / transformers, and whether the token
ids are identical.

Batched (--batch-size 12 prompts, as many as the sonnet dev set, of 16 to 32 tokens, left-padded): the same decoders
on the whole batch at once against transformers' batched `generate` on the same batch, and ours batched
against ours on the 12 prompts one at a time (tokens/s over all rows). One batched step reads the weights once
for all rows, so batching is the lever where batch-1 decoding is memory-bound.

--compile: greedy decoding of the one prompt by a torch.compile'd copy of our model, compiled as `generate
--compile` compiles it (minigpt/compiling.py, dynamic shapes: one graph for the prompt's prefill, one for the cached
one-token step, whose key length grows), against the eager model: tokens/s and whether the tokens are identical;
the compile time (the first call, less an eager call) is printed on its own line. CUDA graphs
(mode="reduce-overhead") are not used: the KV cache hands each step a view that grows by one position, and one
captured graph would need a step over the cache's whole fixed capacity, with the length a tensor.

Then corpus chrF over 1,000 sentence pairs vs sacrebleu's CHRF, and MBR over 32 candidates vs a brute-force
loop of sacrebleu sentence scores (bench/chrf.py).

The physical bound of batch-1 decoding: every step reads every weight once (the position table excepted), so
tokens/s <= memory read bandwidth / weight bytes. The bandwidth is measured here, in the same run, by summing a
tensor as large as the weights (the fastest of 10 sums).

Ratios, not seconds: these machines are noisy. Each figure is the median of --repeats timed runs after --warmup-runs
untimed ones, ours and the reference timed alternately. On a shared 2-core machine, --threads 1 avoids the
stalls of two OpenMP threads waiting for each other while another process holds a core.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

import torch

from bench.chrf import bench_chrf
from bench.model import bench_device, parse_config
from bench.timing import timed_pair
from minigpt.settings import checked_text, number
from tasks.model_flags import add_explicit_math_argument

DECODERS = ("greedy", "top-p", "contrastive", "beam")  # the first word of each row's name in decoder_cases


@dataclass(frozen=True)
class Settings:
    """What the benchmark measures (the flags below, built once in main)."""
    config: str = "gpt2"
    prompt_tokens: int = 32
    new_tokens: int = 64
    repeats: int = 3
    warmup: int = 1
    chrf_pairs: int = 1000
    mbr_candidates: int = 32
    decoders: str = "greedy,top-p,contrastive,beam"  # a subset of DECODERS
    batch: int = 12
    device: str = "cpu"
    dtype: str = "fp32"
    explicit_math: bool = False
    compile: bool = False  # also greedy by a torch.compile'd copy of ours against eager


def add_arguments(parser) -> None:
    parser.add_argument("--config", type=checked_text(parse_config), default="gpt2",
                        help="preset size built with random weights (or GPT2Config fields key=value,...)")
    parser.add_argument("--prompt-tokens", type=number(int, 1), default=32, help="prompt length in tokens")
    parser.add_argument("--max-new-tokens", dest="new_tokens", type=number(int, 1), default=64,
                        help="tokens each decoder generates")
    parser.add_argument("--repeats", type=number(int, 1), default=3,
                        help="timed runs per figure (the median is reported)")
    parser.add_argument("--warmup-runs", dest="warmup", type=number(int, 0), default=1,
                        help="untimed runs before the timed ones")
    parser.add_argument("--threads", type=number(int, 0), default=0, help="torch threads (0 = PyTorch's default)")
    parser.add_argument("--chrf-pairs", type=number(int, 1), default=1000, help="sentence pairs for corpus chrF")
    parser.add_argument("--mbr-candidates", type=number(int, 2), default=32, help="candidates for MBR selection")
    parser.add_argument("--only", choices=["all", "decoders", "chrf"], default="all",
                        help="decoders: only the generate comparison; chrf: only chrF and MBR")
    parser.add_argument("--decoders", type=decoder_list, default=",".join(DECODERS),
                        help=f"comma-separated subset of {','.join(DECODERS)}")
    parser.add_argument("--batch-size", dest="batch", type=number(int, 0), default=12,
                        help="prompts in the batched comparison (0 = skip it); 12 = the sonnet dev prompts")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both models run")
    add_explicit_math_argument(parser)  # ours only
    parser.add_argument("--compile", action="store_true",
                        help="also greedy by a torch.compile'd copy of ours against eager ours: tokens/s, identical "
                             "tokens, and the compile time")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                        help="weights and activations of both models (bf16 tokens may differ: rounding)")


def decoder_list(text: str) -> str:
    """--decoders: names from DECODERS, comma-separated, checked when the command line is parsed."""
    unknown = [name for name in text.split(",") if name not in DECODERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown decoder(s) {', '.join(map(repr, unknown))}; choose from "
                                         f"{','.join(DECODERS)}")
    return text


# ----- timing --------------------------------------------------------------------------------------------------


def read_bandwidth(num_bytes: int, repeats: int = 10) -> float:
    """Bytes per second of a sum over a float32 tensor of num_bytes: the fastest of `repeats` sums after a
    warm-up (the least disturbed run is the closest to what the hardware can do)."""
    x = torch.ones(num_bytes // 4)
    x.sum()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t0)
    return num_bytes / min(times)


# ----- the models ----------------------------------------------------------------------------------------------


def build_pair(name: str, seed: int = 0, device: str = "cpu", dtype: str = "fp32"):
    """transformers' GPT2LMHeadModel with random weights, and ours loaded from its checkpoint (our loader), both
    moved to device and dtype. name: a preset or GPT2Config fields (bench/model.py's parse_config)."""
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    from minigpt.checkpoint import load_pretrained

    cfg = parse_config(name)
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(HFConfig(**{k: v for k, v in cfg.to_hf_dict().items() if k != "architectures"})).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_pretrained(d).eval()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    return ours.to(device, dtype), hf.to(device, dtype)


def decoder_cases(ours, hf, ids, n: int, eos: int, mask=None):
    """name -> (our call, transformers' call) with the same settings, on (B, T) prompts left-padded as `mask`
    says (None: no padding); sampling: the same seed for both."""
    from decoding import beam_search, contrastive_search, greedy, sample

    ours_mask, mask = mask, torch.ones_like(ids) if mask is None else mask

    def reference(**kw):
        return lambda: hf.generate(ids, attention_mask=mask, max_new_tokens=n, eos_token_id=eos, pad_token_id=eos,
                                   **kw)

    def seeded(fn, seed=0):
        def run():
            torch.manual_seed(seed)  # transformers samples from the global generator
            return fn()
        return run

    sampling = dict(temperature=1.2, top_p=0.9)
    kw = dict(eos_token_id=eos, attention_mask=ours_mask)
    return {
        "greedy": (lambda: greedy(ours, ids, n, **kw), reference(do_sample=False)),
        "top-p (0.9, T=1.2)": (
            lambda: sample(ours, ids, n, **sampling, generator=torch.Generator(ids.device).manual_seed(0), **kw),
            seeded(reference(do_sample=True, top_k=0, **sampling)),
        ),
        "contrastive (k=4)": (
            lambda: contrastive_search(ours, ids, n, top_k=4, alpha=0.6, **kw),
            reference(penalty_alpha=0.6, top_k=4),
        ),
        "beam (4 beams)": (lambda: beam_search(ours, ids, n, num_beams=4, **kw), reference(num_beams=4)),
    }


def left_padded_prompts(count: int, longest: int, vocab: int, pad: int, device):
    """count random prompts of longest/2 .. longest tokens: (ids (B, T) left-padded with pad, mask (B, T),
    the prompts one by one as (1, T_b))."""
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(max(1, longest // 2), longest + 1, (count,), generator=g).tolist()
    singles = [torch.randint(0, vocab, (1, t), generator=g) for t in lengths]
    T = max(lengths)
    ids = torch.full((count, T), pad, dtype=torch.long)
    mask = torch.zeros((count, T), dtype=torch.long)
    for b, p in enumerate(singles):
        ids[b, T - p.size(1):], mask[b, T - p.size(1):] = p[0], 1
    return ids.to(device), mask.to(device), [p.to(device) for p in singles]


def bench_batched(settings: Settings, ours, hf, n: int, eos: int) -> bool:
    """The --batch-size prompts at once: ours vs transformers' batched generate, and ours batched vs one at a time."""
    cfg = ours.config
    ids, mask, singles = left_padded_prompts(settings.batch, settings.prompt_tokens, cfg.vocab_size, eos,
                                             settings.device)
    print(f"  batched: {settings.batch} prompts of {min(p.size(1) for p in singles)}-{ids.size(1)} tokens, "
          f"left-padded, {n} new tokens each; tokens/s over all rows")
    print(f"  {'decoder':18} {'ours tok/s':>10} {'transformers':>12} {'ratio':>6}  {'identical':9} "
          f"{'ours 1 by 1':>11} {'batched/1 by 1':>14}")
    chosen, all_same = settings.decoders.split(","), True
    batch_cases = decoder_cases(ours, hf, ids, n, eos, mask)
    for name, (ours_fn, ref_fn) in batch_cases.items():
        if name.split()[0] not in chosen:
            continue
        t_ours, t_ref, out_ours, out_ref = timed_pair(ours_fn, ref_fn, settings.repeats, settings.warmup,
                                                      settings.device)
        one_by_one = [decoder_cases(ours, hf, p, n, eos)[name][0] for p in singles]
        t_single, _, outs, _ = timed_pair(lambda: [f() for f in one_by_one], lambda: None, settings.repeats,
                                          settings.warmup, settings.device)  # warmed up like the batched sides
        same = out_ours.shape == out_ref.shape and torch.equal(out_ours, out_ref)
        all_same &= same
        speed_ours = settings.batch * (out_ours.size(1) - ids.size(1)) / t_ours
        speed_ref = settings.batch * (out_ref.size(1) - ids.size(1)) / t_ref
        speed_single = sum(o.size(1) - p.size(1) for o, p in zip(outs, singles)) / t_single
        print(f"  {name:18} {speed_ours:10.1f} {speed_ref:12.1f} {speed_ours / speed_ref:5.2f}x  "
              f"{'yes' if same else 'NO':9} {speed_single:11.1f} "
              f"{speed_ours / speed_single:13.2f}x")
    return all_same


def bench_compiled(settings: Settings, ours, ids, n: int, eos: int) -> bool:
    """Greedy on the (1, T) prompt: a torch.compile'd copy of ours against ours eager; prints the row and the
    compile time (the compiled copy's first call less an eager call); True when the tokens are identical."""
    import copy

    from decoding import greedy
    from minigpt.compiling import compile_model

    device = torch.device(settings.device)
    compiled = compile_model(copy.deepcopy(ours), device, dynamic=True)  # as generate --compile does
    first, _, _, _ = timed_pair(lambda: greedy(compiled, ids, n, eos_token_id=eos), lambda: None, repeats=1,
                                warmup=0, device=device)  # compiles the prefill and the one-token step
    t_compiled, t_eager, out_compiled, out_eager = timed_pair(
        lambda: greedy(compiled, ids, n, eos_token_id=eos), lambda: greedy(ours, ids, n, eos_token_id=eos),
        settings.repeats, settings.warmup, device)
    same = torch.equal(out_compiled, out_eager)
    speed_compiled = (out_compiled.size(1) - ids.size(1)) / t_compiled
    speed_eager = (out_eager.size(1) - ids.size(1)) / t_eager
    print(f"  {'decoder':18} {'compiled':>10} {'eager':>12} {'ratio':>6}  {'identical tokens'}")
    print(f"  {'greedy (compiled)':18} {speed_compiled:10.1f} {speed_eager:12.1f} "
          f"{speed_compiled / speed_eager:5.2f}x  {'yes' if same else 'NO'}")
    print(f"  compile time: {first - t_compiled:.1f} s (first compiled call {first:.1f} s, later calls "
          f"{t_compiled:.3f} s; torch's compile cache in /tmp makes a second run's shorter)")
    return same


def bench_decoders(settings: Settings) -> bool:
    from transformers.utils import logging

    logging.set_verbosity_error()  # keep the table readable (a notice about contrastive search's future home)
    bench_device(settings.device)  # a one-line error where --device cuda has no GPU
    ours, hf = build_pair(settings.config, device=settings.device, dtype=settings.dtype)
    ours.set_fused(not settings.explicit_math)
    cfg = ours.config
    ids = torch.randint(0, cfg.vocab_size, (1, settings.prompt_tokens), generator=torch.Generator().manual_seed(1))
    ids = ids.to(settings.device)
    n = settings.new_tokens
    # batch-1 decoding reads every weight once per step; of the position table only one row
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters()) - ours.wpe.weight.nbytes
    print(f"bench decoding: {settings.config} (random init, {settings.dtype}, {settings.device}, "
          f"{torch.get_num_threads()} CPU threads), prompt {settings.prompt_tokens} tokens, {n} new tokens, "
          f"median of {settings.repeats} runs")
    bound = None
    if settings.device == "cpu":
        bandwidth = read_bandwidth(weight_bytes)
        bound = bandwidth / weight_bytes
        print(f"  memory bound: {weight_bytes / 1e6:.0f} MB of weights per step / {bandwidth / 1e9:.1f} GB/s "
              f"(sum over a tensor of that size) = {bound:.1f} tokens/s at most")
    print(f"  {'decoder':18} {'ours tok/s':>10} {'transformers':>12} {'ratio':>6}  {'identical tokens'}")
    all_same = True
    greedy_speed = None
    chosen = settings.decoders.split(",")
    for name, (ours_fn, ref_fn) in decoder_cases(ours, hf, ids, n, cfg.eos_token_id).items():
        if name.split()[0] not in chosen:
            continue
        t_ours, t_ref, out_ours, out_ref = timed_pair(ours_fn, ref_fn, settings.repeats, settings.warmup,
                                                      settings.device)
        same = out_ours.shape == out_ref.shape and torch.equal(out_ours, out_ref)
        all_same &= same
        speed_ours = (out_ours.size(1) - ids.size(1)) / t_ours
        speed_ref = (out_ref.size(1) - ids.size(1)) / t_ref
        if name == "greedy":
            greedy_speed = (speed_ours, speed_ref)
        print(f"  {name:18} {speed_ours:10.1f} {speed_ref:12.1f} {speed_ours / speed_ref:5.2f}x  "
              f"{'yes' if same else 'NO'}")
    if greedy_speed and bound:
        print(f"  greedy as a fraction of the memory bound: ours {greedy_speed[0] / bound:.0%}, "
              f"transformers {greedy_speed[1] / bound:.0%}")
    if settings.compile:
        all_same &= bench_compiled(settings, ours, ids, n, cfg.eos_token_id)
    if settings.batch > 0:
        all_same &= bench_batched(settings, ours, hf, n, cfg.eos_token_id)
    return all_same


def main(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings(config=args.config, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                        repeats=args.repeats, warmup=args.warmup, chrf_pairs=args.chrf_pairs,
                        mbr_candidates=args.mbr_candidates, decoders=args.decoders, batch=args.batch,
                        device=args.device, dtype=args.dtype, explicit_math=args.explicit_math,
                        compile=args.compile)
    ok = True
    if args.only in ("all", "decoders"):
        ok &= bench_decoders(settings)
    if args.only in ("all", "chrf"):
        ok &= bench_chrf(settings.chrf_pairs, settings.mbr_candidates, settings.repeats, settings.warmup)
    if not ok:
        print("MISMATCH: some outputs differ from the reference (see 'identical' above)")
    return 0 if ok else 1
