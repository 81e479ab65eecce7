"""chrF and chrF++: the character (and word) n-gram F-score, computed exactly as sacreBLEU 2.5.1 does.

Popović 2015, "chrF: character n-gram F-score for automatic MT evaluation"; chrF++ (word n-grams added):
Popović 2017, "chrF++: words helping character n-grams". With sacreBLEU's defaults (`CHRF()`: char order 6,
word order 0, beta 2, whitespace removed, no lowercasing, effective-order averaging, no eps smoothing):

    chars(s)     = s with every whitespace character removed            (the whitespace of str.split())
    words(s)     = s split on whitespace, then one leading or trailing punctuation mark split off each word
    c_s(g)       = how often the n-gram g occurs in s                   (character n-grams: orders 1..char_order,
                                                                         word n-grams: orders 1..word_order)
    hyp_n, ref_n = number of order-n n-grams of the hypothesis / the reference
    match_n      = sum_g min(c_hyp(g), c_ref(g))                        (clipped matches of order n)
    P_n = match_n / hyp_n,  R_n = match_n / ref_n
    E            = the orders with hyp_n > 0 and ref_n > 0              ("effective order")
    P = mean_{n in E} P_n,  R = mean_{n in E} R_n
    chrF_beta    = 100 * (1 + beta^2) P R / (beta^2 P + R)              (0 when E is empty or P + R = 0)

beta = 2 weighs recall more than precision. Character and word n-grams of every order count as separate
orders with equal weight in the means. sacreBLEU's per-order eps smoothing (1e-16 for an empty side) only enters
its `eps_smoothing=True` variant, which this module does not implement: with effective-order averaging an order
with hyp_n = 0 or ref_n = 0 is left out. sacreBLEU also reports hyp_n as 0 when the reference has no n-grams of
that order (`order_stats` keeps that convention, so corpus sums agree). So an empty hypothesis or reference
(or one of whitespace only) scores 0.

Several references: each is scored on its own and the statistics of the best one (highest F-score, the first on
ties) are kept. Corpus level: the per-order (hyp_n, ref_n, match_n) of all segments are summed first, then one
F-score is taken of the sums (not a mean of sentence scores).

The statistics of a pair come from counting: `ngram_counts` counts each text's n-grams once, and `match_stats`
matches two counted texts (`pair_stats` does both for one pair). MBR reuses the counts of each candidate for all
its pairs (decoding/mbr.py). tests/test_chrf.py checks the statistics against sacreBLEU's own.

How sure a score is (intervals, paired tests): metrics/chrf_significance.py.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import NamedTuple

# ASCII punctuation (Python's string.punctuation), split off word edges for chrF++.
PUNCTUATION = frozenset('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~')

# Per order: (hyp_n, ref_n, match_n). A list of them, char orders first, then word orders, is "stats".
OrderStats = tuple[int, int, int]


def remove_whitespace(text: str) -> str:
    """The text with all whitespace removed (what chrF's character n-grams are taken from)."""
    return "".join(text.split())


def split_words(text: str) -> tuple[str, ...]:
    """chrF++ tokenisation: split on whitespace; a word longer than one character loses one punctuation mark
    at its end ("me," -> "me", ","), or else at its start ("'tis" -> "'", "tis"), never both.

    A tuple, so that its slices (word n-grams) are hashable; sacreBLEU joins them with spaces instead, which
    names the same n-grams (words hold no whitespace)."""
    words = []
    for word in text.split():
        if len(word) > 1 and word[-1] in PUNCTUATION:
            words += [word[:-1], word[-1]]
        elif len(word) > 1 and word[0] in PUNCTUATION:
            words += [word[0], word[1:]]
        else:
            words.append(word)
    return tuple(words)


def sequences(text: str, char_order: int, word_order: int) -> list[tuple[str | tuple[str, ...], int]]:
    """(sequence, its highest order) pairs: the characters without whitespace, then the words for chrF++."""
    pairs = [(remove_whitespace(text), char_order)]
    if word_order > 0:
        pairs.append((split_words(text), word_order))
    return pairs


def ngrams(seq: str | tuple[str, ...], n: int) -> list:
    """The n-grams of a string (character n-grams) or a tuple of words (word n-grams), in order."""
    if n == 1:
        return list(seq)
    return [seq[i:i + n] for i in range(len(seq) - n + 1)]


def order_stats(hyp_total: int, ref_total: int, matched: int) -> OrderStats:
    """(hyp_n, ref_n, match_n), with sacreBLEU's convention hyp_n = 0 when the reference has no n-grams."""
    return (hyp_total if ref_total > 0 else 0, ref_total, matched)


# ---- Count each text once, then match pairs of counted texts ---------------------------------------------

class NgramCounts(NamedTuple):
    """The n-grams of one text, one list entry per order: chars 1..char_order, then words 1..word_order."""

    counts: list[Counter]   # n-gram -> how often it occurs
    totals: list[int]       # number of n-grams of the order (the sum of its counts)
    repeated: list[dict]    # the n-grams that occur more than once -> count


def repeated(counts: Counter) -> dict:
    """The n-grams that occur more than once -> their count (usually few)."""
    return {g: c for g, c in counts.items() if c > 1}


def repeated_extra(a_repeated: dict, b_repeated: dict) -> int:
    """sum over the n-grams repeated on both sides of (min(count_a, count_b) - 1).

    Split each min(c_a(g), c_b(g)) of match_n into 1 + (min - 1): the 1s add up to the number of shared
    n-grams (a set intersection), and min - 1 is non-zero only for n-grams that both sides repeat. So a
    counted text keeps its few repeated n-grams apart, and a pair compares only those."""
    return sum([min(a_repeated[g], b_repeated[g]) - 1 for g in a_repeated.keys() & b_repeated.keys()])


def ngram_counts(text: str, char_order: int = 6, word_order: int = 0) -> NgramCounts:
    """Count all n-grams of `text` once, to match it against many other texts with `match_stats`."""
    grams = [ngrams(seq, n) for seq, order in sequences(text, char_order, word_order) for n in range(1, order + 1)]
    counts = [Counter(g) for g in grams]
    return NgramCounts(counts, [len(g) for g in grams], [repeated(c) for c in counts])


def matched_counts(a: NgramCounts, b: NgramCounts) -> list[int]:
    """match_n of every order for two counted texts (symmetric in a and b); see repeated_extra."""
    if len(a.counts) != len(b.counts):
        raise ValueError(f"chrF: texts counted with {len(a.counts)} and {len(b.counts)} orders; "
                         "count both with the same char_order and word_order")
    return [len(a_count.keys() & b_count.keys()) + repeated_extra(a_rep, b_rep)
            for a_count, b_count, a_rep, b_rep in zip(a.counts, b.counts, a.repeated, b.repeated)]


def match_stats(hyp: NgramCounts, ref: NgramCounts) -> list[OrderStats]:
    """Per-order (hyp_n, ref_n, match_n) of two counted texts."""
    return [order_stats(h, r, m) for h, r, m in zip(hyp.totals, ref.totals, matched_counts(hyp, ref))]


def pair_stats(hypothesis: str, reference: str, char_order: int = 6, word_order: int = 0) -> list[OrderStats]:
    """Per-order stats of one hypothesis against one reference: char orders, then word orders."""
    hyp, ref = ngram_counts(hypothesis, char_order, word_order), ngram_counts(reference, char_order, word_order)
    return match_stats(hyp, ref)


# ---- The F-score and the public scores -------------------------------------------------------------------

def f_score(stats: list[OrderStats], beta: float = 2.0) -> float:
    """chrF_beta (0..100) of per-order stats, averaging P_n and R_n over the effective orders (module doc).

    The operations run in sacreBLEU's order, so the floats agree to the last bit."""
    factor = beta ** 2
    precision_sum, recall_sum, effective_order = 0.0, 0.0, 0
    for hyp_total, ref_total, matched in stats:
        if hyp_total > 0 and ref_total > 0:
            precision_sum += matched / hyp_total
            recall_sum += matched / ref_total
            effective_order += 1
    if effective_order == 0:
        return 0.0
    precision, recall = precision_sum / effective_order, recall_sum / effective_order
    if precision + recall == 0:
        return 0.0
    return 100 * ((1 + factor) * precision * recall / (factor * precision + recall))


def best_reference_stats(hypothesis: str, references: list[str], char_order: int, word_order: int,
                         beta: float) -> list[OrderStats]:
    """The stats against the reference with the highest F-score (the first one on ties)."""
    if len(references) == 1:
        return pair_stats(hypothesis, references[0], char_order, word_order)
    best_stats, best_score = None, -1.0
    for reference in references:
        stats = pair_stats(hypothesis, reference, char_order, word_order)
        score = f_score(stats, beta)
        if score > best_score:
            best_stats, best_score = stats, score
    return best_stats


def check_options(char_order, word_order, beta) -> None:
    """Clear errors for orders that are not counts and for a beta that is not a finite number >= 0."""
    for name, value in (("char_order", char_order), ("word_order", word_order)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"chrF: {name} must be an integer >= 0, got {value!r}")
    if char_order + word_order == 0:
        raise ValueError("chrF: char_order and word_order are both 0: there are no n-grams to compare")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < math.inf:
        raise ValueError(f"chrF: beta must be a finite number >= 0, got {beta!r}")


def check_references(references, where: str) -> list[str]:
    """A non-empty list of strings; a bare string is refused (it would be read as a list of characters)."""
    if isinstance(references, str):
        raise TypeError(f"chrF: {where} is a single string {references[:40]!r}; pass a list: [reference]")
    if not isinstance(references, (list, tuple)) or len(references) == 0:
        raise ValueError(f"chrF: {where} must be a non-empty list of reference strings, got {references!r:.80}")
    for k, reference in enumerate(references):
        if not isinstance(reference, str):
            raise TypeError(f"chrF: {where}[{k}] must be a string, got {type(reference).__name__}")
    return list(references)


def sentence_chrf(hypothesis: str, references: list[str], char_order: int = 6, word_order: int = 0,
                  beta: float = 2.0) -> float:
    """chrF (chrF++ with word_order=2) of one hypothesis against one or more references, 0..100."""
    check_options(char_order, word_order, beta)
    if not isinstance(hypothesis, str):
        raise TypeError(f"sentence_chrf: hypothesis must be a string, got {type(hypothesis).__name__}")
    references = check_references(references, "sentence_chrf references")
    return f_score(best_reference_stats(hypothesis, references, char_order, word_order, beta), beta)


def segment_stats(hypotheses: list[str], references: list[str] | list[list[str]], char_order: int = 6,
                  word_order: int = 0, beta: float = 2.0, who: str = "chrF") -> list[list[int]]:
    """Row i: hypotheses[i]'s (hyp_n, ref_n, match_n) of every order, flattened (sacreBLEU's segment statistics),
    against its best reference. corpus_chrf is chrf_from_sums of their column sums; resampling the rows resamples
    the corpus (chrf_significance.py)."""
    check_options(char_order, word_order, beta)
    if isinstance(hypotheses, str) or not isinstance(hypotheses, (list, tuple)) or len(hypotheses) == 0:
        raise ValueError(f"{who}: hypotheses must be a non-empty list of strings, got {hypotheses!r:.80}")
    if isinstance(references, str) or not isinstance(references, (list, tuple)):
        raise ValueError(f"{who}: references must be a list, got {type(references).__name__}")
    if len(hypotheses) != len(references):
        raise ValueError(f"{who}: {len(hypotheses)} hypotheses but {len(references)} references; they must be "
                         "lists of the same length: references[i] is the reference (or list of references) of "
                         "hypotheses[i]")
    rows = []
    for i, (hypothesis, refs) in enumerate(zip(hypotheses, references)):
        if not isinstance(hypothesis, str):
            raise TypeError(f"{who}: hypotheses[{i}] must be a string, got {type(hypothesis).__name__}")
        refs = [refs] if isinstance(refs, str) else check_references(refs, f"{who} references[{i}]")
        stats = best_reference_stats(hypothesis, refs, char_order, word_order, beta)
        rows.append([count for order in stats for count in order])
    return rows


def chrf_from_sums(sums, beta: float = 2.0) -> float:
    """chrF of summed segment statistics (a flat vector of per-order hyp_n, ref_n, match_n)."""
    return f_score([tuple(sums[k:k + 3]) for k in range(0, len(sums), 3)], beta)


def corpus_chrf(hypotheses: list[str], references: list[str] | list[list[str]], char_order: int = 6,
                word_order: int = 0, beta: float = 2.0) -> float:
    """Corpus chrF, 0..100: references[i] is the reference of hypotheses[i] (a string) or its references (a
    list of strings; the best one counts). Per-order stats are summed over all segments before the F-score.

    Not sacreBLEU's argument shape: its `corpus_chrf(hyps, [refs])` takes a list of reference streams."""
    rows = segment_stats(hypotheses, references, char_order, word_order, beta, who="corpus_chrf")
    return chrf_from_sums([sum(column) for column in zip(*rows)], beta)
