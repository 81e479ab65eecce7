"""Pooling and the GPT-2 classifier (tasks/heads.py): `last` finds the last real token under left and right
padding, `mean` ignores padding, and the classifier equals transformers' GPT2ForSequenceClassification."""
from __future__ import annotations

import pytest
import torch

from minigpt import GPT2
from tasks.classify import collate
from tasks.heads import GPT2Classifier, last_token_index, pool, pool_last, pool_mean
from tests.conftest import tiny_config, tiny_pair

LENGTHS = [5, 2, 7, 1]  # real tokens per row; the longest row has no padding


def padded_mask(lengths: list[int], side: str) -> torch.Tensor:
    T = max(lengths)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        if side == "right":
            mask[b, :n] = 1
        else:
            mask[b, T - n:] = 1
    return mask


@pytest.mark.parametrize("side", ["right", "left"])
def test_last_picks_the_last_real_token(side):
    torch.manual_seed(0)
    mask = padded_mask(LENGTHS, side)
    hidden = torch.randn(len(LENGTHS), mask.size(1), 3)
    expected_index = [n - 1 if side == "right" else mask.size(1) - 1 for n in LENGTHS]
    assert last_token_index(mask).tolist() == expected_index
    for b in range(len(LENGTHS)):  # per row: the last position whose mask is 1
        real = mask[b].nonzero().squeeze(1)
        assert torch.equal(pool_last(hidden, mask)[b], hidden[b, real[-1]])


@pytest.mark.parametrize("side", ["right", "left"])
def test_mean_ignores_padding(side):
    torch.manual_seed(1)
    mask = padded_mask(LENGTHS, side)
    hidden = torch.randn(len(LENGTHS), mask.size(1), 3)
    hidden_with_garbage = hidden.masked_fill(mask.unsqueeze(-1) == 0, 1e4)  # padding positions hold junk
    pooled = pool_mean(hidden_with_garbage, mask)
    for b in range(len(LENGTHS)):
        torch.testing.assert_close(pooled[b], hidden[b][mask[b].bool()].mean(dim=0))


def test_pooling_errors_are_clear():
    mask = torch.tensor([[1, 1], [0, 0]])
    with pytest.raises(ValueError, match="no real token"):
        pool_last(torch.zeros(2, 2, 3), mask)
    with pytest.raises(ValueError, match="no real token"):
        pool_mean(torch.zeros(2, 2, 3), mask)
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(torch.zeros(1, 2, 3), torch.ones(1, 2), "max")


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_same_logits_alone_left_or_right_padded(pooling):
    """A row's logits do not depend on its batch-mates or the padding side (model positions count real tokens)."""
    torch.manual_seed(2)
    model = GPT2Classifier(GPT2(tiny_config()), num_labels=3, pooling=pooling).eval()
    rows = [(torch.randint(0, 300, (n,)).tolist(), 0) for n in LENGTHS]
    alone = torch.cat([model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).logits
                       for ids, _ in rows])
    for side in ("right", "left"):
        batch = collate(rows, pad_id=299, padding_side=side)
        torch.testing.assert_close(model(batch["input_ids"], batch["attention_mask"]).logits, alone,
                                   atol=1e-5, rtol=1e-5)


def test_classifier_equals_transformers_sequence_classification():
    """Last-token pooling + a linear head = GPT2ForSequenceClassification (its score layer has no bias)."""
    from transformers import GPT2ForSequenceClassification

    ours_body, hf_lm = tiny_pair(seed=3)
    pad = 0
    hf_lm.config.num_labels, hf_lm.config.pad_token_id = 4, pad
    hf = GPT2ForSequenceClassification(hf_lm.config).eval()
    hf.transformer.load_state_dict(hf_lm.transformer.state_dict())
    ours = GPT2Classifier(ours_body, num_labels=4, pooling="last").eval()
    with torch.no_grad():
        ours.head.proj.weight.copy_(hf.score.weight)
        ours.head.proj.bias.zero_()
    torch.manual_seed(3)
    rows = [(torch.randint(1, 300, (n,)).tolist(), 0) for n in LENGTHS]  # real ids never equal the pad id
    batch = collate(rows, pad_id=pad, padding_side="right")
    with torch.no_grad():
        expected = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = ours(batch["input_ids"], batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_classifier_does_not_compute_the_lm_head(monkeypatch):
    """logits_to_keep=0: the classifier never builds the (B, T, vocab) logits."""
    model = GPT2Classifier(GPT2(tiny_config()), num_labels=2).eval()
    calls = []
    original = model.body.forward

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out.logits)
        return out
    monkeypatch.setattr(model.body, "forward", spy)
    model(torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long))
    assert calls == [None]
