"""metrics/chrf.py against sacreBLEU 2.5.1: sentence, corpus, chrF++, several references, empty strings,
the statistics layer, bad input, and the real held-out dev sonnets."""
from __future__ import annotations

import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sacrebleu
from sacrebleu.metrics.chrf import CHRF

from metrics.chrf import (
    corpus_chrf,
    matched_counts,
    ngram_counts,
    pair_stats,
    sentence_chrf,
    split_words,
)
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]

# Words with punctuation at either end (chrF++ splits one mark off), unicode, and repeats for matches.
VOCAB = ["thee", "thy", "love", "Shall", "I", "compare", "summer's", "day", "(hi)", "'tis", "--", "…", "naïve",
         "Straße", "東京", "😀", "e\u0301", "a", ".", ",", "!?", "don't", "x", "is", "the", "and", "O,", "\"Nay\""]
PUNCT = list(",.;:!?'\"()-…")
SPACES = [" ", " ", " ", "  ", "\t", "\n", " \n  ", "\u3000", "\xa0"]   # \u3000, \xa0: str.split() whitespace
ALPHABET = "abcdeé ,.;'!?-()\t\n東京😀ßxyz" + "\u3000"
EDGE_CASES = ["", " ", "\n\t ", "a", ".", "😀", "  x  ", "ab", "a a a a a a a", "aaaaaaaaaa", "(", "((", "a."]


def random_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.1:
        return rng.choice(EDGE_CASES)
    if kind < 0.3:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
    words = []
    for _ in range(rng.randint(1, 14)):
        word = rng.choice(VOCAB)
        if rng.random() < 0.2:
            word += rng.choice(PUNCT)
        if rng.random() < 0.1:
            word = rng.choice(PUNCT) + word
        words.append(word)
    text = words[0]
    for word in words[1:]:
        text += rng.choice(SPACES) + word
    return rng.choice(["", " ", "\n"]) + text + rng.choice(["", " ", "  \n"])


def mutate(rng: random.Random, text: str) -> str:
    """A near copy: some words dropped, swapped or added, so that high orders match too."""
    words = text.split()
    out = [w for w in words if rng.random() > 0.2]
    if out and rng.random() < 0.5:
        k = rng.randrange(len(out))
        out[k] = rng.choice(VOCAB)
    if rng.random() < 0.5:
        out.insert(rng.randint(0, len(out)), rng.choice(VOCAB))
    return " ".join(out)


def random_pairs(seed: int, n: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        hyp = random_text(rng)
        ref = mutate(rng, hyp) if rng.random() < 0.5 else random_text(rng)
        pairs.append((hyp, ref) if rng.random() < 0.5 else (ref, hyp))
    return pairs


def sacre_sentence(hyp, refs, char_order=6, word_order=0, beta=2):
    return sacrebleu.sentence_chrf(hyp, refs, char_order=char_order, word_order=word_order, beta=beta).score


def split_sonnets(path: Path) -> list[str]:
    pieces = re.split(r"\n\s*\d+\s*\n", path.read_text(encoding="utf-8"))
    return [piece.strip() for piece in pieces[1:]]


@pytest.mark.parametrize("word_order", [0, 2])
def test_sentence_chrf_equals_sacrebleu(word_order):
    pairs = random_pairs(seed=word_order, n=400) + [(a, b) for a in EDGE_CASES for b in EDGE_CASES]
    for hyp, ref in pairs:
        ours = sentence_chrf(hyp, [ref], word_order=word_order)
        assert ours == pytest.approx(sacre_sentence(hyp, [ref], word_order=word_order), abs=1e-9), (hyp, ref)
    scores = [sentence_chrf(h, [r], word_order=word_order) for h, r in pairs]
    assert min(scores) == 0.0 and max(scores) == 100.0 and len(set(scores)) > 100   # the cases are varied


@pytest.mark.parametrize("char_order, word_order, beta", [(6, 0, 1), (6, 2, 3), (3, 1, 2), (1, 0, 2), (0, 2, 2),
                                                          (8, 3, 2)])
def test_other_orders_and_beta(char_order, word_order, beta):
    for hyp, ref in random_pairs(seed=10 + char_order + word_order + beta, n=120):
        ours = sentence_chrf(hyp, [ref], char_order=char_order, word_order=word_order, beta=float(beta))
        theirs = sacre_sentence(hyp, [ref], char_order=char_order, word_order=word_order, beta=beta)
        assert ours == pytest.approx(theirs, abs=1e-9), (hyp, ref)


@pytest.mark.parametrize("word_order", [0, 2])
def test_several_references_take_the_best(word_order):
    rng = random.Random(5 + word_order)
    for _ in range(200):
        hyp = random_text(rng)
        refs = [mutate(rng, hyp) if rng.random() < 0.5 else random_text(rng) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.2:
            refs.append(refs[0])                     # an exact tie between references
        ours = sentence_chrf(hyp, refs, word_order=word_order)
        assert ours == pytest.approx(sacre_sentence(hyp, refs, word_order=word_order), abs=1e-9), (hyp, refs)
        assert ours == max(sentence_chrf(hyp, [r], word_order=word_order) for r in refs)


@pytest.mark.parametrize("word_order", [0, 2])
def test_corpus_chrf_equals_sacrebleu(word_order):
    pairs = random_pairs(seed=20 + word_order, n=300)
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    ours = corpus_chrf(hyps, refs, word_order=word_order)
    assert ours == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=word_order).score, abs=1e-9)
    # Statistics are summed before the F-score: not the mean of the sentence scores.
    mean = sum(sentence_chrf(h, [r], word_order=word_order) for h, r in pairs) / len(pairs)
    assert abs(ours - mean) > 1e-6
    for size in (1, 2, 7):                            # small corpora too
        assert corpus_chrf(hyps[:size], refs[:size], word_order=word_order) == pytest.approx(
            sacrebleu.corpus_chrf(hyps[:size], [refs[:size]], word_order=word_order).score, abs=1e-9)


def test_corpus_chrf_with_several_references_per_hypothesis():
    rng = random.Random(30)
    hyps, refs = [], []
    for _ in range(150):
        hyp = random_text(rng)
        hyps.append(hyp)
        refs.append([mutate(rng, hyp) if rng.random() < 0.5 else random_text(rng) for _ in range(rng.randint(1, 3))])
    # sacreBLEU takes reference streams; None pads the segments with fewer references.
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(3)]
    for word_order in (0, 2):
        ours = corpus_chrf(hyps, refs, word_order=word_order)
        assert ours == pytest.approx(sacrebleu.corpus_chrf(hyps, streams, word_order=word_order).score, abs=1e-9)
    # A list with one reference is the same as the bare string.
    single = [r[0] for r in refs]
    assert corpus_chrf(hyps, [[r] for r in single]) == corpus_chrf(hyps, single)


def test_tied_references_keep_the_first_ones_statistics():
    """Both references score 0 but have different n-gram totals; the first one's enter the corpus sums."""
    hyps, refs = ["ab", "ab"], [["x", "yyyy"], ["ab"]]
    streams = [["x", "ab"], ["yyyy", None]]
    assert corpus_chrf(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, streams).score, abs=1e-9)
    assert corpus_chrf(hyps, refs) != corpus_chrf(hyps, [["yyyy", "x"], ["ab"]])


def test_statistics_layer_matches_sacrebleu_statistics():
    """pair_stats gives sacreBLEU's own per-order (hyp, ref, match) triples."""
    for word_order in (0, 2):
        metric = CHRF(word_order=word_order)
        for hyp, ref in random_pairs(seed=40 + word_order, n=200):
            theirs = metric._extract_corpus_statistics([hyp], [[ref]])[0]    # flat [hyp, ref, match] * orders
            ours = pair_stats(hyp, ref, 6, word_order)
            assert [x for triple in ours for x in triple] == theirs, (hyp, ref)


def test_matched_counts_is_the_multiset_intersection():
    """sum_g min(c_hyp(g), c_ref(g)), computed as shared n-grams + repeated_extra, equals the size of Counter's
    multiset intersection at every order, on short texts of few letters (many repeats)."""
    rng = random.Random(50)
    for _ in range(300):
        hyp = "".join(rng.choice("abc") for _ in range(rng.randint(0, 12)))
        ref = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 12)))
        expected = [sum((Counter(hyp[i:i + n] for i in range(len(hyp) - n + 1))
                         & Counter(ref[i:i + n] for i in range(len(ref) - n + 1))).values()) for n in range(1, 4)]
        assert matched_counts(ngram_counts(hyp, 3), ngram_counts(ref, 3)) == expected, (hyp, ref)


def test_chrfpp_word_splitting():
    assert split_words("(hi) 'tis me, O a.") == ("(hi", ")", "'", "tis", "me", ",", "O", "a", ".")
    assert split_words("!? . ,,") == ("!", "?", ".", ",", ",")


@pytest.mark.parametrize("hyp, refs", [("", [""]), ("", ["love"]), ("love", [""]), (" \n\t", ["love"]),
                                        ("love", ["\u3000 "]), ("", ["", ""]), ("a", ["b"])])
def test_empty_strings_score_zero(hyp, refs):
    for word_order in (0, 2):
        assert sentence_chrf(hyp, refs, word_order=word_order) == 0.0
        assert sacre_sentence(hyp, refs, word_order=word_order) == 0.0
    assert corpus_chrf([hyp], [refs]) == 0.0
    assert corpus_chrf([hyp, hyp], [refs, refs], word_order=2) == 0.0


def test_empty_segments_inside_a_corpus_match_sacrebleu():
    hyps = ["", "shall I compare thee", "love", " ", "thy summer's day"]
    refs = ["a summer's day", "", "love", "x", " "]
    for word_order in (0, 2):
        assert corpus_chrf(hyps, refs, word_order=word_order) == pytest.approx(
            sacrebleu.corpus_chrf(hyps, [refs], word_order=word_order).score, abs=1e-9)


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="3 hypotheses but 2 references"):
        corpus_chrf(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError, match="3 hypotheses but 1 references"):
        corpus_chrf(["a", "b", "c"], [["a", "b", "c"]])          # sacreBLEU's stream shape, by mistake
    with pytest.raises(ValueError, match="non-empty list"):
        corpus_chrf([], [])
    with pytest.raises(TypeError, match="single string"):
        sentence_chrf("a", "a")
    with pytest.raises(ValueError, match="non-empty list"):
        sentence_chrf("a", [])
    with pytest.raises(ValueError, match=r"references\[1\]"):
        corpus_chrf(["a", "b"], ["a", []])
    with pytest.raises(TypeError, match="hypothesis must be a string"):
        sentence_chrf(None, ["a"])
    with pytest.raises(TypeError, match=r"hypotheses\[1\]"):
        corpus_chrf(["a", 3], ["a", "b"])
    with pytest.raises(TypeError, match=r"references\[0\]"):
        sentence_chrf("a", [None])
    with pytest.raises(ValueError, match="char_order"):
        sentence_chrf("a", ["a"], char_order=-1)
    with pytest.raises(ValueError, match="both 0"):
        sentence_chrf("a", ["a"], char_order=0, word_order=0)
    with pytest.raises(ValueError, match="beta"):
        corpus_chrf(["a"], ["a"], beta=-1.0)
    with pytest.raises(ValueError, match="beta"):
        sentence_chrf("a", ["a"], beta=float("inf"))


def test_runs_without_sacrebleu():
    """No sacreBLEU at run time: importing chrf and mbr with sacrebleu made unimportable still works."""
    code = ("import sys; sys.modules['sacrebleu'] = None\n"
            "from metrics.chrf import sentence_chrf, corpus_chrf\nfrom decoding.mbr import mbr_select\n"
            "print(round(sentence_chrf('love', ['love']), 6), mbr_select(['a', 'b', 'a']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["100.0", "0"]


def test_real_held_out_dev_sonnets():
    prompts = split_sonnets(shared_path("data", "sonnets_held_out_dev.txt"))
    truths = split_sonnets(shared_path("data", "TRUE_sonnets_held_out_dev.txt"))
    assert len(prompts) == len(truths) == 12
    assert all(truth.startswith(prompt) for prompt, truth in zip(prompts, truths))
    for word_order in (0, 2):
        ours = corpus_chrf(prompts, truths, word_order=word_order)
        assert ours == pytest.approx(sacrebleu.corpus_chrf(prompts, [truths], word_order=word_order).score, abs=1e-9)
        assert 0 < ours < 100
        for prompt, truth in zip(prompts, truths):
            for hyp, ref in ((prompt, truth), (truth, prompt), (truth, truth)):
                assert sentence_chrf(hyp, [ref], word_order=word_order) == pytest.approx(
                    sacre_sentence(hyp, [ref], word_order=word_order), abs=1e-9)
        # Every true sonnet against the others: long texts, several references.
        for i, truth in enumerate(truths):
            others = truths[:i] + truths[i + 1:]
            assert sentence_chrf(truth, others, word_order=word_order) == pytest.approx(
                sacre_sentence(truth, others, word_order=word_order), abs=1e-9)


def test_real_training_sonnets_as_a_corpus():
    sonnets = split_sonnets(shared_path("data", "sonnets.txt"))
    lines = [line.strip() for sonnet in sonnets for line in sonnet.splitlines()]
    hyps, refs = lines[:-1], lines[1:]                 # each line against the next one
    for word_order in (0, 2):
        assert corpus_chrf(hyps, refs, word_order=word_order) == pytest.approx(
            sacrebleu.corpus_chrf(hyps, [refs], word_order=word_order).score, abs=1e-9)
