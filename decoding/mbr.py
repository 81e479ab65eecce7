"""Minimum Bayes risk (MBR) selection with chrF as the utility.

Kumar & Byrne 2004, "Minimum Bayes-Risk Decoding for Statistical Machine Translation"; sampling-based MBR with
the candidates as their own pseudo-references: Eikema & Aziz 2020, "Is MAP Decoding All You Need?". Among
candidates y_1..y_N (N >= 2) pick the one that agrees most, on average, with all the others:

    score_i = 1 / (N - 1) * sum_{j != i} chrF(y_i, [y_j])        (hypothesis y_i, reference y_j)
    i*      = argmax_i score_i                                    (the lowest index on ties)

A brute-force loop makes N (N - 1) sentence_chrf calls, each extracting the n-grams of both texts again. Here
each candidate is counted once (`ngram_counts`), and because the clipped match count min(c_i(g), c_j(g)) is
symmetric, each unordered pair {i, j} is matched once and gives both chrF(y_i, [y_j]) and chrF(y_j, [y_i]).
The sums run over j in increasing order, as the brute-force loop does, so the scores agree to the last bit.

`mbr_decode` (`--decoder mbr`, "MBR over beam candidates") reranks the beam search n-best list this way, on the
continuations only (the shared prompt would only add agreement); decoding/ensemble.py pools more decoders.
"""
from __future__ import annotations

import torch

from metrics.chrf import check_options, f_score, matched_counts, ngram_counts, order_stats

from .beam import beam_search


def check_candidates(candidates) -> list[str]:
    """At least two strings: MBR scores each candidate against the others, so one alone has nothing to
    compare with (and its mean over no other candidate would be 0/0)."""
    if isinstance(candidates, str) or not isinstance(candidates, (list, tuple)):
        raise TypeError(f"MBR: candidates must be a list of strings, got {type(candidates).__name__}")
    for k, candidate in enumerate(candidates):
        if not isinstance(candidate, str):
            raise TypeError(f"MBR: candidates[{k}] must be a string, got {type(candidate).__name__}")
    if len(candidates) < 2:
        raise ValueError(f"MBR needs at least two candidates to compare, got {len(candidates)}; "
                         "with a single candidate there is nothing to choose, use it directly")
    return list(candidates)


def pairwise_chrf(candidates: list[str], char_order: int = 6, word_order: int = 0,
                  beta: float = 2.0) -> list[list[float]]:
    """scores[i][j] = sentence_chrf(candidates[i], [candidates[j]]) for i != j (the diagonal is unused, 0)."""
    counted = [ngram_counts(c, char_order, word_order) for c in candidates]
    n = len(candidates)
    scores = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            matched = matched_counts(counted[i], counted[j])   # the same in both directions
            i_vs_j = [order_stats(h, r, m) for h, r, m in zip(counted[i].totals, counted[j].totals, matched)]
            j_vs_i = [order_stats(h, r, m) for h, r, m in zip(counted[j].totals, counted[i].totals, matched)]
            scores[i][j] = f_score(i_vs_j, beta)
            scores[j][i] = f_score(j_vs_i, beta)
    return scores


def mbr_scores(candidates: list[str], char_order: int = 6, word_order: int = 0, beta: float = 2.0) -> list[float]:
    """score_i: the mean chrF of candidate i against every other candidate (for logging and for mbr_select)."""
    check_options(char_order, word_order, beta)
    candidates = check_candidates(candidates)
    scores = pairwise_chrf(candidates, char_order, word_order, beta)
    n = len(candidates)
    return [sum(scores[i][j] for j in range(n) if j != i) / (n - 1) for i in range(n)]


def mbr_select(candidates: list[str], char_order: int = 6, word_order: int = 0, beta: float = 2.0) -> int:
    """The index of the candidate with the highest mean chrF against the others; ties go to the lowest index.
    Fewer than two candidates: ValueError (see check_candidates)."""
    means = mbr_scores(candidates, char_order, word_order, beta)
    return max(range(len(means)), key=means.__getitem__)   # max returns the first of equal maxima


# ---- MBR over generated token ids ----------------------------------------------------------------------------

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
