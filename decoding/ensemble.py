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
from .common import check_prompt
from .contrastive import contrastive_search
from .mbr import mbr_select
from .sampling import sample


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


def stack_rows(rows: list[torch.Tensor], eos_token_id: int | None) -> torch.Tensor:
    """(1, L_i) each -> (P, max L_i), shorter rows padded on the right with eos (as the decoders pad)."""
    width = max(r.size(1) for r in rows)
    out = rows[0].new_full((len(rows), width), eos_token_id if eos_token_id is not None else 0)
    for p, r in enumerate(rows):
        out[p, : r.size(1)] = r[0]
    return out


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
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(P, T) left-padded prompts -> (P, T + n): per prompt, the beam n-best (num_candidates of them, default
    num_beams; num_beams is raised to at least num_candidates) reranked by MBR. One batched beam search."""
    num_candidates = num_candidates or num_beams
    if not isinstance(num_candidates, int) or num_candidates < 2:
        raise ValueError(f"mbr_decode: MBR needs num_candidates >= 2, got {num_candidates!r}")
    nbest = beam_search(model, input_ids, max_new_tokens, num_beams=max(num_beams, num_candidates),
                        length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                        num_return_sequences=num_candidates, eos_token_id=eos_token_id,
                        attention_mask=attention_mask)  # (P * N, T + n), N = num_candidates
    P, T = input_ids.shape
    choices = []
    for p in range(P):
        rows = nbest[p * num_candidates : (p + 1) * num_candidates]
        candidates = [trim_after_eos(row, T, eos_token_id) for row in rows]
        best, _ = rerank(candidates, T, decode, eos_token_id)
        choices.append(candidates[best])
    return stack_rows(choices, eos_token_id)


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
    generator: torch.Generator | list[torch.Generator] | None = None,
    eos_token_id: int | None = None,
    return_candidates: bool = False,
    attention_mask: torch.Tensor | None = None,
):
    """(P, T) left-padded prompts -> (P, T + n): per prompt, the MBR choice among num_samples top-p samples,
    one contrastive search per alpha and the num_beams-best beam list. Each decoder runs once on the whole
    batch. generator: as for `sample` (a list of P gives prompt p its own stream for all its samples).
    With return_candidates=True: (choices, pools), pools[p] = [(ids (1, L), text, source), ...] of prompt p."""
    check_prompt(model, input_ids, max_new_tokens, eos_token_id, "candidate_ensemble", attention_mask)
    P, T = input_ids.shape
    pools: list[list[tuple[torch.Tensor, str]]] = [[] for _ in range(P)]  # per prompt: (ids (1, L), source)

    def add(batch: torch.Tensor, source: str) -> None:  # (P, L) -> one candidate per prompt
        for p in range(P):
            pools[p].append((trim_after_eos(batch[p], T, eos_token_id), source))

    for i in range(num_samples):
        add(sample(model, input_ids, max_new_tokens, temperature=temperature, top_p=top_p, generator=generator,
                   eos_token_id=eos_token_id, attention_mask=attention_mask), f"top-p sample {i}")
    for alpha in alphas:
        add(contrastive_search(model, input_ids, max_new_tokens, top_k=contrastive_top_k, alpha=alpha,
                               eos_token_id=eos_token_id, attention_mask=attention_mask), f"contrastive alpha={alpha}")
    if num_beams > 0:
        nbest = beam_search(model, input_ids, max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                            no_repeat_ngram_size=no_repeat_ngram_size, num_return_sequences=num_beams,
                            eos_token_id=eos_token_id, attention_mask=attention_mask)  # (P * num_beams, L)
        for rank in range(num_beams):
            add(nbest[rank::num_beams], f"beam #{rank + 1}")
    if len(pools[0]) < 2:
        raise ValueError(f"candidate_ensemble: the pool has {len(pools[0])} candidate(s); MBR needs at least 2 "
                         "(raise num_samples, alphas or num_beams)")
    choices, described = [], []
    for pool in pools:
        best, texts = rerank([ids for ids, _ in pool], T, decode, eos_token_id)
        choices.append(pool[best][0])
        described.append([(ids, text, source) for (ids, source), text in zip(pool, texts)])
    if return_candidates:
        return stack_rows(choices, eos_token_id), described
    return stack_rows(choices, eos_token_id)
