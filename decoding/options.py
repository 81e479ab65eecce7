"""The decoder flags shared by `run.py generate` and the sonnet task, and the dispatch to the chosen decoder.

    add_decoder_arguments(parser)         --decoder {greedy,top-p,contrastive,beam,mbr,ensemble}, its flags and
                                          --decode-batch-size
    generate_from_args(model, ids, args, max_new_tokens, eos_token_id, decode_fn, attention_mask=mask)
                                          (B, T) left-padded prompts -> (B, T + n) LongTensor

The defaults: top-p 0.9 at temperature 1.2 are the course's settings for sonnets; the rest are minigpt's own
choices: contrastive search with k = 4, alpha = 0.6; beam search with 5 beams, length penalty 0.6 and no
repeated 3-grams; 8 MBR / ensemble candidates. (The Python functions keep the reference defaults, e.g.
beam_search(length_penalty=1.0, no_repeat_ngram_size=0).)
Out-of-range values are refused when the command line is parsed, naming the flag.
"""
from __future__ import annotations

import argparse

import torch

from .beam import beam_search
from .contrastive import contrastive_search
from .ensemble import candidate_ensemble, mbr_decode
from .sampling import greedy, sample

DECODERS = ("greedy", "top-p", "contrastive", "beam", "mbr", "ensemble")


def number(kind, low=None, high=None, low_open=False, what=""):
    """An argparse type: kind(text) within [low, high] ((low, high] with low_open), else a clear error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):  # nan, inf: never a setting
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


def add_decoder_arguments(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    """seed=False when the caller already has a --seed (the trainer's): sampling then uses that one."""
    g = parser.add_argument_group("decoding")
    g.add_argument("--decoder", choices=DECODERS, default="top-p",
                   help="greedy: most likely token; top-p: nucleus sampling; contrastive: contrastive search "
                        "(Su et al. 2022); beam: beam search (best hypothesis); mbr: beam n-best reranked by "
                        "MBR with chrF; ensemble: top-p samples + contrastive outputs + beam n-best, reranked "
                        "by MBR")
    g.add_argument("--temperature", type=number(float, 0, low_open=True, what="> 0"), default=1.2,
                   help="top-p/ensemble: divide the logits by this before sampling (> 1 = more diverse)")
    g.add_argument("--top-p", type=number(float, 0, 1, low_open=True, what="in (0, 1]"), default=0.9,
                   help="top-p/ensemble: sample from the smallest set of tokens holding this probability mass")
    g.add_argument("--top-k", type=number(int, 0, what=">= 0"), default=None,
                   help="contrastive: number of candidate tokens (>= 1; unset = 4); top-p: also keep only the k "
                        "most likely tokens (unset or 0 = off)")
    g.add_argument("--alpha", type=number(float, 0, 1, what="in [0, 1]"), default=0.6,
                   help="contrastive: weight of the degeneration penalty (0 = greedy)")
    g.add_argument("--dynamic-alpha", action="store_true",
                   help="contrastive: alpha rises linearly from --alpha-start (first token) to --alpha (last)")
    g.add_argument("--alpha-start", type=number(float, 0, 1, what="in [0, 1]"), default=0.0,
                   help="contrastive with --dynamic-alpha: alpha of the first generated token")
    g.add_argument("--use-mean-sim", action="store_true",
                   help="contrastive: penalise the mean cosine similarity to the context instead of the max")
    g.add_argument("--repetition-penalty", type=number(float, 0, low_open=True, what="> 0"), default=1.0,
                   help="contrastive: CTRL repetition penalty on tokens already present (1.0 = off, > 1 = fewer "
                        "repeats)")
    g.add_argument("--num-beams", type=number(int, 1, what=">= 1"), default=5, help="beam/mbr/ensemble: beams")
    g.add_argument("--length-penalty", type=number(float, what="finite"), default=0.6,
                   help="beam/mbr/ensemble: score = log-prob / length ** this (> 0 favours longer outputs)")
    g.add_argument("--no-repeat-ngram-size", type=number(int, 0, what=">= 0"), default=3,
                   help="beam/mbr/ensemble: never repeat an n-gram of this size (0 = off)")
    g.add_argument("--num-candidates", type=number(int, 2, what=">= 2"), default=8,
                   help="mbr: size of the beam n-best to rerank (num-beams is raised to match); ensemble: "
                        "number of top-p samples in the pool")
    g.add_argument("--decode-batch-size", type=number(int, 0, what=">= 0"), default=0,
                   help="prompts decoded together in one batch (left-padded; one forward per step for all of "
                        "them); 0 = all prompts at once. Deterministic decoders give the same text at any size")
    if seed:
        g.add_argument("--seed", type=int, default=11711, help="top-p/ensemble: seed of the sampling generator")


def generate_from_args(model, input_ids: torch.Tensor, args, max_new_tokens: int, eos_token_id: int | None = None,
                       decode_fn=None, generator=None, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Run the decoder chosen by `args` on (B, T) left-padded prompts -> (B, T + n); rows padded with eos.

    attention_mask: (B, T), 1 = token, 0 = padding (None = no padding).
    generator: for sampling, one torch.Generator or a list of B (one per row, see decoding.sampling.sample);
    None = row b gets a fresh one seeded with args.seed + b (then every call with the same prompts draws the
    same samples, and row b's sample does not depend on the other rows).
    decode_fn (list[int] -> str, or a tokenizer) is needed by mbr and ensemble."""
    if args.decoder in ("top-p", "ensemble") and generator is None:
        generator = [torch.Generator(device=input_ids.device).manual_seed(args.seed + b)
                     for b in range(input_ids.size(0))]
    if args.decoder in ("mbr", "ensemble") and decode_fn is None:
        raise ValueError(f"--decoder {args.decoder} reranks text, so generate_from_args needs decode_fn")
    top_k = args.top_k
    beam = dict(length_penalty=args.length_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
                eos_token_id=eos_token_id, attention_mask=attention_mask)

    if args.decoder == "greedy":
        return greedy(model, input_ids, max_new_tokens, eos_token_id=eos_token_id, attention_mask=attention_mask)
    if args.decoder == "top-p":
        return sample(model, input_ids, max_new_tokens, temperature=args.temperature, top_k=top_k or 0,
                      top_p=args.top_p, generator=generator, eos_token_id=eos_token_id,
                      attention_mask=attention_mask)
    if args.decoder == "contrastive":
        if top_k == 0:
            raise ValueError("--top-k must be >= 1 for --decoder contrastive (it is the number of candidates)")
        return contrastive_search(model, input_ids, max_new_tokens, top_k=top_k or 4, alpha=args.alpha,
                                  dynamic_alpha=args.dynamic_alpha, alpha_start=args.alpha_start,
                                  use_mean_sim=args.use_mean_sim, repetition_penalty=args.repetition_penalty,
                                  eos_token_id=eos_token_id, attention_mask=attention_mask)
    if args.decoder == "beam":
        return beam_search(model, input_ids, max_new_tokens, num_beams=args.num_beams, **beam)
    if args.decoder == "mbr":
        return mbr_decode(model, input_ids, max_new_tokens, decode_fn, num_beams=args.num_beams,
                          num_candidates=args.num_candidates, **beam)
    alphas = sorted({round(max(0.0, args.alpha - 0.2), 6), args.alpha, round(min(1.0, args.alpha + 0.2), 6)})
    return candidate_ensemble(model, input_ids, max_new_tokens, decode_fn, num_samples=args.num_candidates,
                              top_p=args.top_p, temperature=args.temperature, alphas=tuple(alphas),
                              contrastive_top_k=top_k or 4, num_beams=args.num_beams, generator=generator, **beam)
