"""How sure a chrF score is: per-segment statistics, a bootstrap interval and paired tests, as sacreBLEU 2.5.1.

corpus chrF (chrf.py) sums each segment's per-order (hyp_n, ref_n, match_n) and takes one F-score of the sums.
Its `segment_stats` keeps each segment's statistics apart, one row per segment, so that metrics/significance.py
can resample the segments:

    corpus_chrf_interval   a 95% bootstrap interval   (sacrebleu --confidence)
    paired_chrf_test       the p-value of the gap between two systems   (sacrebleu --paired-bs / --paired-ar)
"""
from __future__ import annotations

from .chrf import chrf_from_sums, segment_stats
from .significance import bootstrap_interval, paired_test


def corpus_chrf_interval(hypotheses: list[str], references: list[str] | list[list[str]], n_bootstrap: int = 1000,
                         char_order: int = 6, word_order: int = 0, beta: float = 2.0):
    """Corpus chrF with its 95% bootstrap interval: an Interval(score, mean, half_width), the numbers of
    sacreBLEU's `CHRF().corpus_score(hyps, [refs], n_bootstrap=1000)` ("chrF2 = score (μ = mean ± half_width)")."""
    stats = segment_stats(hypotheses, references, char_order, word_order, beta)
    return bootstrap_interval(stats, lambda sums: chrf_from_sums(sums, beta), n_bootstrap)


def paired_chrf_test(baseline: list[str], system: list[str], references: list[str] | list[list[str]],
                     test: str = "bs", n: int | None = None, char_order: int = 6, word_order: int = 0,
                     beta: float = 2.0) -> float:
    """p-value of the chrF gap between two systems' outputs for the same references: `sacrebleu --paired-bs`
    (test="bs", n resamples, default 1000) or `--paired-ar` (test="ar", n trials, default 10000)."""
    base_stats = segment_stats(baseline, references, char_order, word_order, beta)
    sys_stats = segment_stats(system, references, char_order, word_order, beta)
    return paired_test(base_stats, sys_stats, lambda sums: chrf_from_sums(sums, beta), test, n)
