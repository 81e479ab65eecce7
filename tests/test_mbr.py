"""decoding/mbr.py against a brute-force loop over sacreBLEU 2.5.1's sentence_chrf: the same index (ties to
the lowest), the same mean scores, counting each candidate once, and fewer than two candidates refused."""
from __future__ import annotations

import random
import re

import pytest
import sacrebleu

import decoding.mbr as mbr
from decoding.mbr import mbr_scores, mbr_select
from tests.conftest import shared_path

LINES = ["Shall I compare thee to a summer's day?", "Thou art more lovely and more temperate:",
         "Rough winds do shake the darling buds of May,", "And summer's lease hath all too short a date;",
         "Sometime too hot the eye of heaven shines,", "And often is his gold complexion dimm'd;",
         "naïve 東京 — 😀 (hi) 'tis", ""]


def brute_force(candidates: list[str], word_order: int = 0) -> tuple[int, list[float]]:
    """argmax_i of mean_{j != i} sentence_chrf(c_i, [c_j]), first index on ties, straight from sacreBLEU."""
    n = len(candidates)
    means = [sum(sacrebleu.sentence_chrf(candidates[i], [candidates[j]], word_order=word_order).score
                 for j in range(n) if j != i) / (n - 1) for i in range(n)]
    best = max(means)
    return means.index(best), means


def random_candidates(rng: random.Random) -> list[str]:
    """2..9 candidates sharing lines (like samples of one prompt), with duplicates and empty strings."""
    candidates = []
    for _ in range(rng.randint(2, 9)):
        if candidates and rng.random() < 0.25:
            candidates.append(rng.choice(candidates))                     # an exact duplicate
        else:
            candidates.append("\n".join(rng.sample(LINES, rng.randint(1, 4))))
    return candidates


@pytest.mark.parametrize("word_order", [0, 2])
def test_mbr_picks_the_brute_force_index(word_order):
    rng = random.Random(word_order)
    picks = set()
    for _ in range(60):
        candidates = random_candidates(rng)
        index, means = brute_force(candidates, word_order)
        assert mbr_select(candidates, word_order=word_order) == index, candidates
        assert mbr_scores(candidates, word_order=word_order) == pytest.approx(means, abs=1e-9)
        picks.add(index)
    assert len(picks) > 3                                             # not always the same position


def test_ties_go_to_the_lowest_index():
    cases = [["a b c", "a b c"],                                      # two equal candidates
             ["x", "x", "x", "x"],
             ["zzz", "love me", "love me"],                           # the tie is at 1 and 2, not at 0
             ["", ""],                                                # all scores 0
             ["abc", "xyz", "", "qqq"]]                               # nothing shared: every mean is 0
    expected = [0, 0, 1, 0, 0]
    for candidates, index in zip(cases, expected):
        scores = mbr_scores(candidates)
        assert scores.count(max(scores)) >= 2, candidates             # it really is a tie
        assert mbr_select(candidates) == index == brute_force(candidates)[0]


def test_each_candidate_is_counted_once(monkeypatch):
    calls = []
    real = mbr.ngram_counts

    def counting(text, *args):
        calls.append(text)
        return real(text, *args)

    monkeypatch.setattr(mbr, "ngram_counts", counting)
    candidates = ["\n".join(random.Random(k).sample(LINES, 3)) for k in range(12)]
    mbr_select(candidates)
    assert sorted(calls) == sorted(candidates)                        # 12 extractions, not 12 * 11 * 2


def test_fewer_than_two_candidates_is_an_error():
    for candidates in ([], ["only one"]):
        with pytest.raises(ValueError, match="at least two candidates"):
            mbr_select(candidates)
        with pytest.raises(ValueError, match="at least two candidates"):
            mbr_scores(candidates)
    with pytest.raises(TypeError, match="list of strings"):
        mbr_select("a single string")
    with pytest.raises(TypeError, match=r"candidates\[1\]"):
        mbr_select(["a", None])


def split_sonnets(path) -> list[str]:
    pieces = re.split(r"\n\s*\d+\s*\n", path.read_text(encoding="utf-8"))
    return [piece.strip() for piece in pieces[1:]]


def test_real_sonnets_as_candidates():
    """The 12 true dev sonnets plus their prompts: sonnet-length candidates with shared opening lines."""
    truths = split_sonnets(shared_path("data", "TRUE_sonnets_held_out_dev.txt"))
    prompts = split_sonnets(shared_path("data", "sonnets_held_out_dev.txt"))
    candidates = truths + prompts[:4] + truths[:2]
    for word_order in (0, 2):
        index, means = brute_force(candidates, word_order)
        assert mbr_select(candidates, word_order=word_order) == index
        assert mbr_scores(candidates, word_order=word_order) == pytest.approx(means, abs=1e-9)
