"""Beam search with a length penalty, n-gram blocking and an n-best list (Graves 2012; Wu et al. 2016, eq. 14).

Keep the B = num_beams best partial outputs ("beams"). Each step, every beam is extended by every token and
scored by its summed log-probability; the 2B best extensions are the candidates. A candidate that ends in EOS
(or reaches max_new_tokens) is a finished hypothesis, scored

    score(y) = sum_t log p(y_t | y_<t, x) / |y| ** length_penalty      |y| = new tokens, EOS included

and kept in a pool of the B best finished ones; the B best unfinished candidates are the next beams.
length_penalty > 0 favours longer outputs, < 0 shorter ones. no_repeat_ngram_size = n forbids any token that
would repeat an n-gram of prompt + output (Paulus et al. 2018).

This follows transformers' `_beam_search` (4.55) step for step, so the tokens are identical:
  * only the top B of the 2B candidates may enter the finished pool (the rest only back up the live beams);
  * at the first step only beam 0 is live (the others start at -1e9), so the beams do not start as copies;
  * the search stops when max_new_tokens is reached, or when the pool is full and the best live beam, scored
    at its current length, cannot beat the pool's worst (transformers' default `early_stopping=False` rule).
The KV cache of the beams (preallocated, minigpt/kv_cache.py) is reordered every step, never recomputed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minigpt.kv_cache import KVCache

from .sampling import check_prompt, inference

NEG = -1.0e9  # "impossible" score, as transformers uses (finite, so sums stay ordered)


def block_repeated_ngrams(log_probs: torch.Tensor, tokens: torch.Tensor, n: int) -> None:
    """In place: log_probs (B, V) = -inf for every token that would complete an n-gram already in `tokens`.

    tokens: (B, L) prompt + output of each beam. The next n-gram starts with the last n - 1 tokens; every
    earlier n-gram with the same first n - 1 tokens bans its last token."""
    L = tokens.size(1)
    if n == 0 or L < n:
        return
    ngrams = tokens.unfold(1, n, 1)  # (B, L - n + 1, n): every n-gram so far
    prefix = tokens[:, L - n + 1 :]  # (B, n - 1)
    same_prefix = (ngrams[:, :, :-1] == prefix[:, None, :]).all(dim=-1)  # (B, L - n + 1)
    beam, start = same_prefix.nonzero(as_tuple=True)
    log_probs[beam, ngrams[beam, start, -1]] = float("-inf")


def check_beam_options(num_beams, length_penalty, no_repeat_ngram_size, num_return_sequences) -> None:
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"beam_search: num_beams must be an integer >= 1, got {num_beams!r}")
    if not isinstance(length_penalty, (int, float)):
        raise ValueError(f"beam_search: length_penalty must be a number, got {length_penalty!r}")
    if isinstance(no_repeat_ngram_size, bool) or not isinstance(no_repeat_ngram_size, int) or no_repeat_ngram_size < 0:
        raise ValueError(f"beam_search: no_repeat_ngram_size must be an integer >= 0, got {no_repeat_ngram_size!r}")
    if not isinstance(num_return_sequences, int) or not 1 <= num_return_sequences <= num_beams:
        raise ValueError(
            f"beam_search: num_return_sequences must be in [1, num_beams={num_beams}], got {num_return_sequences!r}"
        )


@inference
def beam_search(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    num_beams: int = 5,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    num_return_sequences: int = 1,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """(1, T) prompt -> (num_return_sequences, T + n) best first; shorter rows padded with eos_token_id."""
    check_prompt(model, input_ids, max_new_tokens, eos_token_id, "beam_search")
    check_beam_options(num_beams, length_penalty, no_repeat_ngram_size, num_return_sequences)
    B, T, V = num_beams, input_ids.size(1), model.config.vocab_size
    if 2 * B > V:
        raise ValueError(f"beam_search: num_beams={B} needs 2 * num_beams <= vocabulary size ({V}) candidates")
    pad = eos_token_id if eos_token_id is not None else -1  # never visible without eos: every row is full length

    # live beams: tokens (B, T + max_new) and summed log-probs (B,)
    beams = torch.full((B, T + max_new_tokens), pad, dtype=torch.long, device=input_ids.device)
    beams[:, :T] = input_ids
    beam_scores = torch.full((B,), NEG, device=input_ids.device)
    beam_scores[0] = 0.0
    # pool of the B best finished hypotheses; slots start empty (score NEG, not finished)
    pool = beams.clone()
    pool_scores = torch.full((B,), NEG, device=input_ids.device)
    pool_finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    pool_lengths = torch.zeros(B, dtype=torch.long, device=input_ids.device)
    in_top_b = torch.arange(2 * B, device=input_ids.device) < B  # which of the 2B candidates may finish

    prompt_cache = KVCache(model.config.n_layer, capacity=T + max_new_tokens)  # preallocated, minigpt/kv_cache.py
    out = model(input_ids, past_key_values=prompt_cache, use_cache=True, logits_to_keep=1)  # the prompt once,
    logits = out.logits[:, -1].float().expand(B, V)  # (B, V)
    cache = prompt_cache.repeat_rows(B)  # then copied to the B beams

    for step in range(max_new_tokens):
        cur = T + step  # tokens per beam so far
        log_probs = F.log_softmax(logits, dim=-1)  # (B, V)
        if no_repeat_ngram_size:
            block_repeated_ngrams(log_probs, beams[:, :cur], no_repeat_ngram_size)
        total = (log_probs + beam_scores[:, None]).view(-1)  # (B * V,): beam b, token v at b * V + v

        # the 2B best extensions over all beams
        cand_scores, flat = torch.topk(total, k=2 * B)  # (2B,) best first
        cand_beam, cand_token = flat // V, flat % V
        cand_tokens = beams[cand_beam]  # (2B, T + max_new)
        cand_tokens[:, cur] = cand_token
        last_step = step == max_new_tokens - 1
        ends = torch.full_like(in_top_b, last_step)
        if eos_token_id is not None:
            ends |= cand_token == eos_token_id

        # finished candidates among the top B enter the pool with their length-penalised score
        n_new = step + 1
        finished_scores = cand_scores / (n_new**length_penalty) + (~(ends & in_top_b)) * NEG
        merged_scores = torch.cat([pool_scores, finished_scores])
        keep = torch.topk(merged_scores, k=B).indices
        pool_scores = merged_scores[keep]
        pool = torch.cat([pool, cand_tokens])[keep]
        pool_finished = torch.cat([pool_finished, ends & in_top_b])[keep]
        pool_lengths = torch.cat([pool_lengths, torch.full_like(in_top_b, n_new, dtype=torch.long)])[keep]

        if bool(ends.all()):  # max_new_tokens reached, or every candidate ended: nothing left to extend
            break
        # the B best unfinished candidates are the next beams (a finished one scores NEG here)
        unfinished_scores = cand_scores + ends * NEG
        live = torch.topk(unfinished_scores, k=B).indices
        beams, beam_scores = cand_tokens[live], unfinished_scores[live]

        # stop early when the best beam, scored at its current length, cannot beat the pool's worst
        # (an empty pool slot counts as NEG, so the search goes on until the pool is full)
        worst = torch.where(pool_finished, pool_scores.min(), NEG)  # (B,)
        if not bool((beam_scores[0] / (n_new**length_penalty) > worst).any()):
            break

        # the beams' caches follow their parents, then one forward for the B new tokens
        cache.reorder_rows(cand_beam[live])
        out = model(beams[:, cur : cur + 1], past_key_values=cache, use_cache=True)
        logits = out.logits[:, -1].float()

    best = pool[:num_return_sequences]
    return best[:, : T + int(pool_lengths[:num_return_sequences].max())]
