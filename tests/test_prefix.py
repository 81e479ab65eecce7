"""Prefix-tuning (minigpt/prefix.py): the attention over prefix + tokens, transformers with the same
past_key_values, the KV cache through the wrapper, and that only the prefix trains."""
import math

import pytest
import torch

from minigpt import GPT2
from minigpt.attention import CausalSelfAttention
from minigpt.kv_cache import KVCache
from minigpt.prefix import PrefixTuning
from tests.conftest import tiny_config, tiny_pair

P = 5  # prefix length used throughout


def ids_batch(seed=3, B=2, T=9):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 300, (B, T), generator=g)


def prefix_model(use_mlp=True, seed=4):
    ours, hf = tiny_pair(seed=1)
    torch.manual_seed(seed)
    return PrefixTuning(ours, n_prefix=P, hidden=32, use_mlp=use_mlp).eval(), hf


@pytest.mark.parametrize("fused", [True, False])
def test_attention_with_prefix_equals_attention_over_concatenated_keys_values(fused):
    torch.manual_seed(0)
    attn = CausalSelfAttention(tiny_config(fused=fused)).eval()
    B, T, C, H, D = 2, 6, 64, 2, 32
    x = torch.randn(B, T, C)
    prefix_k, prefix_v = torch.randn(B, H, P, D), torch.randn(B, H, P, D)
    cache = KVCache(n_layer=1, capacity=P)  # capacity P: the real keys make the buffer grow
    cache[0].append(prefix_k, prefix_v)
    y = attn(x, cache=cache[0])
    k_all, v_all = cache[0].filled()

    # by hand: every query sees all P prefix keys and the real keys up to itself
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    keys, values = torch.cat((prefix_k, k), dim=2), torch.cat((prefix_v, v), dim=2)  # (B, H, P + T, D)
    scores = q @ keys.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, P + T)
    visible = torch.tensor([[j < P + i + 1 for j in range(P + T)] for i in range(T)])
    probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    expected = attn.c_proj((probs @ values).transpose(1, 2).reshape(B, T, C))
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k_all, keys, atol=0, rtol=0)
    torch.testing.assert_close(v_all, values, atol=0, rtol=0)
    assert probs[..., :P].sum() > 0.1 * B * H * T  # the prefix really carries attention mass


@pytest.mark.parametrize("use_mlp", [True, False])
def test_logits_equal_transformers_given_the_same_prefix_key_values(use_mlp):
    from transformers import DynamicCache

    model, hf = prefix_model(use_mlp)
    ids = ids_batch()
    B, T = ids.shape
    with torch.no_grad():
        prefix = [(k.clone(), v.clone()) for k, v in model.prefix_key_values(B)]
        assert prefix[0][0].shape == (B, 2, P, 32)
        got = model(ids).logits
        # transformers would start the positions at P (the cache length); ours start the real tokens at 0
        positions = torch.arange(T).expand(B, T)
        expected = hf(ids, past_key_values=DynamicCache.from_legacy_cache(prefix),
                      attention_mask=torch.ones(B, P + T), position_ids=positions).logits
        plain = model.model(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (got - plain).abs().max() > 1e-3  # the prefix changes the output


def test_mlp_and_key_value_layout_equal_peft_prefix_tuning():
    """Same P' and MLP weights -> the same per-layer (k, v) as peft's get_prompt, and the same logits once we
    also start the real tokens at position n_prefix, as peft (through transformers) does."""
    peft = pytest.importorskip("peft")
    model, hf = prefix_model()
    config = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P, prefix_projection=True,
                                     encoder_hidden_size=32)
    ref = peft.get_peft_model(hf, config).eval()
    encoder = ref.prompt_encoder["default"]
    ids = ids_batch()
    B, T = ids.shape
    with torch.no_grad():
        encoder.embedding.weight.copy_(model.prefix_embedding)
        for i in (0, 2):  # Linear, Tanh, Linear
            encoder.transform[i].weight.copy_(model.mlp[i].weight)
            encoder.transform[i].bias.copy_(model.mlp[i].bias)
        expected_kv = ref.get_prompt(batch_size=B).to_legacy_cache()
        for (k, v), (ref_k, ref_v) in zip(model.prefix_key_values(B), expected_kv, strict=True):
            torch.testing.assert_close(k, ref_k, atol=1e-6, rtol=0)  # keys first, then values
            torch.testing.assert_close(v, ref_v, atol=1e-6, rtol=0)
        expected = ref(input_ids=ids).logits
        shifted = model(ids, position_ids=torch.arange(P, P + T).expand(B, T)).logits
        ours = model(ids).logits
    torch.testing.assert_close(shifted, expected, atol=1e-5, rtol=0)
    assert (ours - expected).abs().max() > 1e-2  # our default (real tokens from 0) is a real difference


def test_left_padded_batch_equals_transformers_and_each_row_alone():
    from transformers import DynamicCache

    model, hf = prefix_model()
    ids = ids_batch(B=2, T=8)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, :3] = 0  # row 1: 3 pads on the left
    with torch.no_grad():
        got = model(ids, attention_mask=mask).logits
        prefix = [(k.clone(), v.clone()) for k, v in model.prefix_key_values(2)]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        full_mask = torch.cat((torch.ones(2, P, dtype=torch.long), mask), dim=1)
        expected = hf(ids, past_key_values=DynamicCache.from_legacy_cache(prefix),
                      attention_mask=full_mask, position_ids=positions).logits
        alone = model(ids[1:, 3:]).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1, 3:], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mask_form", [None, "real tokens", "with prefix"])
def test_step_by_step_with_the_cache_equals_one_full_forward(mask_form):
    model, _ = prefix_model()
    ids = ids_batch(B=2, T=10)
    with torch.no_grad():
        full = model(ids).logits  # (B, T, V)
        start = 4
        mask = None if mask_form is None else torch.ones(2, start + (P if mask_form == "with prefix" else 0))
        out = model(ids[:, :start], attention_mask=mask, use_cache=True)
        torch.testing.assert_close(out.logits, full[:, :start], atol=1e-5, rtol=0)
        for t in range(start, ids.size(1)):
            assert out.past_key_values.length == P + t  # the returned cache holds the prefix too
            if mask is not None:
                mask = torch.cat((mask, torch.ones(2, 1)), dim=1)  # a decoder's usual bookkeeping
            out = model(ids[:, t : t + 1], attention_mask=mask, past_key_values=out.past_key_values,
                        use_cache=True, logits_to_keep=1)
            torch.testing.assert_close(out.logits[:, -1], full[:, t], atol=1e-5, rtol=0)


def test_greedy_decoding_with_cache_equals_without():
    model, _ = prefix_model()
    ids = ids_batch(B=1, T=4)
    with torch.no_grad():
        slow = ids
        for _ in range(6):
            nxt = model(slow).logits[:, -1].argmax(-1, keepdim=True)
            slow = torch.cat((slow, nxt), dim=1)
        out = model(ids, use_cache=True)
        fast = ids
        for _ in range(6):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            fast = torch.cat((fast, nxt), dim=1)
            out = model(nxt, past_key_values=out.past_key_values, use_cache=True)
    assert torch.equal(slow, fast)


@pytest.mark.parametrize("use_mlp", [True, False])
def test_only_prefix_parameters_get_gradients_and_training_lowers_the_loss(use_mlp):
    model, _ = prefix_model(use_mlp)
    model.train()
    ids = ids_batch(B=4, T=12)
    mlp_names = {"prefix_embedding", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}
    expected = mlp_names if use_mlp else {"prefix"}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(30):
        logits = model(ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 300), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        if not losses:
            assert {n for n, p in model.named_parameters() if p.grad is not None} == expected
            assert all(p.grad is None for p in model.model.parameters())
        opt.step()
        losses.append(loss.item())
    # a tiny random GPT-2 is hard to steer through the prefix alone; measured: 5.74 -> 5.30 (MLP), 5.73 -> 5.57
    assert losses[-1] < losses[0] - 0.1, losses


def test_fold_mlp_and_the_prefix_state_dict():
    model, _ = prefix_model()
    ids = ids_batch()
    with torch.no_grad():
        before = model(ids).logits
    saved = model.prefix_state_dict()
    assert set(saved) == {"prefix_embedding", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}
    fresh, _ = prefix_model(seed=9)
    with torch.no_grad():
        assert (fresh(ids).logits - before).abs().max() > 1e-3
        fresh.load_prefix_state_dict(saved)
        torch.testing.assert_close(fresh(ids).logits, before, atol=0, rtol=0)
        model.fold_mlp()
        assert set(model.prefix_state_dict()) == {"prefix"}
        torch.testing.assert_close(model(ids).logits, before, atol=1e-6, rtol=0)
    assert model.prefix.requires_grad
    with pytest.raises(ValueError, match=r"missing keys: prefix \| unexpected keys: .*prefix_embedding"):
        model.load_prefix_state_dict(saved)


def test_bad_input_gets_clear_errors():
    model, _ = prefix_model()
    ids = ids_batch(B=2, T=6)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 7\), expected \(2, 6\) .* or \(2, 11\)"):
        model(ids, attention_mask=torch.ones(2, 7))
    plain_cache = model.model(ids[:, :2], use_cache=True).past_key_values  # a cache without the prefix
    with pytest.raises(ValueError, match="hold 2 positions, fewer than the 5 prefix positions"):
        model(ids, past_key_values=plain_cache)
    with pytest.raises(ValueError, match="n_prefix must be a positive integer, got 0"):
        PrefixTuning(model.model, n_prefix=0)
    with pytest.raises(TypeError, match="wraps a minigpt GPT2, got Linear"):
        PrefixTuning(torch.nn.Linear(2, 2))
    assert model.config is model.model.config and isinstance(model.model, GPT2)
