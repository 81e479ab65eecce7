"""Beam search against transformers' generate(num_beams=...), token for token."""
from __future__ import annotations

import pytest
import torch

from decoding import beam_search, greedy
from decoding.beam import block_repeated_ngrams

from ._fixtures import count_forwards, hf_generate, random_prompts
from ._margins import assert_stable
from .conftest import tiny_pair

SETTINGS = dict(num_beams=4, length_penalty=0.6, no_repeat_ngram_size=3)


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(0)


def frequent_beam_token(ours) -> int:
    """A token the beams of this model emit often: an eos id that really ends hypotheses."""
    counts = torch.zeros(ours.config.vocab_size, dtype=torch.long)
    for ids, _ in random_prompts(4, seed=7):
        out = beam_search(ours, ids, 20, **SETTINGS, num_return_sequences=4)
        counts += torch.bincount(out[:, ids.size(1) :].flatten(), minlength=counts.numel())
    return int(counts.argmax())


@pytest.mark.parametrize("num_return_sequences", [1, 4])
def test_matches_transformers_with_and_without_eos(pair, num_return_sequences):
    ours, hf = pair
    eos = frequent_beam_token(ours)
    ended = 0
    for ids, n in random_prompts(10, seed=8):
        n += 8
        kw = dict(SETTINGS, num_return_sequences=num_return_sequences)
        got = assert_stable(lambda: beam_search(ours, ids, n, **kw), ours)  # no near-tie on this path
        assert got.shape == (num_return_sequences, ids.size(1) + n)
        assert torch.equal(got, hf_generate(hf, ids, n, **kw))
        got = assert_stable(lambda: beam_search(ours, ids, n, eos_token_id=eos, **kw), ours)
        assert torch.equal(got, hf_generate(hf, ids, n, eos=eos, **kw))
        ended += bool((got[:, ids.size(1) :] == eos).any())
    assert ended >= 3, "no hypothesis ended with eos: the eos case was not exercised"


@pytest.mark.parametrize("num_return_sequences", [1, 4])
@pytest.mark.parametrize("length_penalty", [0.6, 1.0, -0.5])
def test_early_stopping_matches_transformers(num_return_sequences, length_penalty):
    """A likely eos (its embedding row scaled up in both models) fills the pool of finished hypotheses, so the
    search stops before max_new_tokens by transformers' early-stopping rule."""
    ours, hf = tiny_pair(0)
    eos = 119
    with torch.no_grad():
        ours.wte.weight[eos] *= 3
        hf.transformer.wte.weight[eos] *= 3
    assert torch.equal(ours.wte.weight, hf.transformer.wte.weight)
    kw = dict(SETTINGS, length_penalty=length_penalty, num_return_sequences=num_return_sequences)
    stopped_early = 0
    calls, handle = count_forwards(ours)
    try:
        for ids, n in random_prompts(8, seed=8):
            n += 8
            calls.clear()
            got = assert_stable(lambda: beam_search(ours, ids, n, eos_token_id=eos, **kw), ours)  # 3 equal runs
            stopped_early += len(calls) / 3 < n  # a full run is the prefill + n - 1 steps
            assert torch.equal(got, hf_generate(hf, ids, n, eos=eos, **kw))
    finally:
        handle.remove()
    assert stopped_early >= 2, "the search never stopped before max_new_tokens"


def test_other_settings_match_transformers(pair):
    ours, hf = pair
    for ids, n in random_prompts(4, seed=9):
        for kw in (dict(num_beams=2), dict(num_beams=3, length_penalty=-0.5, num_return_sequences=2),
                   dict(num_beams=5, length_penalty=2.0, no_repeat_ngram_size=1)):
            got = assert_stable(lambda: beam_search(ours, ids, n, **kw), ours)  # no near-tie on this path
            assert torch.equal(got, hf_generate(hf, ids, n, **kw))


def test_one_beam_is_greedy(pair):
    ours, _ = pair
    for ids, n in random_prompts(6, seed=10):
        assert torch.equal(beam_search(ours, ids, n, num_beams=1), greedy(ours, ids, n))
        eos = int(greedy(ours, ids, max(n, 2))[0, ids.size(1) + 1])
        got = beam_search(ours, ids, n, num_beams=1, eos_token_id=eos)
        assert torch.equal(got, greedy(ours, ids, n, eos_token_id=eos))


def test_no_repeat_ngram_blocking():
    tokens = torch.tensor([[1, 2, 3, 1, 2], [4, 4, 4, 4, 4]])
    log_probs = torch.zeros(2, 6)
    block_repeated_ngrams(log_probs, tokens, 3)  # row 0: "1 2" was followed by 3; row 1: "4 4" by 4
    assert log_probs.isinf().nonzero().tolist() == [[0, 3], [1, 4]]
    log_probs = torch.zeros(2, 6)
    block_repeated_ngrams(log_probs, tokens, 1)  # every token already present
    assert log_probs.isinf().nonzero().tolist() == [[0, 1], [0, 2], [0, 3], [1, 4]]


def test_rows_that_end_early_are_padded_with_eos(pair):
    ours, _ = pair
    eos = frequent_beam_token(ours)
    for ids, n in random_prompts(6, seed=11):
        out = beam_search(ours, ids, n + 8, **SETTINGS, num_return_sequences=4, eos_token_id=eos)
        for row in out[:, ids.size(1) :]:
            hits = (row == eos).nonzero()
            if len(hits):  # after the first eos, only eos
                assert (row[int(hits[0]) :] == eos).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_beams=0), "num_beams"),
        (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
        (dict(num_return_sequences=0), "num_return_sequences"),
        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
    ],
)
def test_bad_options(pair, kwargs, message):
    with pytest.raises(ValueError, match=message):
        beam_search(pair[0], torch.tensor([[1, 2]]), 3, **kwargs)
