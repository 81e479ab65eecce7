"""Greedy decoding and the sampling filters against transformers (same weights, same warpers)."""
from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from decoding import beam_search, contrastive_search, greedy, sample
from decoding.sampling import apply_temperature, filter_logits, top_k_filter, top_p_filter
from minigpt import GPT2

from ._fixtures import hf_generate, random_prompts
from ._margins import MIN_MARGIN, greedy_margin
from .conftest import tiny_config, tiny_pair


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(0)


def test_greedy_matches_transformers(pair):
    ours, hf = pair
    stopped_early = 0
    for ids, n in random_prompts(12):
        got = greedy(ours, ids, n)
        assert greedy_margin(ours, got, ids.size(1)) > MIN_MARGIN  # no near-tie another kernel could flip
        assert torch.equal(got, hf_generate(hf, ids, n, do_sample=False))
        # an eos the model really emits: the 3rd new token of the run without eos (if that long)
        free = greedy(ours, ids, max(n, 3))
        eos = int(free[0, ids.size(1) + 2])
        got = greedy(ours, ids, n, eos_token_id=eos)
        assert torch.equal(got, hf_generate(hf, ids, n, eos=eos, do_sample=False))
        stopped_early += got.size(1) < ids.size(1) + n
        assert int(got[0, -1]) == eos or got.size(1) == ids.size(1) + n
    assert stopped_early >= 3, "eos never stopped the generation: the eos case was not exercised"


def test_filters_keep_the_same_tokens_as_transformers_warpers():
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(64, 50, generator=g) * 3]
    rows.append(torch.randint(-3, 3, (64, 50), generator=g).float())  # many ties
    rows.append(torch.zeros(4, 50))  # all tied
    rows.append(torch.randn(8, 3, generator=g))  # fewer tokens than k
    for logits in rows:
        for k in (1, 2, 5, 10, 49, 50, 80):
            ours = top_k_filter(logits, k)
            ref = TopKLogitsWarper(k)(None, logits)
            assert torch.equal(ours.isinf(), ref.isinf()), f"top_k={k}"
            assert torch.equal(ours[~ours.isinf()], logits[~ours.isinf()])
        for p in (0.01, 0.1, 0.5, 0.9, 0.95, 0.999, 1.0):
            ref = TopPLogitsWarper(p)(None, logits)
            assert torch.equal(top_p_filter(logits, p).isinf(), ref.isinf()), f"top_p={p}"
        for t in (0.5, 1.2):
            assert torch.equal(apply_temperature(logits, t), TemperatureLogitsWarper(t)(None, logits))


def test_top_p_at_gpt2s_vocabulary_and_on_boundary_ties():
    g = torch.Generator().manual_seed(1)
    for scale in (0.5, 2.0, 8.0):  # GPT-2's vocabulary size: nuclei of a few to tens of thousands of tokens
        logits = torch.randn(8, 50257, generator=g) * scale
        for p in (0.1, 0.5, 0.9, 0.99):
            assert torch.equal(top_p_filter(logits, p).isinf(), TopPLogitsWarper(p)(None, logits).isinf())
    tied = torch.tensor([[0.0, 1.0, 1.0, 1.0, 2.0]])  # the boundary falls inside the three tied 1.0s
    assert torch.equal(top_p_filter(tied, 0.5).isinf(), TopPLogitsWarper(0.5)(None, tied).isinf())


def test_top_p_keeps_the_smallest_set_with_mass_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = lambda p: (~top_p_filter(probs.log(), p).isinf()).sum().item()  # noqa: E731
    assert kept(0.5) == 1 and kept(0.6) == 2 and kept(0.8) == 2 and kept(0.81) == 3 and kept(1.0) == 4


def test_filter_order_is_temperature_then_top_k_then_top_p():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(16, 40, generator=g)
    ref = TopPLogitsWarper(0.8)(None, TopKLogitsWarper(7)(None, TemperatureLogitsWarper(1.3)(None, logits)))
    assert torch.equal(filter_logits(logits, 1.3, 7, 0.8), ref)


def test_sampling_is_reproducible_and_matches_transformers_with_the_same_seed(pair):
    ours, hf = pair
    for i, (ids, n) in enumerate(random_prompts(6, seed=2)):
        a = sample(ours, ids, n, temperature=1.2, top_p=0.9, generator=torch.Generator().manual_seed(i))
        b = sample(ours, ids, n, temperature=1.2, top_p=0.9, generator=torch.Generator().manual_seed(i))
        assert torch.equal(a, b)
        torch.manual_seed(i)  # transformers draws from the global generator, one multinomial per step as we do
        ref = hf_generate(hf, ids, n, do_sample=True, temperature=1.2, top_p=0.9, top_k=0)
        assert torch.equal(a, ref)


def test_sampled_frequencies_match_the_filtered_softmax(pair):
    """Chi-square goodness of fit of the first sampled token against softmax(filter(logits))."""
    torch.manual_seed(0)
    model = GPT2(tiny_config()).eval()
    with torch.no_grad():
        model.wte.weight.mul_(3)  # peaked logits (a random tiny model's are almost uniform)
    ids = torch.tensor([[5, 17, 42]])
    logits = model(ids).logits[0, -1].detach()
    probs = torch.softmax(filter_logits(logits, 1.5, 20, 0.9), dim=-1)
    kept = probs > 0
    assert 3 <= kept.sum() <= 20
    draws = 4000
    g = torch.Generator().manual_seed(0)
    # one batch of `draws` copies of the prompt, one generator: each row is an independent draw
    first = sample(model, ids.expand(draws, -1), 1, temperature=1.5, top_k=20, top_p=0.9, generator=g)[:, -1]
    counts = torch.bincount(first, minlength=probs.numel()).double()
    assert counts[~kept].sum() == 0, "sampled a token the filters removed"
    expected = probs[kept].double() * draws
    chi2 = float(((counts[kept] - expected) ** 2 / expected).sum())
    dof = int(kept.sum()) - 1
    # 99.9% critical value of chi-square: Wilson-Hilferty, dof * (1 - 2/(9 dof) + 3.09 sqrt(2/(9 dof)))^3
    critical = dof * (1 - 2 / (9 * dof) + 3.09 * (2 / (9 * dof)) ** 0.5) ** 3
    assert chi2 < critical, f"chi2={chi2:.1f} > {critical:.1f} (dof {dof})"
    # and a skewed sampler would fail: counts drawn from the unfiltered softmax
    wrong = torch.softmax(logits, dim=-1)[kept].double()
    wrong_chi2 = float(((expected - wrong / wrong.sum() * draws) ** 2 / expected).sum())
    assert wrong_chi2 > critical, f"the test cannot tell the unfiltered softmax apart: {wrong_chi2:.1f}"


def test_caller_train_mode_is_restored(pair):
    ours, _ = pair
    ours.train()
    ours.h[0].eval()
    greedy(ours, torch.tensor([[1, 2]]), 2)
    assert ours.training and not ours.h[0].training and ours.h[1].training
    ours.eval()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
    ],
)
def test_bad_sampling_options(pair, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample(pair[0], torch.tensor([[1, 2]]), 3, **kwargs)


@pytest.mark.parametrize("decoder", [greedy, sample, contrastive_search, beam_search],
                         ids=["greedy", "sample", "contrastive", "beam"])
def test_bad_prompts(pair, decoder):
    """check_prompt guards every decoder alike."""
    ours = pair[0]
    with pytest.raises(ValueError, match="empty"):
        decoder(ours, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="n_positions=128"):
        decoder(ours, torch.ones(1, 100, dtype=torch.long), 29)
    decoder(ours, torch.ones(1, 100, dtype=torch.long), 28)  # exactly fits
    with pytest.raises(ValueError, match="LongTensor"):
        decoder(ours, torch.ones(1, 4), 3)
    with pytest.raises(ValueError, match="not left-padded"):
        decoder(ours, torch.ones(2, 4, dtype=torch.long), 3, attention_mask=torch.tensor([[1, 1, 1, 0]] * 2))
    with pytest.raises(ValueError, match="token id 300"):
        decoder(ours, torch.tensor([[1, 300]]), 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        decoder(ours, torch.tensor([[1, 2]]), 0)
    with pytest.raises(ValueError, match="eos_token_id"):
        decoder(ours, torch.tensor([[1, 2]]), 2, eos_token_id=1000)
