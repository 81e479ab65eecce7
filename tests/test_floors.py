"""metrics/floors.py: the dev chrF of texts written without a model, and the sonnet run that prints and records
them with its own bootstrap interval."""
from __future__ import annotations

import json
import random
from statistics import mean

import pytest
from sacrebleu.metrics import CHRF

import run
from metrics.floors import describe_floors, prompt_plus_random_lines, sonnet_floors, training_lines
from tasks.data import read_sonnets
from tests._fixtures import sonnet_args, write_fixture
from tests.conftest import shared_path


def sacrebleu_chrf(hyps, refs) -> float:
    return CHRF().corpus_score(hyps, [refs]).score


def small_corpus():
    rng = random.Random(1)
    words = "thee thou love fair summer day sweet time beauty eyes heart".split()
    sonnet = lambda: "\n".join(" ".join(rng.choice(words) for _ in range(5)) for _ in range(14))  # noqa: E731
    train, true = [sonnet() for _ in range(6)], [sonnet() for _ in range(3)]
    prompts = ["\n".join(t.split("\n")[:3]) for t in true]
    return train, prompts, true


def test_random_lines_text_is_the_prompt_then_eleven_training_lines():
    train, prompts, _ = small_corpus()
    lines = training_lines(train)
    texts = prompt_plus_random_lines(prompts, lines, seed=3)
    for prompt, text in zip(prompts, texts):
        text_lines = text.split("\n")
        assert len(text_lines) == 14 and "\n".join(text_lines[:3]) == prompt
        assert all(line in lines for line in text_lines[3:]) and len(set(text_lines[3:])) == 11
    assert texts == prompt_plus_random_lines(prompts, lines, seed=3)  # a seed gives the same text
    assert texts != prompt_plus_random_lines(prompts, lines, seed=4)
    assert prompt_plus_random_lines(prompts, lines[:5], seed=0)[0].count("\n") == 3 + 5 - 1  # all 5 lines


def test_floors_are_the_chrf_of_those_texts():
    train, prompts, true = small_corpus()
    floors = sonnet_floors(prompts, true, train)
    assert floors["floor_prompts"] == pytest.approx(sacrebleu_chrf(prompts, true), abs=1e-9)
    by_seed = [sacrebleu_chrf(prompt_plus_random_lines(prompts, training_lines(train), s), true) for s in range(5)]
    assert floors["floor_random_lines"] == pytest.approx(mean(by_seed), abs=1e-9)
    assert len(set(by_seed)) > 1  # the seeds differ, so the mean is a mean
    assert "prompts alone" in describe_floors(floors)


def test_floors_of_the_real_dev_set():
    data = shared_path("data")
    prompts = read_sonnets(data / "sonnets_held_out_dev.txt")
    floors = sonnet_floors(prompts, read_sonnets(data / "TRUE_sonnets_held_out_dev.txt"),
                           read_sonnets(data / "sonnets.txt"))
    # measured (docs/signal-and-noise.md): 24.77 and 41.86
    assert floors["floor_prompts"] == pytest.approx(24.7657, abs=1e-3)
    assert floors["floor_random_lines"] == pytest.approx(41.859, abs=1e-2)


def test_sonnet_run_records_its_interval_and_the_floors(tmp_path, tiny_tok, capsys):  # noqa: F811
    data, out = write_fixture(tmp_path / "data"), tmp_path / "out"
    assert run.main(sonnet_args(data, out, tiny_tok, "--epochs", "0", "--skip-test")) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    hyps = read_sonnets(out / "generated_sonnets_dev.txt")
    refs = read_sonnets(data / "TRUE_sonnets_held_out_dev.txt")
    expected = CHRF().corpus_score(hyps, [refs], n_bootstrap=1000)
    assert result["dev_chrf"] == pytest.approx(expected.score, abs=1e-9)
    assert result["dev_chrf_mean"] == pytest.approx(float(expected._mean), abs=1e-9)
    assert result["dev_chrf_ci95"] == pytest.approx(float(expected._ci), abs=1e-9)
    floors = sonnet_floors(read_sonnets(data / "sonnets_held_out_dev.txt"), refs, read_sonnets(data / "sonnets.txt"))
    assert {k: result[k] for k in floors} == pytest.approx(floors)
    assert f"± {expected._ci:.2f}" in printed and f"{floors['floor_random_lines']:.2f}" in printed
