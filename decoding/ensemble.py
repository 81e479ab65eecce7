"""MBR reranking of generated candidates: over the beam n-best, and over a pooled candidate ensemble.

Minimum Bayes risk decoding (Kumar & Byrne 2004; Eikema & Aziz 2020) picks, among candidates, the one with the
highest mean chrF against all the others (`mbr.mbr_select`): the "consensus" output rather than the single most
likely one. The candidates here are the continuations only (the shared prompt would only add agreement).

    mbr_decode          the beam search n-best list, reranked by MBR ("MBR over beam candidates")
    candidate_ensemble  top-p samples + contrastive-search outputs (a few alphas) + the beam n-best, pooled
                        and reranked by MBR

`decode` turns token ids into text: a function list[int] -> str, or a tokenizer with a .decode method.
"""
from __future__ import annotations

import torch

from .beam import beam_search
from .contrastive import contrastive_search
from .mbr import mbr_select
from .sampling import check_prompt, sample


def trim_after_eos(row: torch.Tensor, prompt_len: int, eos_token_id: int | None) -> torch.Tensor:
    """(L,) prompt + output -> (1, L') cut just after the first generated eos (beam rows are padded with it)."""
    if eos_token_id is not None:
        hits = (row[prompt_len:] == eos_token_id).nonzero()
        if len(hits):
            row = row[: prompt_len + int(hits[0]) + 1]
    return row[None, :]


def continuation_text(ids: torch.Tensor, prompt_len: int, decode, eos_token_id: int | None) -> str:
    """The generated part of (1, L) ids as text, without the eos token."""
    new = ids[0, prompt_len:].tolist()
    if eos_token_id is not None and new and new[-1] == eos_token_id:
        new = new[:-1]
    return decode(new)


def rerank(candidates: list[torch.Tensor], prompt_len: int, decode, eos_token_id: int | None):
    """candidates: (1, L_i) each -> (index of the MBR choice, the texts)."""
    decode = getattr(decode, "decode", decode)  # a tokenizer or a plain function
    texts = [continuation_text(c, prompt_len, decode, eos_token_id) for c in candidates]
    return mbr_select(texts), texts


def mbr_decode(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    decode,
    num_beams: int = 5,
    num_candidates: int | None = None,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """(1, T) -> (1, T + n): the beam n-best (num_candidates of them, default num_beams; num_beams is raised to
    at least num_candidates) reranked by MBR."""
    num_candidates = num_candidates or num_beams
    if not isinstance(num_candidates, int) or num_candidates < 2:
        raise ValueError(f"mbr_decode: MBR needs num_candidates >= 2, got {num_candidates!r}")
    nbest = beam_search(model, input_ids, max_new_tokens, num_beams=max(num_beams, num_candidates),
                        length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                        num_return_sequences=num_candidates, eos_token_id=eos_token_id)
    T = input_ids.size(1)
    candidates = [trim_after_eos(row, T, eos_token_id) for row in nbest]
    best, _ = rerank(candidates, T, decode, eos_token_id)
    return candidates[best]


def candidate_ensemble(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    decode,
    num_samples: int = 8,
    top_p: float = 0.9,
    temperature: float = 1.2,
    alphas: tuple[float, ...] = (0.4, 0.6, 0.8),
    contrastive_top_k: int = 4,
    num_beams: int = 5,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    return_candidates: bool = False,
):
    """(1, T) -> (1, T + n), the MBR choice among num_samples top-p samples, one contrastive search per alpha
    and the num_beams-best beam list. With return_candidates=True: (choice, [(ids, text, source), ...])."""
    check_prompt(model, input_ids, max_new_tokens, eos_token_id, "candidate_ensemble")
    pool: list[tuple[torch.Tensor, str]] = []  # (ids (1, L), where it came from)
    for i in range(num_samples):
        ids = sample(model, input_ids, max_new_tokens, temperature=temperature, top_p=top_p, generator=generator,
                     eos_token_id=eos_token_id)
        pool.append((ids, f"top-p sample {i}"))
    for alpha in alphas:
        ids = contrastive_search(model, input_ids, max_new_tokens, top_k=contrastive_top_k, alpha=alpha,
                                 eos_token_id=eos_token_id)
        pool.append((ids, f"contrastive alpha={alpha}"))
    if num_beams > 0:
        nbest = beam_search(model, input_ids, max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                            no_repeat_ngram_size=no_repeat_ngram_size, num_return_sequences=num_beams,
                            eos_token_id=eos_token_id)
        T = input_ids.size(1)
        pool += [(trim_after_eos(row, T, eos_token_id), f"beam #{rank + 1}") for rank, row in enumerate(nbest)]
    if len(pool) < 2:
        raise ValueError(f"candidate_ensemble: the pool has {len(pool)} candidate(s); MBR needs at least 2 "
                         "(raise num_samples, alphas or num_beams)")
    best, texts = rerank([ids for ids, _ in pool], input_ids.size(1), decode, eos_token_id)
    if return_candidates:
        return pool[best][0], [(ids, text, source) for (ids, source), text in zip(pool, texts)]
    return pool[best][0]
