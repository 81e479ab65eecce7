"""How sure is a score? Bootstrap intervals and paired significance tests, computed as sacreBLEU 2.5.1 does.

Every metric here is a *corpus* score computed from *sufficient statistics* that add up over items (sentences,
sonnets, examples): chrF sums per-order n-gram counts (metrics/chrf.py), accuracy sums "is it correct", macro-F1
sums per-class TP/FP/FN. So a test needs only

    stats     an (items, K) table: row i holds item i's statistics
    score_fn  sums of the K columns (a length-K vector) -> the corpus score

and one resample of the test set is a choice of rows, summed. The three procedures (Koehn 2004, "Statistical
significance tests for machine translation evaluation"; Riezler & Maxwell 2005, "On some pitfalls in automatic
evaluation and significance testing for MT"), with sacreBLEU's choices:

- Bootstrap interval (`bootstrap_interval`): draw B = 1000 test sets of n items from the n items, with
  replacement, score each; report the mean of the B scores and half the width of the range that holds their
  middle 95% (the (B//40)-th smallest to the (B//40)-th largest). `sacrebleu --confidence`.
- Paired bootstrap (`paired_bootstrap`): the same B resamples, scored for the baseline and the system; the
  observed gap d = |score_sys - score_base|; the resampled gaps d_b = |sys_b - base_b|, centred on their mean
  (that makes them a sample of "no real difference"); p = (#{d_b - mean(d) > d} + 1) / (B + 1).
  `sacrebleu --paired-bs`.
- Approximate randomization (`paired_randomization`): R = 10000 trials; in each, every item's outputs are
  swapped between the two systems with probability 1/2 (under "no difference" the labels are exchangeable);
  p = (#{|score_A - score_B| of the shuffled systems > d} + 1) / (R + 1). `sacrebleu --paired-ar`.

p is the chance of a gap at least this large if the two systems were equally good; p < 0.05 is the usual bar.

To give sacreBLEU's numbers to the last digit, its arithmetic is kept: random numbers from numpy's
`default_rng(12345)` (the same draws, in the same order), bootstrap statistics summed as float32 (so the resampled
chrF scores are float32 numbers; counts below 2^24 stay exact), the randomization test in integers, and the
interval's mean taken exactly, then rounded to float32 as sacreBLEU's `corpus_score` reports it.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, NamedTuple, Sequence

import numpy as np

SEED = 12345  # sacreBLEU's default (its $SACREBLEU_SEED)
BOOTSTRAP_SAMPLES = 1000  # sacreBLEU's default resamples (--confidence-n, --paired-bs-n)
RANDOMIZATION_TRIALS = 10000  # sacreBLEU's default trials (--paired-ar-n)

ScoreFn = Callable[[np.ndarray], float]  # (K,) summed statistics -> corpus score


class Interval(NamedTuple):
    """A corpus score with its bootstrap estimate: the true score lies in mean ± half_width with 95% confidence."""

    score: float       # the score of the test set as it is
    mean: float        # the mean score of the resampled test sets
    half_width: float  # half the width of the middle 95% of the resampled scores

    def __str__(self) -> str:
        return f"{self.score:.2f} (mean {self.mean:.2f} ± {self.half_width:.2f})"


def as_table(stats: Sequence[Sequence[float]], dtype=np.float32) -> np.ndarray:
    """Per-item statistics as an (items, K) array; sacreBLEU's bootstrap works in float32."""
    table = np.asarray(stats, dtype=dtype)
    if table.ndim != 2 or len(table) == 0:
        raise ValueError(f"significance: statistics must be a non-empty (items, K) table, got shape {table.shape}")
    return table


def resample_indices(n_items: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_samples, n_items) item indices drawn with replacement: row b is the b-th resampled test set."""
    return rng.choice(n_items, size=(n_samples, n_items), replace=True)


def resampled_scores(table: np.ndarray, score_fn: ScoreFn, indices: np.ndarray) -> np.ndarray:
    """(n_samples,) the score of each resampled test set: its rows of `table`, summed, then scored."""
    return np.array([score_fn(table[rows].sum(axis=0)) for rows in indices])


def middle_95(scores: np.ndarray) -> float:
    """Half the width of the range between the (B//40)-th smallest and the (B//40)-th largest of B scores."""
    ordered = np.sort(scores)
    cut = len(ordered) // 40  # 2.5% on each side
    return 0.5 * (ordered[len(ordered) - cut - 1] - ordered[cut])


def exact_mean(scores: np.ndarray):
    """The mean of the scores computed exactly (no rounding while summing), rounded once to their type."""
    total = sum(Fraction(float(s)) for s in scores)
    return scores.dtype.type(float(total / len(scores)))


def bootstrap_interval(stats, score_fn: ScoreFn, n_samples: int = BOOTSTRAP_SAMPLES, seed: int = SEED,
                       dtype=np.float32) -> Interval:
    """The corpus score and its 95% bootstrap interval (sacreBLEU's `corpus_score(..., n_bootstrap=B)`)."""
    check_samples(n_samples)
    exact = np.asarray(stats)  # the score of the data as it is: the statistics' own (integer) arithmetic
    table = as_table(stats, dtype)
    indices = resample_indices(len(table), n_samples, np.random.default_rng(seed))
    scores = resampled_scores(table, score_fn, indices)
    return Interval(float(score_fn(exact.sum(axis=0))), float(exact_mean(scores)), float(middle_95(scores)))


def p_value(null_gaps: np.ndarray, observed_gap: float) -> float:
    """(#{null gaps > observed} + 1) / (trials + 1): the +1s count the observed data as one of the trials, so
    p is never 0. The comparison is strict, as sacreBLEU's: two systems with the same score on every item (gap
    0, null gaps all 0) get the smallest p, 1 / (trials + 1); a p-value only means something for a real gap."""
    return (int(np.sum(null_gaps > observed_gap)) + 1) / (len(null_gaps) + 1)


def check_pair(base_stats, sys_stats) -> tuple[np.ndarray, np.ndarray]:
    base, system = np.asarray(base_stats), np.asarray(sys_stats)
    if base.ndim != 2 or base.shape != system.shape or len(base) == 0:
        raise ValueError(f"paired test: the two systems need statistics of the same items, got tables of shape "
                         f"{base.shape} and {system.shape}")
    return base, system


def check_samples(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"significance: the number of resamples or trials must be a positive integer, got {n!r}")


def paired_bootstrap(base_stats, sys_stats, score_fn: ScoreFn, n_samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = SEED, dtype=np.float32) -> float:
    """p-value of the gap between two systems on the same items, by paired bootstrap (`sacrebleu --paired-bs`).

    Both systems are scored on the same resampled test sets, so the item-to-item variation they share cancels."""
    check_samples(n_samples)
    base, system = check_pair(base_stats, sys_stats)
    observed_gap = abs(score_fn(base.sum(axis=0)) - score_fn(system.sum(axis=0)))
    indices = resample_indices(len(base), n_samples, np.random.default_rng(seed))
    gaps = np.abs(resampled_scores(as_table(system, dtype), score_fn, indices)
                  - resampled_scores(as_table(base, dtype), score_fn, indices))  # (B,)
    return p_value(gaps - gaps.mean(), observed_gap)


def paired_randomization(base_stats, sys_stats, score_fn: ScoreFn, n_trials: int = RANDOMIZATION_TRIALS,
                         seed: int = SEED) -> float:
    """p-value of the gap between two systems on the same items, by approximate randomization (`--paired-ar`)."""
    check_samples(n_trials)
    base, system = check_pair(base_stats, sys_stats)
    observed_gap = abs(score_fn(base.sum(axis=0)) - score_fn(system.sum(axis=0)))
    keep = np.random.default_rng(seed).integers(2, size=(n_trials, len(base)), dtype=bool)  # (R, n)
    swap = ~keep
    # trial t's system A: item i from the baseline where keep[t, i], else from the system; B the other way round
    sums_a = keep.astype(np.int64) @ base + swap.astype(np.int64) @ system  # (R, K)
    sums_b = swap.astype(np.int64) @ base + keep.astype(np.int64) @ system
    gaps = np.abs(np.array([score_fn(a) for a in sums_a]) - np.array([score_fn(b) for b in sums_b]))
    return p_value(gaps, observed_gap)


def paired_test(base_stats, sys_stats, score_fn: ScoreFn, test: str = "bs", n: int | None = None,
                seed: int = SEED, dtype=np.float32) -> float:
    """p-value by `test`: "bs" (paired bootstrap, n resamples, default 1000) or "ar" (approximate randomization,
    n trials, default 10000)."""
    if test == "bs":
        return paired_bootstrap(base_stats, sys_stats, score_fn, n or BOOTSTRAP_SAMPLES, seed, dtype)
    if test == "ar":
        return paired_randomization(base_stats, sys_stats, score_fn, n or RANDOMIZATION_TRIALS, seed)
    raise ValueError(f"paired test: unknown test {test!r}; choose 'bs' (paired bootstrap) or 'ar' "
                     "(approximate randomization)")
