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
A batch of P prompts runs P * num_beams beams in one forward; each prompt keeps its own pool and stopping rule.
Left padding is no text: an n-gram touching it is not blocked (transformers counts the padding ids; the two
agree whenever the padding id is eos_token_id, which a live beam cannot contain).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minigpt.kv_cache import KVCache

from .common import check_prompt, inference, mask_upto, padding_mask

NEG = -1.0e9  # "impossible" score, as transformers uses (finite, so sums stay ordered)


def block_repeated_ngrams(log_probs: torch.Tensor, tokens: torch.Tensor, n: int,
                          real: torch.Tensor | None = None) -> None:
    """In place: log_probs (R, V) = -inf for every token that would complete an n-gram already in `tokens`.

    tokens: (R, L) prompt + output of each beam; real: (R, L) bool, False at left padding (an n-gram that
    touches padding is no n-gram of the text), None = no padding. The next n-gram starts with the last n - 1
    tokens; every earlier n-gram with the same first n - 1 tokens bans its last token."""
    L = tokens.size(1)
    if n == 0 or L < n:
        return
    ngrams = tokens.unfold(1, n, 1)  # (R, L - n + 1, n): every n-gram so far
    prefix = tokens[:, L - n + 1 :]  # (R, n - 1)
    same_prefix = (ngrams[:, :, :-1] == prefix[:, None, :]).all(dim=-1)  # (R, L - n + 1)
    if real is not None:
        same_prefix &= real.unfold(1, n, 1).all(dim=-1)  # only n-grams of real tokens
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


def pick(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per prompt, the entries `index` of x: x (P, N, ...) and index (P, M) -> (P, M, ...)."""
    return x[torch.arange(x.size(0), device=x.device)[:, None], index]


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
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(P, T) left-padded prompts -> (P * num_return_sequences, T + n): prompt p's hypotheses are rows
    p * num_return_sequences ..., best first; shorter rows padded with eos_token_id.

    attention_mask: (P, T), 1 = token, 0 = padding (None = no padding). Each prompt has its own num_beams beams,
    pool and stopping rule; all P * num_beams beams run in one forward per step."""
    check_prompt(model, input_ids, max_new_tokens, eos_token_id, "beam_search", attention_mask)
    check_beam_options(num_beams, length_penalty, no_repeat_ngram_size, num_return_sequences)
    K, (P, T), V = num_beams, input_ids.shape, model.config.vocab_size
    L, device = T + max_new_tokens, input_ids.device
    if 2 * K > V:
        raise ValueError(f"beam_search: num_beams={K} needs 2 * num_beams <= vocabulary size ({V}) candidates")
    pad = eos_token_id if eos_token_id is not None else -1  # never visible without eos: every row is full length
    mask = padding_mask(attention_mask, max_new_tokens)  # (P, L) or None
    beam_mask = None if mask is None else mask.repeat_interleave(K, dim=0)  # (P * K, L): beam k of p is p*K + k
    real = None if beam_mask is None else beam_mask.bool()

    # live beams: tokens (P, K, L) and summed log-probs (P, K); at first only beam 0 of each prompt is live
    beams = torch.full((P, K, L), pad, dtype=torch.long, device=device)
    beams[:, :, :T] = input_ids[:, None, :]
    beam_scores = torch.full((P, K), NEG, device=device)
    beam_scores[:, 0] = 0.0
    # per prompt, a pool of the K best finished hypotheses; slots start empty (score NEG, not finished)
    pool = beams.clone()
    pool_scores = torch.full((P, K), NEG, device=device)
    pool_finished = torch.zeros((P, K), dtype=torch.bool, device=device)
    pool_lengths = torch.zeros((P, K), dtype=torch.long, device=device)
    in_top_k = torch.arange(2 * K, device=device) < K  # (2K,): which of the 2K candidates may finish
    searching = torch.ones(P, dtype=torch.bool, device=device)  # (P,): may prompt p's pool still improve?

    prompt_cache = KVCache(model.config.n_layer, capacity=L)  # preallocated, minigpt/kv_cache.py
    out = model(input_ids, attention_mask=mask_upto(mask, T), past_key_values=prompt_cache, use_cache=True,
                logits_to_keep=1)  # the prompts once,
    logits = out.logits[:, -1].float().repeat_interleave(K, dim=0)  # (P * K, V)
    cache = prompt_cache.repeat_rows(K)  # then copied to each prompt's K beams
    first_row = torch.arange(P, device=device)[:, None] * K  # (P, 1): cache row of each prompt's beam 0

    for step in range(max_new_tokens):
        cur = T + step  # tokens per beam so far
        log_probs = F.log_softmax(logits, dim=-1)  # (P * K, V)
        if no_repeat_ngram_size:
            block_repeated_ngrams(log_probs, beams.view(P * K, L)[:, :cur], no_repeat_ngram_size,
                                  None if real is None else real[:, :cur])
        total = (log_probs.view(P, K, V) + beam_scores[:, :, None]).view(P, K * V)  # beam k, token v: k * V + v

        # per prompt, the 2K best extensions over its beams
        cand_scores, flat = torch.topk(total, k=2 * K, dim=-1)  # (P, 2K) best first
        cand_beam, cand_token = flat // V, flat % V  # (P, 2K)
        cand_tokens = pick(beams, cand_beam)  # (P, 2K, L), a copy
        cand_tokens[:, :, cur] = cand_token
        last_step = step == max_new_tokens - 1
        ends = torch.full((P, 2 * K), last_step, device=device)
        if eos_token_id is not None:
            ends |= cand_token == eos_token_id

        # finished candidates among the top K enter the pool with their length-penalised score, while the
        # prompt is still searching (transformers adds -1e9 per reason a candidate may not enter)
        n_new = step + 1
        enters = ends & in_top_k
        finished_scores = cand_scores / (n_new**length_penalty) + (~enters) * NEG + (~searching[:, None]) * NEG
        merged_scores = torch.cat([pool_scores, finished_scores], dim=1)  # (P, 3K)
        keep = torch.topk(merged_scores, k=K, dim=-1).indices  # (P, K)
        pool_scores = pick(merged_scores, keep)
        pool = pick(torch.cat([pool, cand_tokens], dim=1), keep)
        pool_finished = pick(torch.cat([pool_finished, enters], dim=1), keep)
        pool_lengths = pick(torch.cat([pool_lengths, torch.full_like(cand_beam, n_new)], dim=1), keep)

        if last_step:  # max_new_tokens reached: nothing left to extend
            break
        # the K best unfinished candidates are the next beams (a finished one scores NEG here)
        unfinished_scores = cand_scores + ends * NEG
        live = torch.topk(unfinished_scores, k=K, dim=-1).indices  # (P, K)
        beams, beam_scores = pick(cand_tokens, live), pick(unfinished_scores, live)

        # a prompt stops searching when its best beam, scored at its current length, cannot beat its pool's
        # worst (an empty pool slot counts as NEG, so it goes on until the pool is full); all stopped: done
        worst = torch.where(pool_finished, pool_scores.min(dim=1, keepdim=True).values, NEG)  # (P, K)
        searching &= (beam_scores[:, :1] / (n_new**length_penalty) > worst).any(dim=1)
        if not bool(searching.any()):
            break

        # the beams' caches follow their parents, then one forward for the P * K new tokens
        parents = pick(cand_beam, live) + first_row  # (P, K): cache rows of the parents
        cache.reorder_rows(parents.view(-1))
        out = model(beams.view(P * K, L)[:, cur : cur + 1], attention_mask=mask_upto(beam_mask, cur + 1),
                    past_key_values=cache, use_cache=True)
        logits = out.logits[:, -1].float()  # (P * K, V)

    R = num_return_sequences
    best = pool[:, :R].reshape(P * R, L)  # (P * R, L), each prompt's best first
    return best[:, : T + int(pool_lengths[:, :R].max())]
