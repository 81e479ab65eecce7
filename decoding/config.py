"""How to decode, as one value: `DecodeConfig` (the decoder's name and its settings) and `decode`, which runs it.

    cfg = DecodeConfig(decoder="contrastive", contrastive_k=4, alpha=0.6, max_new_tokens=64)
    out = decode(model, ids, cfg, attention_mask=mask, eos_token_id=eos)   # (B, T) -> (B, T + n)

The defaults are the command line's (cli/decoding_flags.py builds a DecodeConfig from the flags): top-p 0.9 at
temperature 1.2 are the course's settings for sonnets; the rest are minigpt's own choices: contrastive search with
k = 4, alpha = 0.6; beam search with 5 beams, length penalty 0.6 and no repeated 3-grams; 8 MBR / ensemble
candidates. (The decoder functions themselves keep the reference defaults, e.g. beam_search(length_penalty=1.0,
no_repeat_ngram_size=0).) A setting out of range is a ValueError naming its flag, raised when the config is built.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .beam import beam_search
from .contrastive import contrastive_search
from .ensemble import candidate_ensemble, mbr_decode
from .sampling import DRAWS, greedy, sample

DECODERS = ("greedy", "top-p", "contrastive", "beam", "mbr", "ensemble")


@dataclass(frozen=True)
class DecodeConfig:
    decoder: str = "top-p"  # one of DECODERS
    max_new_tokens: int = 50  # tokens generated after each prompt
    # top-p (and the ensemble's samples)
    temperature: float = 1.2  # logits / temperature before sampling
    top_p: float = 0.9  # the smallest set of tokens holding this probability mass
    top_k: int = 0  # also keep only the k most likely tokens (0 = off)
    seed: int = 11711  # prompt b samples from a generator seeded seed + b
    draw: str = "vocab"  # top-p: "sorted" draws from the sorted probabilities, as the course (sampling.draw_sorted)
    # contrastive search (Su et al. 2022)
    contrastive_k: int = 4  # candidate tokens per step
    alpha: float = 0.6  # weight of the degeneration penalty (0 = greedy)
    dynamic_alpha: bool = False  # alpha rises linearly from alpha_start to alpha
    alpha_start: float = 0.0
    use_mean_sim: bool = False  # penalise the mean similarity to the context instead of the max
    repetition_penalty: float = 1.0  # CTRL penalty on tokens already present (1.0 = off)
    # beam search, MBR, ensemble
    num_beams: int = 5
    length_penalty: float = 0.6  # score = log-prob / length ** length_penalty
    no_repeat_ngram_size: int = 3  # 0 = off
    num_candidates: int = 8  # mbr: beam n-best size; ensemble: top-p samples in the pool
    ensemble_alpha_spread: float = 0.2  # ensemble: contrastive runs at alpha - spread, alpha, alpha + spread
    # batching
    batch_size: int = 0  # prompts decoded together (left-padded); 0 = all at once

    def __post_init__(self):
        if self.decoder not in DECODERS:
            raise ValueError(f"--decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        check("--max-new-tokens", self.max_new_tokens, ">= 1", self.max_new_tokens >= 1)
        check("--temperature", self.temperature, "> 0", self.temperature > 0)
        check("--top-p", self.top_p, "in (0, 1]", 0 < self.top_p <= 1)
        check("--top-k", self.top_k, ">= 0", self.top_k >= 0)
        check("--contrastive-k", self.contrastive_k, ">= 1", self.contrastive_k >= 1)
        check("--alpha", self.alpha, "in [0, 1]", 0 <= self.alpha <= 1)
        check("--alpha-start", self.alpha_start, "in [0, 1]", 0 <= self.alpha_start <= 1)
        check("--repetition-penalty", self.repetition_penalty, "> 0", self.repetition_penalty > 0)
        check("--num-beams", self.num_beams, ">= 1", self.num_beams >= 1)
        check("--no-repeat-ngram-size", self.no_repeat_ngram_size, ">= 0", self.no_repeat_ngram_size >= 0)
        check("--num-candidates", self.num_candidates, ">= 2", self.num_candidates >= 2)
        check("--ensemble-alpha-spread", self.ensemble_alpha_spread, "in [0, 1]",
              0 <= self.ensemble_alpha_spread <= 1)
        check("--decode-batch-size", self.batch_size, ">= 0", self.batch_size >= 0)
        check("DecodeConfig.draw", self.draw, "'vocab' or 'sorted'", self.draw in DRAWS)

    def ensemble_alphas(self) -> tuple[float, ...]:
        """The contrastive alphas of the ensemble's pool: alpha -/+ the spread, clipped to [0, 1], distinct."""
        low = round(max(0.0, self.alpha - self.ensemble_alpha_spread), 6)
        high = round(min(1.0, self.alpha + self.ensemble_alpha_spread), 6)
        return tuple(sorted({low, self.alpha, high}))


def check(flag: str, value, wanted: str, ok: bool) -> None:
    if not ok or value != value:  # value != value: nan
        raise ValueError(f"{flag} must be {wanted}, got {value}")


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
