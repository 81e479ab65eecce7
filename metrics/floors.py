"""The floors a sonnet result must beat: the dev chrF of texts written without any model.

The course scores each generated sonnet *with its 3 prompt lines* against the true sonnet, and Shakespeare's
sonnets share much of their vocabulary, so a text that knows nothing of the sonnet still scores well:

- prompts alone: each dev prompt (its 3 true lines), nothing added;
- prompt + random lines: each prompt followed by 11 lines drawn at random from the training sonnets, a text of
  a sonnet's 14 lines; the mean over 5 seeds (one draw is itself noisy).

A model that does not beat the second floor has learnt nothing chrF can see beyond "write lines from the
sonnets". Both are cheap (a few corpus chrF computations) and depend only on the data, so a run prints them once.
"""
from __future__ import annotations

import random
from statistics import mean

from metrics.chrf import corpus_chrf

SONNET_LINES = 14
PROMPT_LINES = 3
FLOOR_SEEDS = 5


def training_lines(train_sonnets: list[str]) -> list[str]:
    """Every non-empty line of the training sonnets, stripped."""
    return [line.strip() for sonnet in train_sonnets for line in sonnet.split("\n") if line.strip()]


def prompt_plus_random_lines(prompts: list[str], lines: list[str], seed: int) -> list[str]:
    """Each prompt followed by 14 - 3 = 11 distinct random training lines (random.Random(seed)); all of them, in
    random order, when the training sonnets hold fewer lines."""
    rng = random.Random(seed)
    extra = min(SONNET_LINES - PROMPT_LINES, len(lines))
    return [prompt.strip() + "\n" + "\n".join(rng.sample(lines, extra)) for prompt in prompts]


def sonnet_floors(prompts: list[str], true_sonnets: list[str], train_sonnets: list[str],
                  seeds: int = FLOOR_SEEDS) -> dict[str, float]:
    """{"floor_prompts": chrF of the prompts alone, "floor_random_lines": mean chrF of prompt + random training
    lines over `seeds` seeds (0, 1, ...)}, against the true sonnets."""
    lines = training_lines(train_sonnets)
    random_texts = [prompt_plus_random_lines(prompts, lines, seed) for seed in range(seeds)]
    return {"floor_prompts": corpus_chrf(prompts, true_sonnets),
            "floor_random_lines": mean(corpus_chrf(text, true_sonnets) for text in random_texts)}


def describe_floors(floors: dict[str, float]) -> str:
    """One line for the log."""
    return (f"dev chrF floors (no model): prompts alone {floors['floor_prompts']:.2f}, prompt + "
            f"{SONNET_LINES - PROMPT_LINES} random training lines {floors['floor_random_lines']:.2f} "
            f"(mean of {FLOOR_SEEDS} seeds); a result below these is no better than copying lines")
