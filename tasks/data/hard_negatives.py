r"""Adversarial hard negatives for paraphrase training, computed without a learned scorer.

The study this repository reruns (APT-style adversarial training) added the pairs a learned metric scored as
dissimilar paraphrases. No such scorer runs offline, so we make negatives (label 0, "not a paraphrase") by two
rules we can compute and explain:

1. Mined: the non-duplicate training pairs whose two questions overlap most in words, by token Jaccard

       J(s1, s2) = |W(s1) & W(s2)| / |W(s1) | W(s2)|,    W(s) = the set of lower-cased word tokens (regex \w+)

   These are the pairs a bag-of-words model mistakes for paraphrases. They are copied into the training set
   again (oversampled), best first; ties keep file order.
2. Perturbed: a duplicate pair (s1, s2) becomes (s1, s2') with s2 changed so the two no longer ask the same
   thing. One rule per pair, picked at random among those that apply (pairs where none applies are skipped):
   - number:   the first number in s2 becomes another (n -> n + k, k drawn from 1..9)
   - negation: the first negation in s2 is removed (the word "not": "is it not" -> "is it"; a contraction:
               "doesn't" -> "does", "can't" -> "can", "won't" -> "will"), else "not" is inserted after its
               first auxiliary verb ("what is the" -> "what is not the"; AUXILIARIES below)
   - entity:   the first capitalised word of s2 that does not start it (a likely name: "Python", "India") is
               swapped for a different capitalised word, drawn from the non-initial capitalised words of all
               training questions
   The rules need the original casing, so they run on the raw text, before the course's lower-casing
   (tasks.data.course_preprocess), which the task then applies to these pairs like to the others.

How many: n = round(ratio * len(train)); n // 2 mined copies (cycling over the non-duplicates, best first, when
there are fewer), and the other n - n // 2 perturbed, from duplicates in a shuffled order, each used at most once
(fewer when fewer duplicates admit a rule; the counts are returned for the log). Everything random comes from
random.Random(seed), and sorted lists stand in for sets, so the same seed gives the same pairs.
"""
from __future__ import annotations

import random
import re
from dataclasses import replace

from .tsv import ParaphraseExample

WORD = re.compile(r"\w+")
NUMBER = re.compile(r"\d+")
CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")  # "Python", not "I" or "USA" (those are kept as they are)
AUXILIARIES = ("is", "are", "was", "were", "do", "does", "did", "can", "could", "should", "would", "will",
               "has", "have", "am")
_AUX = "|".join(AUXILIARIES)
NOT = re.compile(r"\s+not\b", re.IGNORECASE)  # the word "not" and the space before it
CONTRACTION = re.compile(r"\b(\w+)n't\b", re.IGNORECASE)
FIRST_AUX = re.compile(rf"\b({_AUX})\b", re.IGNORECASE)
POSITIVE = {"ca": "can", "wo": "will", "sha": "shall"}  # the stems of "can't", "won't", "shan't"


def word_set(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


def jaccard(a: str, b: str) -> float:
    wa, wb = word_set(a), word_set(b)
    return len(wa & wb) / len(wa | wb) if wa | wb else 0.0


# ---- 1. mined: the most overlapping non-duplicates -----------------------------------------------------------
def mine_overlap_negatives(examples: list[ParaphraseExample], n: int) -> list[ParaphraseExample]:
    """n copies of the non-duplicates with the highest Jaccard overlap, best first (cycling if n is larger)."""
    negatives = [e for e in examples if e.label == 0]
    if n <= 0 or not negatives:
        return []
    ranked = sorted(negatives, key=lambda e: -jaccard(e.sentence1, e.sentence2))  # stable: ties keep file order
    return [replace(ranked[i % len(ranked)], id=f"{ranked[i % len(ranked)].id}#mined{i // len(ranked)}")
            for i in range(n)]


# ---- 2. perturbed duplicates ---------------------------------------------------------------------------------
def perturb_number(text: str, rng: random.Random) -> str | None:
    match = NUMBER.search(text)
    if match is None:
        return None
    new = str(int(match.group()) + rng.randint(1, 9))
    return text[:match.start()] + new + text[match.end():]


def perturb_negation(text: str) -> str | None:
    """Remove the first negation ('not', "n't"); without one, insert 'not' after the first auxiliary."""
    match = NOT.search(text)
    if match:
        return text[:match.start()] + text[match.end():]
    match = CONTRACTION.search(text)
    if match:
        stem = match.group(1)
        positive = POSITIVE.get(stem.lower(), stem.lower())
        positive = positive.capitalize() if stem[0].isupper() else positive
        return text[:match.start()] + positive + text[match.end():]
    match = FIRST_AUX.search(text)
    if match:
        return text[:match.end()] + " not" + text[match.end():]
    return None


def capitalised_words(text: str) -> list[tuple[int, int, str]]:
    """(start, end, word) of the capitalised words that do not start the text."""
    return [(m.start(), m.end(), m.group()) for m in CAPITALISED.finditer(text) if text[:m.start()].strip()]


def perturb_entity(text: str, rng: random.Random, pool: list[str]) -> str | None:
    """Swap the first non-initial capitalised word for another word of `pool` (a sorted list)."""
    words = capitalised_words(text)
    if not words:
        return None
    start, end, word = words[0]
    others = [w for w in pool if w != word]
    if not others:
        return None
    return text[:start] + rng.choice(others) + text[end:]


def perturbation_negatives(examples: list[ParaphraseExample], n: int,
                           rng: random.Random) -> list[ParaphraseExample]:
    """Up to n negatives made from duplicates by one rule each (see the module docstring)."""
    pool = sorted({w for e in examples for s in (e.sentence1, e.sentence2) for _, _, w in capitalised_words(s)})
    duplicates = [e for e in examples if e.label == 1]
    rng.shuffle(duplicates)
    made = []
    for e in duplicates:
        if len(made) >= n:
            break
        candidates = {"number": perturb_number(e.sentence2, rng), "negation": perturb_negation(e.sentence2),
                      "entity": perturb_entity(e.sentence2, rng, pool)}
        kinds = [k for k, text in candidates.items() if text is not None and text != e.sentence2]
        if kinds:
            kind = rng.choice(kinds)
            made.append(replace(e, id=f"{e.id}#{kind}", sentence2=candidates[kind], label=0))
    return made


def hard_negatives(examples: list[ParaphraseExample], ratio: float,
                   seed: int) -> tuple[list[ParaphraseExample], dict[str, int]]:
    """The extra training pairs for --adversarial, and their counts by kind (mined, number, negation, entity)."""
    if ratio < 0:
        raise ValueError(f"--adversarial-ratio must be >= 0, got {ratio}")
    n = round(ratio * len(examples))
    mined = mine_overlap_negatives(examples, n // 2)
    perturbed = perturbation_negatives(examples, n - n // 2, random.Random(seed))
    counts = {"mined": len(mined)}
    for kind in ("number", "negation", "entity"):
        counts[kind] = sum(e.id.endswith("#" + kind) for e in perturbed)
    return mined + perturbed, counts
