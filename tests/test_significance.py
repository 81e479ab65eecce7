"""metrics/significance.py and chrF's interval and paired tests against sacreBLEU 2.5.1 (the reference): the same
bootstrap means and half-widths (float32, as sacreBLEU reports them) and the same p-values, on random strings and
on the real dev sonnets."""
from __future__ import annotations

import random

import numpy as np
import pytest
from sacrebleu.metrics import CHRF
from sacrebleu.significance import PairedTest

from metrics.chrf import corpus_chrf, segment_stats
from metrics.chrf_significance import corpus_chrf_interval, paired_chrf_test
from metrics.significance import (
    bootstrap_interval,
    middle_95,
    p_value,
    paired_bootstrap,
    paired_randomization,
    paired_test,
)
from tests._fixtures import ALPHABET, noisy
from tests.conftest import shared_path


def random_corpus(n: int, seed: int):
    """References and two systems of similar quality (about 30% and 32% of characters replaced)."""
    rng = random.Random(seed)
    refs = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(20, 60))) for _ in range(n)]
    return refs, [noisy(r, 0.30, rng) for r in refs], [noisy(r, 0.32, rng) for r in refs]


def sacrebleu_paired(base, system, refs, test: str, n: int):
    """sacreBLEU's result for `system` in `sacrebleu --paired-{test}` with `base` as the baseline."""
    _, scores = PairedTest([("base", base), ("system", system)], {"chrf": CHRF()}, [refs], test_type=test,
                           n_samples=n)()
    return scores["chrF2"][1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_equals_sacrebleu_on_random_strings(seed):
    refs, hyps, _ = random_corpus(15, seed)
    expected = CHRF().corpus_score(hyps, [refs], n_bootstrap=1000)
    ours = corpus_chrf_interval(hyps, refs)
    assert ours.score == pytest.approx(expected.score, abs=1e-9)
    assert ours.score == pytest.approx(corpus_chrf(hyps, refs), abs=1e-9)
    assert ours.mean == pytest.approx(float(expected._mean), abs=1e-9)
    assert ours.half_width == pytest.approx(float(expected._ci), abs=1e-9)
    assert ours.half_width > 0.5  # 15 short noisy strings: a wide interval, so the check is not vacuous


@pytest.mark.parametrize("test", ["bs", "ar"])
def test_paired_p_values_equal_sacrebleu_on_random_strings(test):
    n = 1000 if test == "bs" else 2000
    p_values = []
    for seed in range(4):
        refs, base, system = random_corpus(20, seed)
        expected = sacrebleu_paired(base, system, refs, test, n).p_value
        ours = paired_chrf_test(base, system, refs, test=test, n=n)
        assert ours == pytest.approx(expected, abs=1e-9), seed
        p_values.append(ours)
    # the systems are close: the p-values are spread out, not all at the floor 1/(n+1) or at 1
    assert max(p_values) > 0.05 and min(p_values) < 0.9, p_values


@pytest.mark.parametrize("test", ["bs", "ar"])
def test_identical_systems_as_sacrebleu(test):
    refs, base, _ = random_corpus(10, 4)
    expected = sacrebleu_paired(base, list(base), refs, test, 100).p_value
    assert paired_chrf_test(base, list(base), refs, test=test, n=100) == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(1 / 101)


def test_paired_bootstrap_mean_and_interval_match_sacrebleu():
    """--paired-bs also reports each system's bootstrap interval; sacreBLEU averages it in float32 there."""
    refs, base, system = random_corpus(20, 5)
    expected = sacrebleu_paired(base, system, refs, "bs", 1000)
    ours = corpus_chrf_interval(system, refs)
    assert ours.score == pytest.approx(expected.score, abs=1e-9)
    assert ours.half_width == pytest.approx(float(expected.ci), abs=1e-9)
    assert ours.mean == pytest.approx(float(expected.mean), abs=1e-4)


def real_sonnets():
    from tasks.data import read_sonnets
    data = shared_path("data")
    refs = read_sonnets(data / "TRUE_sonnets_held_out_dev.txt")
    prompts = read_sonnets(data / "sonnets_held_out_dev.txt")
    lines = [line.strip() for sonnet in read_sonnets(data / "sonnets.txt") for line in sonnet.split("\n")]
    return refs, prompts, lines


def test_real_sonnets_equal_sacrebleu():
    refs, prompts, lines = real_sonnets()
    rng = random.Random(0)
    system_a = [p + "\n" + "\n".join(rng.sample(lines, 11)) for p in prompts]
    system_b = [p + "\n" + "\n".join(rng.sample(lines, 11)) for p in prompts]
    expected = CHRF().corpus_score(system_a, [refs], n_bootstrap=1000)
    ours = corpus_chrf_interval(system_a, refs)
    assert (ours.score, ours.mean, ours.half_width) == pytest.approx(
        (expected.score, float(expected._mean), float(expected._ci)), abs=1e-9)
    for test, n in (("bs", 1000), ("ar", 2000)):
        expected_p = sacrebleu_paired(system_a, system_b, refs, test, n).p_value
        assert paired_chrf_test(system_a, system_b, refs, test=test, n=n) == pytest.approx(expected_p, abs=1e-9)


# ---- the generic procedures, on statistics other than chrF's ------------------------------------------------

def accuracy_of(sums) -> float:
    return float(sums[0] / sums[1])


def test_bootstrap_interval_of_accuracy_by_hand():
    """Accuracy of 0/1 outcomes: the interval is the middle 95% of resampled means, recomputed here directly."""
    rng = np.random.default_rng(3)
    correct = rng.integers(2, size=200)
    stats = np.stack([correct, np.ones_like(correct)], axis=1)  # (items, 2): correct, count
    ours = bootstrap_interval(stats, accuracy_of, n_samples=400, seed=7, dtype=np.float64)
    draws = np.random.default_rng(7).choice(200, size=(400, 200), replace=True)
    means = np.sort(correct[draws].mean(axis=1))
    assert ours.score == pytest.approx(correct.mean())
    assert ours.mean == pytest.approx(means.mean(), abs=1e-12)
    assert ours.half_width == pytest.approx(0.5 * (means[389] - means[10]), abs=1e-12)  # 400 // 40 = 10
    assert 0.05 < ours.half_width < 0.1  # about 1.96 * sqrt(0.25 / 200) = 0.069


def test_clear_gaps_get_the_floor_and_so_do_identical_systems():
    """A clear gap: no trial is as extreme, p = 1 / (n + 1). sacreBLEU's strict comparison gives the same p to a
    gap of exactly 0 (checked against sacreBLEU itself in test_identical_systems_as_sacrebleu)."""
    rng = np.random.default_rng(0)
    weak = np.stack([rng.random(300) < 0.5, np.ones(300)], axis=1).astype(np.int64)
    strong = np.stack([rng.random(300) < 0.9, np.ones(300)], axis=1).astype(np.int64)
    for test, n in (("bs", 200), ("ar", 300)):
        assert paired_test(weak, weak, accuracy_of, test, n) == pytest.approx(1 / (n + 1))
        assert paired_test(weak, strong, accuracy_of, test, n) == pytest.approx(1 / (n + 1))


def test_p_value_and_middle_95():
    assert p_value(np.array([0.1, 0.5, 0.9, 0.3]), 0.4) == pytest.approx(3 / 5)
    scores = np.arange(80.0)[::-1]  # 80 // 40 = 2: the middle runs from the 3rd smallest to the 3rd largest
    assert middle_95(scores) == pytest.approx(0.5 * (77 - 2))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap(np.ones((3, 2)), np.ones((4, 2)), accuracy_of)
    with pytest.raises(ValueError, match="positive integer"):
        paired_randomization(np.ones((3, 2)), np.ones((3, 2)), accuracy_of, n_trials=0)
    with pytest.raises(ValueError, match="unknown test"):
        paired_test(np.ones((3, 2)), np.ones((3, 2)), accuracy_of, "t-test")
    with pytest.raises(ValueError, match="same length"):
        segment_stats(["a", "b"], ["a"])
