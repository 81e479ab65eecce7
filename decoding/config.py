"""How to decode, as one value: `DecodeConfig` (the decoder's name and its settings) and `decode`, which runs it.

    cfg = DecodeConfig(decoder="contrastive", contrastive_k=4, alpha=0.6, max_new_tokens=64)
    out = decode(model, ids, cfg, attention_mask=mask, eos_token_id=eos)   # (B, T) -> (B, T + n)

    add_decoder_arguments(parser, max_new_tokens=128)   # the flags, made from the declarations below
    cfg = decode_config_from_args(args)

Each setting is declared once below (minigpt/settings.py): default, help, range and the decoders that read it.
top-p 0.9 at temperature 1.2 are the course's settings for sonnets; the rest are minigpt's own choices:
contrastive search with k = 4, alpha = 0.6; beam search with 5 beams, length penalty 0.6 and no repeated 3-grams;
8 MBR / ensemble candidates. (The decoder functions themselves keep the reference defaults, e.g.
beam_search(length_penalty=1.0, no_repeat_ngram_size=0).) A setting out of range, or one set away from its
default for a decoder that does not read it (--top-p with beam), is a ValueError naming its flag, raised when the
config is built: the command line's flags and code get the same words.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from minigpt.settings import add_settings, check_settings, declared, default_of, flag_of, setting, settings_from_args

from .beam import beam_search
from .contrastive import contrastive_search
from .ensemble import candidate_ensemble
from .mbr import mbr_decode
from .sampling import DRAWS, greedy, sample

DECODERS = ("greedy", "top-p", "contrastive", "beam", "mbr", "ensemble")
SAMPLING = ("top-p", "ensemble")  # the decoders that draw random numbers
CONTRASTIVE = ("contrastive", "ensemble")
BEAMS = ("beam", "mbr", "ensemble")


@dataclass(frozen=True)
class DecodeConfig:
    decoder: str = setting(
        "top-p", "greedy: most likely token; top-p: nucleus sampling; contrastive: contrastive search (Su et al. "
                 "2022); beam: beam search (best hypothesis); mbr: beam n-best reranked by MBR with chrF; ensemble: "
                 "top-p samples + contrastive outputs + beam n-best, reranked by MBR", choices=DECODERS)
    max_new_tokens: int = setting(50, "tokens generated after each prompt", low=1)
    # top-p (and the ensemble's samples)
    temperature: float = setting(1.2, "divide the logits by this before sampling (> 1 = more diverse)", low=0,
                                 low_open=True, used_by=SAMPLING)
    top_p: float = setting(0.9, "sample from the smallest set of tokens holding this probability mass", low=0,
                           high=1, low_open=True, used_by=SAMPLING)
    top_k: int = setting(0, "also keep only the k most likely tokens before the top-p cut (0 = off)", low=0,
                         used_by=("top-p",))
    seed: int = setting(11711, "seed of the sampling generator (prompt b draws from seed + b)", low=0,
                        used_by=SAMPLING)
    draw: str = setting("vocab", "top-p: 'sorted' draws from the sorted probabilities, as the course "
                                 "(sampling.draw_sorted)", choices=tuple(DRAWS), cli=False)
    # contrastive search (Su et al. 2022)
    contrastive_k: int = setting(4, "candidate tokens per step, the k most likely, among which the degeneration "
                                    "penalty chooses", low=1, used_by=CONTRASTIVE)
    alpha: float = setting(0.6, "weight of the degeneration penalty (0 = greedy)", low=0, high=1, used_by=CONTRASTIVE)
    dynamic_alpha: bool = setting(False, "alpha rises linearly from --alpha-start (first token) to --alpha (last)",
                                  used_by=("contrastive",))
    alpha_start: float = setting(0.0, "with --dynamic-alpha: alpha of the first generated token", low=0, high=1,
                                 used_by=("contrastive",))
    use_mean_sim: bool = setting(False, "penalise the mean cosine similarity to the context instead of the max",
                                 used_by=("contrastive",))
    repetition_penalty: float = setting(1.0, "CTRL repetition penalty on tokens already present (1.0 = off, > 1 = "
                                             "fewer repeats)", low=0, low_open=True, used_by=("contrastive",))
    # beam search, MBR, ensemble
    num_beams: int = setting(5, "beams", low=1, used_by=BEAMS)
    length_penalty: float = setting(0.6, "score = log-prob / length ** this (> 0 favours longer outputs)",
                                    used_by=BEAMS)
    no_repeat_ngram_size: int = setting(3, "never repeat an n-gram of this size (0 = off)", low=0, used_by=BEAMS)
    num_candidates: int = setting(8, "mbr: size of the beam n-best to rerank (num-beams is raised to match); "
                                     "ensemble: number of top-p samples in the pool", low=2,
                                  used_by=("mbr", "ensemble"))
    ensemble_alpha_spread: float = setting(0.2, "the pool holds contrastive outputs at three alphas, --alpha minus "
                                                "this, --alpha and --alpha plus this (clipped to [0, 1])", low=0,
                                           high=1, used_by=("ensemble",))
    # batching
    batch_size: int = setting(0, "prompts decoded together in one batch (left-padded; one forward per step for all "
                                 "of them); 0 = all prompts at once. Deterministic decoders give the same text at "
                                 "any size", low=0, flag="--decode-batch-size")

    def __post_init__(self):
        check_settings(self)
        unused = [flag_of(f) for f in declared(self) if not uses(self.decoder, f.name)
                  and getattr(self, f.name) != default_of(f)]
        if unused:
            hint = ("; its candidate count is --contrastive-k" if "--top-k" in unused and self.decoder in CONTRASTIVE
                    else "")
            raise ValueError(f"--decoder {self.decoder} does not use {', '.join(unused)}{hint}: leave "
                             f"{'it' if len(unused) == 1 else 'them'} out, or choose a decoder that uses "
                             f"{'it' if len(unused) == 1 else 'them'}")
        if self.alpha_start != 0 and not self.dynamic_alpha:
            raise ValueError("--alpha-start is the first token's alpha under --dynamic-alpha: give both, or neither")

    def ensemble_alphas(self) -> tuple[float, ...]:
        """The contrastive alphas of the ensemble's pool: alpha -/+ the spread, clipped to [0, 1], distinct."""
        low = round(max(0.0, self.alpha - self.ensemble_alpha_spread), 6)
        high = round(min(1.0, self.alpha + self.ensemble_alpha_spread), 6)
        return tuple(sorted({low, self.alpha, high}))


def uses(decoder: str, name: str) -> bool:
    """Does this decoder read the setting? (Each declaration's used_by; none: every decoder does.)"""
    used_by = DecodeConfig.__dataclass_fields__[name].metadata["setting"]["used_by"]
    return used_by is None or decoder in used_by


def add_decoder_arguments(parser: argparse.ArgumentParser, skip=(), **defaults) -> None:
    """The decoder flags, made from DecodeConfig's declarations; `defaults` replace some for this command (its
    --max-new-tokens); skip=("seed",) where the command already has a --seed (the trainer's)."""
    add_settings(parser, DecodeConfig, defaults=defaults, skip=skip, title="decoding (decoding/config.py)")


def decode_config_from_args(args: argparse.Namespace, **values) -> DecodeConfig:
    """The DecodeConfig of the parsed decoder flags, `values` replacing some."""
    return settings_from_args(DecodeConfig, args, **values)


def decode(model, input_ids: torch.Tensor, cfg: DecodeConfig, attention_mask: torch.Tensor | None = None,
           eos_token_id: int | None = None, decode_fn=None, generator=None) -> torch.Tensor:
    """Run cfg.decoder on (B, T) left-padded prompts -> (B, T + n); finished rows are padded with eos.

    attention_mask: (B, T), 1 = token, 0 = padding (None = no padding).
    generator: for sampling, one torch.Generator or a list of B (one per row, see decoding.sampling.sample);
    None = row b gets a fresh one seeded with cfg.seed + b (then every call with the same prompts draws the
    same samples, and row b's sample does not depend on the other rows).
    decode_fn (list[int] -> str, or a tokenizer) is needed by mbr and ensemble, which rerank text."""
    if cfg.decoder in ("top-p", "ensemble") and generator is None:
        generator = [torch.Generator(device=input_ids.device).manual_seed(cfg.seed + b)
                     for b in range(input_ids.size(0))]
    if cfg.decoder in ("mbr", "ensemble") and decode_fn is None:
        raise ValueError(f"--decoder {cfg.decoder} reranks text, so decode() needs decode_fn")
    n = cfg.max_new_tokens
    beam = dict(length_penalty=cfg.length_penalty, no_repeat_ngram_size=cfg.no_repeat_ngram_size,
                eos_token_id=eos_token_id, attention_mask=attention_mask)

    if cfg.decoder == "greedy":
        return greedy(model, input_ids, n, eos_token_id=eos_token_id, attention_mask=attention_mask)
    if cfg.decoder == "top-p":
        return sample(model, input_ids, n, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                      generator=generator, eos_token_id=eos_token_id, attention_mask=attention_mask,
                      draw_order=cfg.draw)
    if cfg.decoder == "contrastive":
        return contrastive_search(model, input_ids, n, top_k=cfg.contrastive_k, alpha=cfg.alpha,
                                  dynamic_alpha=cfg.dynamic_alpha, alpha_start=cfg.alpha_start,
                                  use_mean_sim=cfg.use_mean_sim, repetition_penalty=cfg.repetition_penalty,
                                  eos_token_id=eos_token_id, attention_mask=attention_mask)
    if cfg.decoder == "beam":
        return beam_search(model, input_ids, n, num_beams=cfg.num_beams, **beam)
    if cfg.decoder == "mbr":
        return mbr_decode(model, input_ids, n, decode_fn, num_beams=cfg.num_beams,
                          num_candidates=cfg.num_candidates, **beam)
    return candidate_ensemble(model, input_ids, n, decode_fn, num_samples=cfg.num_candidates, top_p=cfg.top_p,
                              temperature=cfg.temperature, alphas=cfg.ensemble_alphas(),
                              contrastive_top_k=cfg.contrastive_k, num_beams=cfg.num_beams, generator=generator,
                              **beam)
