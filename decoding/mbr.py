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
"""
from __future__ import annotations

from .chrf import check_options, f_score, matched_counts, ngram_counts, order_stats


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
