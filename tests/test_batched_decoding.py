"""Batched decoding: a left-padded batch of prompts against transformers' generate on the same batch, and
against each prompt decoded alone. CPU, fp32; every compared path is checked for clear margins (tests/_margins)."""
from __future__ import annotations

import pytest
import torch

from decoding import beam_search, contrastive_search, greedy, sample
from minigpt.kv_cache import KVCache

from ._margins import MIN_MARGIN, assert_stable, greedy_margin
from .conftest import tiny_pair

DEVICE = torch.device("cpu")  # the reference comparisons are about the CPU fp32 path
BEAM = dict(num_beams=3, length_penalty=0.6, no_repeat_ngram_size=3)


@pytest.fixture(scope="module")
def pair():
    ours, hf = tiny_pair(0)
    return ours.to(DEVICE), hf.to(DEVICE)


def left_padded(B: int, seed: int, pad: int, vocab: int = 300, longest: int = 9):
    """B random prompts of 1..longest tokens (the first one of the longest length), left-padded with `pad`:
    (ids (B, T), attention_mask (B, T), the prompts as lists)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [longest] + [int(torch.randint(1, longest + 1, (1,), generator=g)) for _ in range(B - 1)]
    prompts = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]
    ids = torch.full((B, longest), pad, dtype=torch.long)
    mask = torch.zeros((B, longest), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, longest - len(p):] = torch.tensor(p)
        mask[b, longest - len(p):] = 1
    return ids.to(DEVICE), mask.to(DEVICE), prompts


def hf_generate(hf, ids, mask, n, eos, **kw):
    return hf.generate(ids, attention_mask=mask, max_new_tokens=n, eos_token_id=eos,
                       pad_token_id=0 if eos is None else eos, **kw)


def reachable_eos(free: torch.Tensor, T: int) -> int:
    """An eos the decoder really emits: the 3rd new token of row 0 of its run without eos."""
    return int(free[0, T + 2])


CASES = [(1, 11), (3, 12), (5, 13), (8, 14)]  # (batch size, seed)


@pytest.mark.parametrize("B,seed", CASES)
def test_greedy_batch_matches_transformers(pair, B, seed):
    ours, hf = pair
    ids, mask, _ = left_padded(B, seed, pad=0)
    n = 12
    eos = reachable_eos(greedy(ours, ids, n, attention_mask=mask), ids.size(1))
    ids = ids.masked_fill(mask == 0, eos)  # the tokenizer pads with eos
    for e in (None, eos):
        got = greedy(ours, ids, n, attention_mask=mask, eos_token_id=e)
        assert greedy_margin(ours, got, ids.size(1), mask, e) > MIN_MARGIN  # no near-tie another kernel could flip
        assert torch.equal(got, hf_generate(hf, ids, mask, n, e, do_sample=False))
    assert got[0, -1] == eos, "eos never ended row 0: the eos case was not exercised"


@pytest.mark.parametrize("B,seed", CASES[:2] + CASES[3:])
def test_contrastive_batch_matches_transformers(pair, B, seed):
    ours, hf = pair
    ids, mask, _ = left_padded(B, seed, pad=0)
    n = 10
    eos = reachable_eos(contrastive_search(ours, ids, n, attention_mask=mask), ids.size(1))
    ids = ids.masked_fill(mask == 0, eos)
    for e in (None, eos):
        got = assert_stable(lambda: contrastive_search(ours, ids, n, attention_mask=mask, eos_token_id=e), ours)
        assert torch.equal(got, hf_generate(hf, ids, mask, n, e, penalty_alpha=0.6, top_k=4))
    assert got[0, -1] == eos, "eos never ended row 0: the eos case was not exercised"


@pytest.mark.parametrize("num_return_sequences", [1, 3])
@pytest.mark.parametrize("B,seed", CASES[1:3])
def test_beam_batch_matches_transformers(pair, B, seed, num_return_sequences):
    ours, hf = pair
    ids, mask, _ = left_padded(B, seed, pad=0)
    n = 10
    kw = dict(BEAM, num_return_sequences=num_return_sequences)
    free = beam_search(ours, ids, n, attention_mask=mask, **kw)
    eos = int(free[:, ids.size(1):].flatten().mode().values)  # the most frequent new token ends hypotheses
    ids = ids.masked_fill(mask == 0, eos)
    got = assert_stable(lambda: beam_search(ours, ids, n, attention_mask=mask, eos_token_id=eos, **kw), ours)
    assert got.shape[0] == B * num_return_sequences
    assert torch.equal(got, hf_generate(hf, ids, mask, n, eos, **kw))
    assert bool((got[:, ids.size(1):] == eos).any()), "no hypothesis ended with eos: the case was not exercised"
    # without eos, the padding token is an ordinary token that transformers counts in n-grams (we do not),
    # so that comparison runs without n-gram blocking
    kw["no_repeat_ngram_size"] = 0
    got = assert_stable(lambda: beam_search(ours, ids, n, attention_mask=mask, **kw), ours)
    assert torch.equal(got, hf_generate(hf, ids, mask, n, None, **kw))


def assert_row_is_alone(row: torch.Tensor, alone: torch.Tensor, T: int, length: int, eos: int) -> None:
    """row (T + n,) of a batch vs alone (L,) = the prompt of `length` tokens decoded alone: same tokens, then
    only eos (the batch pads rows that ended early)."""
    start = T - length
    assert torch.equal(row[start : start + alone.numel()], alone)
    assert bool((row[start + alone.numel():] == eos).all())


@pytest.mark.parametrize("name", ["greedy", "contrastive", "beam"])
def test_a_batch_gives_each_row_what_the_row_gives_alone(pair, name):
    ours, _ = pair
    eos = 17
    ids, mask, prompts = left_padded(6, seed=21, pad=eos)
    n, T = 12, ids.size(1)
    decoder, kw = {"greedy": (greedy, {}), "contrastive": (contrastive_search, {}),
                   "beam": (beam_search, dict(BEAM, num_return_sequences=2))}[name]
    batch = assert_stable(lambda: decoder(ours, ids, n, attention_mask=mask, eos_token_id=eos, **kw), ours)
    R = kw.get("num_return_sequences", 1)
    for b, p in enumerate(prompts):
        alone = assert_stable(lambda: decoder(ours, torch.tensor([p], device=DEVICE), n, eos_token_id=eos, **kw),
                              ours)
        for r in range(R):
            assert_row_is_alone(batch[b * R + r], alone[r], T, len(p), eos)


def test_a_sampled_row_with_its_own_generator_is_the_row_alone(pair):
    ours, _ = pair
    eos = 17
    ids, mask, prompts = left_padded(5, seed=22, pad=eos)
    n, T, seed = 15, ids.size(1), 100

    def gens():
        return [torch.Generator(device=DEVICE).manual_seed(seed + k) for k in range(len(prompts))]

    batch = sample(ours, ids, n, temperature=1.2, top_p=0.9, generator=gens(), attention_mask=mask,
                   eos_token_id=eos)
    assert torch.equal(batch, sample(ours, ids, n, temperature=1.2, top_p=0.9, generator=gens(),
                                     attention_mask=mask, eos_token_id=eos)), "draws are not reproducible"
    for k, p in enumerate(prompts):  # alone, the row runs other kernels (no mask): a draw must not sit on a boundary
        alone = assert_stable(lambda: sample(ours, torch.tensor([p], device=DEVICE), n, temperature=1.2, top_p=0.9,
                                             generator=[torch.Generator(device=DEVICE).manual_seed(seed + k)],
                                             eos_token_id=eos), ours)
        assert_row_is_alone(batch[k], alone[0], T, len(p), eos)
    # the rows draw different streams: not every row continues the same way
    assert len({tuple(r[T:].tolist()) for r in batch}) > 1


def test_sampling_a_batch_with_the_global_seed_matches_transformers(pair):
    ours, hf = pair
    eos = 17
    ids, mask, _ = left_padded(4, seed=23, pad=eos)
    def draw():
        torch.manual_seed(5)
        return sample(ours, ids, 12, temperature=1.2, top_p=0.9, attention_mask=mask, eos_token_id=eos)

    got = assert_stable(draw, ours)  # no draw on a top-p or CDF boundary that another kernel could move
    torch.manual_seed(5)
    ref = hf_generate(hf, ids, mask, 12, eos, do_sample=True, temperature=1.2, top_p=0.9, top_k=0)
    assert torch.equal(got, ref)


def test_bad_batches_are_refused_in_one_line(pair):
    ours, _ = pair
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match="not left-padded"):
        greedy(ours, ids, 3, attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match="not left-padded"):
        beam_search(ours, ids, 3, attention_mask=torch.tensor([[0, 0, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match="shaped like input_ids"):
        contrastive_search(ours, ids, 3, attention_mask=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="3 generators for 2 prompts"):
        sample(ours, ids, 3, generator=[torch.Generator() for _ in range(3)])


def test_a_generator_on_another_device_is_refused_in_one_line():
    """A model on another device (here 'meta', which has no data: the check comes before any computation)."""
    from minigpt import GPT2

    from .conftest import tiny_config

    elsewhere = GPT2(tiny_config()).to("meta")
    with pytest.raises(ValueError, match="generator is on cpu but the model is on meta"):
        sample(elsewhere, torch.tensor([[1, 2]]), 3, generator=torch.Generator())


def test_keep_rows_copies_each_groups_choice_within_the_group():
    cache = KVCache(n_layer=1, capacity=4)
    k = torch.arange(2 * 1 * 3 * 1, dtype=torch.float).view(2, 1, 3, 1)  # 2 prompts, 1 head, 3 positions
    cache[0].append(k, -k)
    rows = cache.repeat_rows(3)  # (6, 1, 3, 1): rows 0-2 hold prompt 0, rows 3-5 prompt 1
    assert torch.equal(rows[0].filled()[0][:3], k[:1].expand(3, -1, -1, -1))
    keys = rows[0].keys
    keys[:, 0, 2, 0] = torch.arange(6, dtype=torch.float) * 10  # the rows differ at position 2
    rows.keep_rows(torch.tensor([2, 0]), position=2)
    assert keys[:, 0, 2, 0].tolist() == [20, 20, 20, 30, 30, 30]
    assert torch.equal(rows[0].values[:, 0, :2], -keys[:, 0, :2])  # other positions untouched
