"""`python run.py bench decoding`: our decoders vs transformers' `generate`, chrF and MBR vs sacrebleu.

Same process, same random GPT-2 (--config: the `gpt2` preset unless told; --device cpu or cuda, --dtype fp32 or
bf16) loaded into both implementations: a 32-token prompt, 64 new tokens, tokens per second of greedy, top-p
sampling, contrastive search (k=4) and beam search (4 beams), the ratio ours / transformers, and whether the token
ids are identical.

Batched (--batch 12 prompts, as many as the sonnet dev set, of 16 to 32 tokens, left-padded): the same decoders
on the whole batch at once against transformers' batched `generate` on the same batch, and ours batched
against ours on the 12 prompts one at a time (tokens/s over all rows). One batched step reads the weights once
for all rows, so batching is the lever where batch-1 decoding is memory-bound.

Then corpus chrF over 1,000 sentence pairs vs sacrebleu's CHRF, and MBR over 32 candidates vs a brute-force
loop of sacrebleu sentence scores.

The physical bound of batch-1 decoding: every step reads every weight once (the position table excepted), so
tokens/s <= memory read bandwidth / weight bytes. The bandwidth is measured here, in the same run, by summing a
tensor as large as the weights (the fastest of 10 sums).

Ratios, not seconds: these machines are noisy. Each figure is the median of --repeats timed runs after --warmup
untimed ones, ours and the reference timed alternately. On a shared 2-core machine, --threads 1 avoids the
stalls of two OpenMP threads waiting for each other while another process holds a core.
"""
from __future__ import annotations

import argparse
import random
import statistics
import string
import tempfile
import time
from dataclasses import dataclass

import torch

from bench.model import bench_device, config_argument, parse_config
from cli.arg_types import number
from cli.model_flags import add_explicit_math_argument

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


def add_arguments(parser) -> None:
    parser.add_argument("--config", type=config_argument, default="gpt2",
                        help="preset size built with random weights (or GPT2Config fields key=value,...)")
    parser.add_argument("--prompt-tokens", type=number(int, 1), default=32, help="prompt length in tokens")
    parser.add_argument("--new-tokens", type=number(int, 1), default=64, help="tokens each decoder generates")
    parser.add_argument("--repeats", type=number(int, 1), default=3,
                        help="timed runs per figure (the median is reported)")
    parser.add_argument("--warmup", type=number(int, 0), default=1, help="untimed runs before the timed ones")
    parser.add_argument("--threads", type=number(int, 0), default=0, help="torch threads (0 = PyTorch's default)")
    parser.add_argument("--chrf-pairs", type=number(int, 1), default=1000, help="sentence pairs for corpus chrF")
    parser.add_argument("--mbr-candidates", type=number(int, 2), default=32, help="candidates for MBR selection")
    parser.add_argument("--only", choices=["all", "decoders", "chrf"], default="all",
                        help="decoders: only the generate comparison; chrf: only chrF and MBR")
    parser.add_argument("--decoders", type=decoder_list, default=",".join(DECODERS),
                        help=f"comma-separated subset of {','.join(DECODERS)}")
    parser.add_argument("--batch", type=number(int, 0), default=12,
                        help="prompts in the batched comparison (0 = skip it); 12 = the sonnet dev prompts")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both models run")
    add_explicit_math_argument(parser)  # ours only
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


def synced(fn):
    """fn, then wait for the GPU to finish its queued work (a no-op on the CPU), so the clock sees all of it."""
    def run():
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out
    return run


def timed_pair(fn_a, fn_b, repeats: int, warmup: int):
    """Median seconds of fn_a() and fn_b(), run alternately (a burst of load hits both alike), and their last
    outputs."""
    fn_a, fn_b = synced(fn_a), synced(fn_b)
    for _ in range(warmup):
        fn_a(), fn_b()
    times_a, times_b = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out_a = fn_a()
        t1 = time.perf_counter()
        out_b = fn_b()
        t2 = time.perf_counter()
        times_a.append(t1 - t0)
        times_b.append(t2 - t1)
    return statistics.median(times_a), statistics.median(times_b), out_a, out_b


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
    """The --batch prompts at once: ours vs transformers' batched generate, and ours batched vs one at a time."""
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
        t_ours, t_ref, out_ours, out_ref = timed_pair(ours_fn, ref_fn, settings.repeats, settings.warmup)
        one_by_one = [decoder_cases(ours, hf, p, n, eos)[name][0] for p in singles]
        t_single, _, outs, _ = timed_pair(lambda: [f() for f in one_by_one], lambda: None, settings.repeats, 0)
        same = out_ours.shape == out_ref.shape and torch.equal(out_ours, out_ref)
        all_same &= same
        speed_ours = settings.batch * (out_ours.size(1) - ids.size(1)) / t_ours
        speed_ref = settings.batch * (out_ref.size(1) - ids.size(1)) / t_ref
        speed_single = sum(o.size(1) - p.size(1) for o, p in zip(outs, singles)) / t_single
        print(f"  {name:18} {speed_ours:10.1f} {speed_ref:12.1f} {speed_ours / speed_ref:5.2f}x  "
              f"{'yes' if same else 'NO':9} {speed_single:11.1f} "
              f"{speed_ours / speed_single:13.2f}x")
    return all_same


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
        t_ours, t_ref, out_ours, out_ref = timed_pair(ours_fn, ref_fn, settings.repeats, settings.warmup)
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
    if settings.batch > 0:
        all_same &= bench_batched(settings, ours, hf, n, cfg.eos_token_id)
    return all_same


# ----- chrF and MBR --------------------------------------------------------------------------------------------


def random_sentences(count: int, seed: int, words_per: tuple[int, int] = (5, 25)):
    """Pseudo-English: words from a fixed random lexicon, some punctuation and capitals; references are the
    hypotheses with about a third of their words replaced, so the pairs overlap partly, as real ones do."""
    rng = random.Random(seed)
    lexicon = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 9))) for _ in range(3000)]
    lexicon += ["thee", "thou", "love", "time", "beauty", "éclat", "naïve", "—", "l'amour"]

    def sentence(n):
        words = [rng.choice(lexicon) for _ in range(n)]
        words[0] = words[0].capitalize()
        return " ".join(words) + rng.choice([".", "!", "?", ";", ""])

    hyps = [sentence(rng.randint(*words_per)) for _ in range(count)]
    refs = [" ".join(w if rng.random() > 0.33 else rng.choice(lexicon) for w in h.split()) for h in hyps]
    return hyps, refs


def bench_chrf(settings: Settings) -> bool:
    from sacrebleu.metrics import CHRF

    from decoding import corpus_chrf, mbr_select, sentence_chrf

    reference_chrf = CHRF()
    hyps, refs = random_sentences(settings.chrf_pairs, seed=0)
    t_ours, t_ref, ours, ref = timed_pair(
        lambda: corpus_chrf(hyps, refs), lambda: reference_chrf.corpus_score(hyps, [refs]).score,
        settings.repeats, settings.warmup,
    )
    chrf_same = abs(ours - ref) <= 1e-9
    print(f"  {'':18} {'ours s':>10} {'sacrebleu s':>12} {'speedup':>7}  identical")
    print(f"  {f'corpus chrF x{len(hyps)}':18} {t_ours:10.3f} {t_ref:12.3f} {t_ref / t_ours:6.1f}x  "
          f"{'yes' if chrf_same else 'NO'} ({ours:.6f} vs {ref:.6f})")

    candidates, _ = random_sentences(settings.mbr_candidates, seed=1, words_per=(60, 110))  # sonnet-sized

    def brute_force():
        means = [statistics.fmean(reference_chrf.sentence_score(c, [o]).score
                                  for j, o in enumerate(candidates) if j != i) for i, c in enumerate(candidates)]
        return max(range(len(means)), key=means.__getitem__)  # the first of equal maxima

    t_ours, t_ref, ours, ref = timed_pair(lambda: mbr_select(candidates), brute_force, settings.repeats,
                                          settings.warmup)
    # and one sentence-level check on the same strings
    sentence_same = abs(sentence_chrf(candidates[0], [candidates[1]])
                        - reference_chrf.sentence_score(candidates[0], [candidates[1]]).score) <= 1e-9
    print(f"  {f'MBR x{len(candidates)}':18} {t_ours:10.3f} {t_ref:12.3f} {t_ref / t_ours:6.1f}x  "
          f"{'yes' if ours == ref and sentence_same else 'NO'} (index {ours} vs {ref})")
    return chrf_same and sentence_same and ours == ref


def main(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings(config=args.config, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                        repeats=args.repeats, warmup=args.warmup, chrf_pairs=args.chrf_pairs,
                        mbr_candidates=args.mbr_candidates, decoders=args.decoders, batch=args.batch,
                        device=args.device, dtype=args.dtype, explicit_math=args.explicit_math)
    ok = True
    if args.only in ("all", "decoders"):
        ok &= bench_decoders(settings)
    if args.only in ("all", "chrf"):
        ok &= bench_chrf(settings)
    if not ok:
        print("MISMATCH: some outputs differ from the reference (see 'identical' above)")
    return 0 if ok else 1
