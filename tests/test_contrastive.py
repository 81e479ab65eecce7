"""Contrastive search against transformers' generate(penalty_alpha, top_k), and its three options."""
from __future__ import annotations

import pytest
import torch

from decoding import contrastive_search, greedy
from decoding.contrastive import apply_repetition_penalty, step_alpha

from ._fixtures import count_forwards, hf_generate, random_prompts
from ._margins import assert_stable
from .conftest import tiny_pair


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(0)


def test_matches_transformers_with_and_without_eos(pair):
    ours, hf = pair
    stopped_early = 0
    calls, handle = count_forwards(ours)
    try:
        for ids, n in random_prompts(10, seed=3):
            T = ids.size(1)
            calls.clear()
            free = contrastive_search(ours, ids, n)
            assert len(calls) == 1 + n, "expected the prefill plus ONE batched forward per new token"
            assert_stable(lambda: contrastive_search(ours, ids, n), ours)  # no near-tie on this path
            assert torch.equal(free, hf_generate(hf, ids, n, penalty_alpha=0.6, top_k=4))
            # an eos the model emits in this very run: its 2nd new token (when the run is that long)
            eos = int(free[0, T + 1]) if n >= 2 else 0
            got = assert_stable(lambda: contrastive_search(ours, ids, n, eos_token_id=eos), ours)
            assert torch.equal(got, hf_generate(hf, ids, n, eos=eos, penalty_alpha=0.6, top_k=4))
            stopped_early += got.size(1) < T + n
    finally:
        handle.remove()
    assert stopped_early >= 3, "eos never ended a run early: the eos case was not exercised"


def test_other_k_and_alpha_and_repetition_penalty_match_transformers(pair):
    ours, hf = pair
    for ids, n in random_prompts(4, seed=4):
        for k, alpha in ((2, 0.3), (6, 0.9)):
            got = assert_stable(lambda: contrastive_search(ours, ids, n, top_k=k, alpha=alpha), ours)
            assert torch.equal(got, hf_generate(hf, ids, n, penalty_alpha=alpha, top_k=k))
        got = assert_stable(lambda: contrastive_search(ours, ids, n, repetition_penalty=1.8), ours)
        assert torch.equal(got, hf_generate(hf, ids, n, penalty_alpha=0.6, top_k=4, repetition_penalty=1.8))


def test_alpha_zero_is_greedy(pair):
    ours, _ = pair
    for ids, n in random_prompts(6, seed=5):
        assert torch.equal(contrastive_search(ours, ids, n, alpha=0.0), greedy(ours, ids, n))


def test_each_option_changes_the_output_only_when_on(pair):
    ours, _ = pair
    prompts = list(random_prompts(6, seed=6))
    base = [contrastive_search(ours, ids, 30) for ids, _ in prompts]
    off = dict(dynamic_alpha=False, use_mean_sim=False, repetition_penalty=1.0, alpha_start=0.0, alpha_end=0.1)
    for (ids, _), b in zip(prompts, base):  # explicit "off" values, odd alpha_start/end: same as the default
        assert torch.equal(contrastive_search(ours, ids, 30, **off), b)
    for option in (dict(dynamic_alpha=True), dict(use_mean_sim=True), dict(repetition_penalty=2.0)):
        outputs = [contrastive_search(ours, ids, 30, **option) for ids, _ in prompts]
        changed = sum(not torch.equal(out, b) for out, b in zip(outputs, base))
        assert changed >= 1, f"{option} never changed the output"


def test_dynamic_alpha_schedule():
    assert step_alpha(3, 10, 0.6, False, 0.0, 0.6) == 0.6
    assert [step_alpha(s, 5, 0.6, True, 0.2, 0.6) for s in range(5)] == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6])
    assert step_alpha(0, 1, 0.6, True, 0.2, 0.6) == 0.2


def test_repetition_penalty_is_ctrl_style():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[0, 1, 1]])
    assert torch.equal(apply_repetition_penalty(logits, seen, 2.0), torch.tensor([[1.0, -4.0, 1.0, -1.0]]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(top_k=0), "top_k"),
        (dict(top_k=-2), "top_k"),
        (dict(top_k=301), "vocabulary"),
        (dict(alpha=1.5), "alpha"),
        (dict(dynamic_alpha=True, alpha_start=-0.1), "alpha_start"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
    ],
)
def test_bad_options(pair, kwargs, message):
    with pytest.raises(ValueError, match=message):
        contrastive_search(pair[0], torch.tensor([[1, 2]]), 3, **kwargs)


def test_decoders_run_on_a_prefix_tuned_model(pair):
    """The decoders only call model(...) and read model.config; prefix-tuning wraps the GPT2 (cache = prefix)."""
    from decoding import beam_search
    from minigpt.prefix import PrefixTuning

    torch.manual_seed(0)
    wrapped = PrefixTuning(pair[0], n_prefix=3, use_mlp=False).eval()
    with torch.no_grad():
        wrapped.prefix.normal_(0, 3.0)  # large enough to change what the tiny model says
    for ids, n in random_prompts(3, seed=12):
        g = greedy(wrapped, ids, n)
        assert not torch.equal(g, greedy(pair[0], ids, n))  # the prefix matters
        assert torch.equal(contrastive_search(wrapped, ids, n, alpha=0.0), g)
        assert torch.equal(beam_search(wrapped, ids, n, num_beams=1), g)
        assert contrastive_search(wrapped, ids, n).shape == g.shape
