"""The decoder flags shared by `run.py generate` and the sonnet task, and the DecodeConfig they make.

    add_decoder_arguments(parser)      --decoder {greedy,top-p,contrastive,beam,mbr,ensemble}, its settings and
                                       --decode-batch-size
    decode_config_from_args(args)      the parsed flags -> decoding.config.DecodeConfig (built once, in main)

The defaults are DecodeConfig's (decoding/config.py says where each comes from). Out-of-range values are refused
when the command line is parsed, naming the flag.
"""
from __future__ import annotations

import argparse

from cli.arg_types import number
from decoding.config import DECODERS, DecodeConfig

DEFAULT = DecodeConfig()


def add_decoder_arguments(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    """seed=False when the caller already has a --seed (the trainer's): sampling then uses that one.
    The caller adds --max-new-tokens (its default depends on the command)."""
    g = parser.add_argument_group("decoding (decoding/config.py)")
    g.add_argument("--decoder", choices=DECODERS, default=DEFAULT.decoder,
                   help="greedy: most likely token; top-p: nucleus sampling; contrastive: contrastive search "
                        "(Su et al. 2022); beam: beam search (best hypothesis); mbr: beam n-best reranked by "
                        "MBR with chrF; ensemble: top-p samples + contrastive outputs + beam n-best, reranked "
                        "by MBR")
    g.add_argument("--temperature", type=number(float, 0, low_open=True), default=DEFAULT.temperature,
                   help="top-p/ensemble: divide the logits by this before sampling (> 1 = more diverse)")
    g.add_argument("--top-p", type=number(float, 0, 1, low_open=True), default=DEFAULT.top_p,
                   help="top-p/ensemble: sample from the smallest set of tokens holding this probability mass")
    g.add_argument("--top-k", type=number(int, 0), default=DEFAULT.top_k,
                   help="top-p: also keep only the k most likely tokens before the top-p cut (0 = off)")
    g.add_argument("--contrastive-k", type=number(int, 1), default=DEFAULT.contrastive_k,
                   help="contrastive/ensemble: candidate tokens per step, the k most likely, among which the "
                        "degeneration penalty chooses")
    g.add_argument("--alpha", type=number(float, 0, 1), default=DEFAULT.alpha,
                   help="contrastive: weight of the degeneration penalty (0 = greedy)")
    g.add_argument("--dynamic-alpha", action="store_true",
                   help="contrastive: alpha rises linearly from --alpha-start (first token) to --alpha (last)")
    g.add_argument("--alpha-start", type=number(float, 0, 1), default=DEFAULT.alpha_start,
                   help="contrastive with --dynamic-alpha: alpha of the first generated token")
    g.add_argument("--use-mean-sim", action="store_true",
                   help="contrastive: penalise the mean cosine similarity to the context instead of the max")
    g.add_argument("--repetition-penalty", type=number(float, 0, low_open=True),
                   default=DEFAULT.repetition_penalty,
                   help="contrastive: CTRL repetition penalty on tokens already present (1.0 = off, > 1 = fewer "
                        "repeats)")
    g.add_argument("--num-beams", type=number(int, 1), default=DEFAULT.num_beams,
                   help="beam/mbr/ensemble: beams")
    g.add_argument("--length-penalty", type=number(float), default=DEFAULT.length_penalty,
                   help="beam/mbr/ensemble: score = log-prob / length ** this (> 0 favours longer outputs)")
    g.add_argument("--no-repeat-ngram-size", type=number(int, 0), default=DEFAULT.no_repeat_ngram_size,
                   help="beam/mbr/ensemble: never repeat an n-gram of this size (0 = off)")
    g.add_argument("--num-candidates", type=number(int, 2), default=DEFAULT.num_candidates,
                   help="mbr: size of the beam n-best to rerank (num-beams is raised to match); ensemble: "
                        "number of top-p samples in the pool")
    g.add_argument("--ensemble-alpha-spread", type=number(float, 0, 1),
                   default=DEFAULT.ensemble_alpha_spread,
                   help="ensemble: the pool holds contrastive outputs at three alphas, --alpha minus this, --alpha "
                        "and --alpha plus this (clipped to [0, 1])")
    g.add_argument("--decode-batch-size", type=number(int, 0), default=DEFAULT.batch_size,
                   help="prompts decoded together in one batch (left-padded; one forward per step for all of "
                        "them); 0 = all prompts at once. Deterministic decoders give the same text at any size")
    if seed:
        g.add_argument("--seed", type=number(int, 0), default=DEFAULT.seed, help="top-p/ensemble: seed of the sampling "
                                                                     "generator (prompt b draws from seed + b)")


def decode_config_from_args(args: argparse.Namespace) -> DecodeConfig:
    """The DecodeConfig of the parsed decoder flags (and the command's --max-new-tokens and --seed)."""
    if args.decoder in ("contrastive", "ensemble") and args.top_k:
        raise ValueError(f"--top-k filters top-p sampling only; the candidate count of --decoder {args.decoder} is "
                         f"--contrastive-k (got --top-k {args.top_k})")
    return DecodeConfig(
        decoder=args.decoder, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, seed=args.seed, contrastive_k=args.contrastive_k, alpha=args.alpha,
        dynamic_alpha=args.dynamic_alpha, alpha_start=args.alpha_start, use_mean_sim=args.use_mean_sim,
        repetition_penalty=args.repetition_penalty, num_beams=args.num_beams, length_penalty=args.length_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size, num_candidates=args.num_candidates,
        ensemble_alpha_spread=args.ensemble_alpha_spread, batch_size=args.decode_batch_size)
