"""Adversarial hard negatives (tasks/data/hard_negatives.py): the mining rule picks the most overlapping
non-duplicates, each perturbation changes the text as documented, and everything is deterministic in the seed."""
from __future__ import annotations

import random

import pytest

from tasks.data import ParaphraseExample
from tasks.data.hard_negatives import (
    capitalised_words,
    hard_negatives,
    jaccard,
    mine_overlap_negatives,
    perturb_entity,
    perturb_negation,
    perturb_number,
    perturbation_negatives,
)

PAIRS = [  # (s1, s2, label); overlaps of the non-duplicates noted
    ("How do I learn Python?", "How do I learn Java?", 0),  # 4/6
    ("What is love?", "Where is Paris?", 0),  # 1/5
    ("How do I cook rice?", "How do I cook rice fast?", 1),  # a duplicate: never mined, however high
    ("Is the Moon made of rock?", "Is the Moon made of cheese?", 0),  # 5/7
    ("Why is the sky blue?", "Why is the sea green?", 0),  # 3/7
    ("How can I earn 100 dollars in 2 days?", "How can I make 100 dollars in 2 days?", 1),
    ("Who founded Google?", "Who is the founder of Google?", 1),
    ("Why isn't my code working?", "Why doesn't my code work?", 1),
]


def examples():
    return [ParaphraseExample(f"id{i}", s1, s2, y) for i, (s1, s2, y) in enumerate(PAIRS)]


def test_jaccard_on_word_sets():
    assert jaccard("How do I learn Python?", "how do i learn java") == pytest.approx(4 / 6)
    assert jaccard("a b", "c d") == 0.0 and jaccard("A a", "a") == 1.0 and jaccard("?", "!") == 0.0


def test_mining_picks_the_highest_overlap_non_duplicates_best_first():
    mined = mine_overlap_negatives(examples(), 3)
    assert [e.sentence2 for e in mined] == ["Is the Moon made of cheese?", "How do I learn Java?",
                                            "Why is the sea green?"]
    assert all(e.label == 0 for e in mined) and mined[0].id == "id3#mined0"
    cycled = mine_overlap_negatives(examples(), 6)  # more than the 4 non-duplicates: oversampled, best first
    assert [e.id for e in cycled] == ["id3#mined0", "id0#mined0", "id4#mined0", "id1#mined0", "id3#mined1",
                                      "id0#mined1"]


def test_number_perturbation_changes_only_the_first_number():
    rng = random.Random(0)
    text = "How can I make 100 dollars in 2 days?"
    new = perturb_number(text, rng)
    head, _, tail = new.partition(" dollars")
    assert tail == " in 2 days?" and head.startswith("How can I make ")
    assert 101 <= int(head.rsplit(" ", 1)[1]) <= 109
    assert perturb_number("No digits here?", rng) is None


@pytest.mark.parametrize("text, expected", [
    ("What is the best phone?", "What is not the best phone?"),  # inserted after the first auxiliary
    ("Why is it not working?", "Why is it working?"),  # the word "not" removed
    ("Why isn't my code working?", "Why is my code working?"),
    ("Why doesn't it compile?", "Why does it compile?"),
    ("Why can't I sleep?", "Why can I sleep?"),
    ("Why won't it start?", "Why will it start?"),
    ("Can't I go?", "Can I go?"),
    ("Where to go?", None),  # no auxiliary, no negation: the rule does not apply
])
def test_negation_perturbation(text, expected):
    assert perturb_negation(text) == expected


def test_entity_perturbation_swaps_a_non_initial_capitalised_word():
    assert capitalised_words("How do I learn Python in India?") == [(15, 21, "Python"), (25, 30, "India")]
    new = perturb_entity("How do I learn Python in India?", random.Random(0), ["Java", "Python", "Rust"])
    assert new in ("How do I learn Java in India?", "How do I learn Rust in India?")
    assert perturb_entity("Where is it?", random.Random(0), ["Java"]) is None  # "Where" starts the text
    assert perturb_entity("Who is Ada?", random.Random(0), ["Ada"]) is None  # no other word to swap in


def test_perturbations_come_from_duplicates_and_change_question_two():
    made = perturbation_negatives(examples(), 10, random.Random(1))
    originals = {e.id: e for e in examples()}
    assert len(made) == 4  # every duplicate admits a rule here, each is used once
    for e in made:
        source_id, kind = e.id.split("#")
        source = originals[source_id]
        assert source.label == 1 and e.label == 0 and kind in ("number", "negation", "entity")
        assert e.sentence1 == source.sentence1 and e.sentence2 != source.sentence2


def test_hard_negatives_are_counted_and_deterministic():
    extra, counts = hard_negatives(examples(), ratio=0.75, seed=11711)  # round(0.75 * 8) = 6: 3 mined, 3 perturbed
    assert len(extra) == 6 and counts["mined"] == 3 and sum(counts.values()) == 6
    assert all(e.label == 0 for e in extra)
    again, _ = hard_negatives(examples(), ratio=0.75, seed=11711)
    assert again == extra
    seeds = {tuple((e.id, e.sentence2) for e in hard_negatives(examples(), 0.75, s)[0]) for s in range(10)}
    assert len(seeds) > 1  # the seed does choose
    with pytest.raises(ValueError, match="--adversarial-ratio"):
        hard_negatives(examples(), -1, 0)
