"""The candidate ensemble: top-p samples + contrastive-search outputs (a few alphas) + the beam n-best, pooled
per prompt and reranked by MBR (decoding/mbr.py: the candidate that agrees most, by chrF, with all the others).

`decode` turns token ids into text: a function list[int] -> str, or a tokenizer with a .decode method.
"""
from __future__ import annotations

import torch

from .beam import beam_search
from .common import check_prompt
from .contrastive import contrastive_search
from .mbr import rerank, stack_rows, trim_after_eos
from .sampling import sample


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
