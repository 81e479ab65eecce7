"""How sure a chrF score is: per-segment statistics, a bootstrap interval and paired tests, as sacreBLEU 2.5.1.

corpus chrF (chrf.py) sums each segment's per-order (hyp_n, ref_n, match_n) and takes one F-score of the sums.
`segment_stats` keeps each segment's statistics apart, one row per segment, so that decoding/significance.py can
resample the segments:

    corpus_chrf_interval   a 95% bootstrap interval   (sacrebleu --confidence)
    paired_chrf_test       the p-value of the gap between two systems   (sacrebleu --paired-bs / --paired-ar)
"""
from __future__ import annotations

from .chrf import best_reference_stats, check_options, check_references, f_score
from .significance import bootstrap_interval, paired_test


def segment_stats(hypotheses: list[str], references: list[str] | list[list[str]], char_order: int = 6,
                  word_order: int = 0, beta: float = 2.0) -> list[list[int]]:
    """Row i: hypotheses[i]'s (hyp_n, ref_n, match_n) of every order, flattened (sacreBLEU's segment
    statistics). corpus_chrf is chrf_from_sums of their column sums; resampling the rows resamples the corpus."""
    check_options(char_order, word_order, beta)
    if isinstance(hypotheses, str) or not isinstance(references, (list, tuple)) or \
            len(hypotheses) != len(references) or len(hypotheses) == 0:
        raise ValueError("chrF: hypotheses and references must be non-empty lists of the same length "
                         "(references[i] is the reference, or list of references, of hypotheses[i])")
    rows = []
    for i, (hypothesis, refs) in enumerate(zip(hypotheses, references)):
        if not isinstance(hypothesis, str):
            raise TypeError(f"chrF: hypotheses[{i}] must be a string, got {type(hypothesis).__name__}")
        refs = [refs] if isinstance(refs, str) else check_references(refs, f"chrF references[{i}]")
        stats = best_reference_stats(hypothesis, refs, char_order, word_order, beta)
        rows.append([count for order in stats for count in order])
    return rows


def chrf_from_sums(sums, beta: float = 2.0) -> float:
    """chrF of summed segment statistics (a flat vector of per-order hyp_n, ref_n, match_n)."""
    return f_score([tuple(sums[k:k + 3]) for k in range(0, len(sums), 3)], beta)


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
