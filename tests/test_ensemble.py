"""MBR over the beam n-best and the candidate ensemble (the decoder flags: test_decoding_flags.py)."""
from __future__ import annotations

import pytest
import torch
from sacrebleu.metrics import CHRF

from decoding import beam_search, contrastive_search, sample
from decoding.ensemble import candidate_ensemble
from decoding.mbr import mbr_decode, trim_after_eos

from ._margins import assert_stable
from .conftest import tiny_pair

WORDS = [f"w{i % 37}{'aeiou'[i % 5]}" for i in range(300)]  # a readable "text" for every tiny-vocabulary id

def decode(ids: list[int]) -> str:
    return " ".join(WORDS[i] for i in ids)

def brute_force_mbr(texts: list[str]) -> int:
    chrf = CHRF()
    means = [sum(chrf.sentence_score(t, [o]).score for j, o in enumerate(texts) if j != i) / (len(texts) - 1)
             for i, t in enumerate(texts)]
    return max(range(len(texts)), key=means.__getitem__)

@pytest.fixture(scope="module")
def model():
    return tiny_pair(0)[0]

PROMPT = torch.tensor([[11, 42, 7, 99]])

def test_mbr_decode_picks_the_brute_force_choice_among_the_beam_nbest(model):
    eos = 119
    got = mbr_decode(model, PROMPT, 12, decode, num_beams=4, num_candidates=4, eos_token_id=eos)
    nbest = beam_search(model, PROMPT, 12, num_beams=4, num_return_sequences=4, eos_token_id=eos)
    rows = [trim_after_eos(r, 4, eos) for r in nbest]
    texts = [decode([t for t in r[0, 4:].tolist() if t != eos]) for r in rows]
    assert torch.equal(got, rows[brute_force_mbr(texts)])

def test_ensemble_pools_every_decoder_and_picks_the_mbr_choice(model):
    class Tok:  # a tokenizer-like object works as well as a function
        decode = staticmethod(decode)

    choice, pools = candidate_ensemble(model, PROMPT, 10, Tok(), num_samples=3, alphas=(0.3, 0.7), num_beams=3,
                                       generator=torch.Generator().manual_seed(0), return_candidates=True)
    pool = pools[0]  # the one prompt's candidates
    assert len(pool) == 3 + 2 + 3
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        assert torch.equal(pool[i][0], sample(model, PROMPT, 10, temperature=1.2, top_p=0.9, generator=g))
    assert torch.equal(pool[3][0], contrastive_search(model, PROMPT, 10, alpha=0.3))
    assert torch.equal(pool[4][0], contrastive_search(model, PROMPT, 10, alpha=0.7))
    nbest = beam_search(model, PROMPT, 10, num_beams=3, num_return_sequences=3)
    assert all(torch.equal(pool[5 + r][0], nbest[r : r + 1]) for r in range(3))
    texts = [text for _, text, _ in pool]
    assert texts[0] == decode(pool[0][0][0, 4:].tolist())
    assert torch.equal(choice, pool[brute_force_mbr(texts)][0])

def test_a_batch_gives_each_prompt_what_it_gets_alone(model):
    """mbr_decode and the ensemble on two left-padded prompts (one batched run per decoder) against each prompt
    alone; the sampling generators are one per prompt, so prompt p's samples do not depend on the other."""
    eos = 119
    prompts = [[11, 42, 7, 99], [5, 250]]
    ids = torch.tensor([[11, 42, 7, 99], [eos, eos, 5, 250]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    runs = {
        "mbr": lambda x, m, g: mbr_decode(model, x, 10, decode, num_beams=3, num_candidates=3, eos_token_id=eos,
                                          attention_mask=m),
        "ensemble": lambda x, m, g: candidate_ensemble(model, x, 10, decode, num_samples=2, alphas=(0.5,),
                                                       num_beams=2, generator=g, eos_token_id=eos,
                                                       attention_mask=m),
    }
    for name, run in runs.items():  # each side checked for near-ties: the two run other batch shapes
        batch = assert_stable(lambda: run(ids, mask, gens()), model)
        for p, prompt in enumerate(prompts):
            alone = assert_stable(lambda: run(torch.tensor([prompt]), None, [gens()[p]]), model)[0]
            start = ids.size(1) - len(prompt)
            assert torch.equal(batch[p, start : start + alone.numel()], alone), name
            assert bool((batch[p, start + alone.numel():] == eos).all()), name

def test_trim_after_eos():
    row = torch.tensor([1, 2, 5, 3, 5, 5])
    assert trim_after_eos(row, 2, 5).tolist() == [[1, 2, 5]]
    assert trim_after_eos(row, 1, 9).tolist() == [row.tolist()]

def test_mbr_needs_two_candidates(model):
    with pytest.raises(ValueError, match="num_candidates >= 2"):
        mbr_decode(model, PROMPT, 5, decode, num_beams=1, num_candidates=1)
    with pytest.raises(ValueError, match="at least 2"):
        candidate_ensemble(model, PROMPT, 5, decode, num_samples=1, alphas=(), num_beams=0)
