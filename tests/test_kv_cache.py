"""The KV cache (minigpt/kv_cache.py): cached steps give what one full forward gives, however the buffers grow."""
import pytest
import torch

from minigpt import GPT2
from minigpt.kv_cache import KVCache
from minigpt.prefix import PrefixTuning
from tests.conftest import tiny_config


def step_logits(model, ids, start, past):
    """Logits of ids[:, :start] in one call, then of each later token alone, passing `past` along."""
    out = model(ids[:, :start], past_key_values=past, use_cache=True)
    steps = [out.logits]
    for t in range(start, ids.size(1)):
        past = out.past_key_values  # the same KVCache object, written into
        out = model(ids[:, t : t + 1], past_key_values=past, use_cache=True)
        steps.append(out.logits)
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("capacity", [10, 3])  # 3: the buffers must grow twice on the way
def test_preallocated_steps_equal_one_full_forward_and_the_models_own_cache(fused, capacity):
    torch.manual_seed(3)
    model = GPT2(tiny_config(fused=fused)).eval()
    ids = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache(model.config.n_layer, capacity)
        preallocated = step_logits(model, ids, 4, cache)
        own = step_logits(model, ids, 4, None)  # use_cache=True without a cache: the model makes one (capacity 4)
    assert cache.length == 10 and len(cache) == model.config.n_layer
    torch.testing.assert_close(preallocated, full, atol=1e-5, rtol=1e-5)
    # not bitwise: the buffers differ in size, so the filled parts are views with other strides, and a matmul may
    # pick another kernel (and summation order) for another layout (1.5e-7 apart on an AMD EPYC)
    torch.testing.assert_close(preallocated, own, atol=1e-6, rtol=1e-5)


def test_a_list_of_pairs_is_not_a_cache():
    model = GPT2(tiny_config()).eval()
    ids = torch.randint(0, 300, (1, 4))
    cache = model(ids, use_cache=True).past_key_values
    assert isinstance(cache, KVCache) and cache.length == 4
    pairs = [layer.filled() for layer in cache.layers]
    with pytest.raises(ValueError, match="past_key_values must be a minigpt KVCache"):
        model(ids[:, :1], past_key_values=pairs)


def test_row_operations():
    torch.manual_seed(0)
    cache = KVCache(n_layer=1, capacity=6)
    k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)  # one row, 2 heads, 3 positions, d_head 4
    cache[0].append(k, v)
    rows = cache.repeat_rows(3)
    keys, values = rows[0].filled()
    assert keys.shape == (3, 2, 3, 4) and torch.equal(keys, k.expand(3, -1, -1, -1))
    assert torch.equal(values, v.expand(3, -1, -1, -1))

    new_k, new_v = torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)  # each row decides position 3 differently
    rows[0].append(new_k, new_v)
    rows.keep_rows(torch.tensor([1]), position=3)  # one group of 3 rows: row 1 chosen
    keys, values = rows[0].filled()
    assert torch.equal(keys[:, :, 3], new_k[1, :, 0].expand(3, -1, -1))  # row 1's choice is every row's now
    assert torch.equal(values[:, :, 3], new_v[1, :, 0].expand(3, -1, -1))
    assert torch.equal(keys[:, :, :3], k.expand(3, -1, -1, -1))  # the context is untouched

    before = rows[0].filled()[0].clone()
    rows.reorder_rows(torch.tensor([2, 2, 0]))
    after = rows[0].filled()[0]
    assert torch.equal(after, before[[2, 2, 0]]) and rows.length == 4


def test_prefix_tuning_fills_an_empty_cache_with_its_prefix_first():
    torch.manual_seed(4)
    model = PrefixTuning(GPT2(tiny_config()).eval(), n_prefix=5, hidden=16).eval()
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache(model.config.n_layer, capacity=8)
        got = step_logits(model, ids, 3, cache)
    assert cache.length == 5 + 9  # the prefix, then the real tokens
    torch.testing.assert_close(got, full, atol=1e-5, rtol=0)
