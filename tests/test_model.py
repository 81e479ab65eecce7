"""The model's parts against PyTorch builtins, and its behaviour (cache, padding, dropout) against itself."""
import pytest
import torch
import torch.nn.functional as F

from minigpt import GPT2, GPT2Config
from minigpt.attention import CausalSelfAttention, build_attention_mask
from minigpt.block import MLP, Block, LayerNorm, gelu
from minigpt.kv_cache import KVCache
from tests.conftest import tiny_config


def test_layer_norm_equals_torch():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16) * 4 + 2
    ln = LayerNorm(16, eps=1e-5, fused=False)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    expected = F.layer_norm(x, (16,), ln.weight, ln.bias, 1e-5)
    torch.testing.assert_close(ln(x), expected, atol=1e-6, rtol=1e-5)
    ln.fused = True
    torch.testing.assert_close(ln(x), expected, atol=0, rtol=0)


def test_gelu_is_the_tanh_form():
    x = torch.linspace(-8, 8, 1001)
    expected = F.gelu(x, approximate="tanh")
    torch.testing.assert_close(gelu(x, fused=False), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(gelu(x, fused=True), expected)
    assert (F.gelu(x) - expected).abs().max() > 1e-4  # the erf form differs: the test can tell them apart


def test_shapes_of_every_module():
    cfg = tiny_config(n_embd=32, n_head=4)
    x = torch.randn(2, 7, 32)
    cache = KVCache(n_layer=1, capacity=7)
    y = CausalSelfAttention(cfg)(x, cache=cache[0])
    k, v = cache[0].filled()
    assert y.shape == (2, 7, 32) and k.shape == v.shape == (2, 4, 7, 8)
    assert MLP(cfg)(x).shape == (2, 7, 32)
    assert Block(cfg)(x).shape == (2, 7, 32)
    out = GPT2(cfg)(torch.randint(0, 300, (2, 7)), use_cache=True)
    assert out.logits.shape == (2, 7, 300)
    assert out.hidden_states.shape == (2, 7, 32)
    assert len(out.past_key_values) == cfg.n_layer and out.past_key_values.length == 7
    assert out.past_key_values[0].filled()[0].shape == (2, 4, 7, 8)
    assert GPT2(cfg)(torch.randint(0, 300, (2, 7))).past_key_values is None


@pytest.mark.parametrize("with_mask", [False, True])
def test_math_attention_equals_fused(with_mask):
    torch.manual_seed(1)
    cfg = tiny_config(n_embd=32, n_head=4)
    attn = CausalSelfAttention(cfg).eval()
    x = torch.randn(2, 9, 32)
    mask = None
    if with_mask:
        pad = torch.ones(2, 9, dtype=torch.long)
        pad[0, :3] = 0
        mask = build_attention_mask(pad, 9)
    attn.fused = True
    fused = attn(x, mask)
    attn.fused = False
    math = attn(x, mask)
    torch.testing.assert_close(math, fused, atol=1e-6, rtol=1e-5)


def test_whole_model_math_equals_fused():
    torch.manual_seed(2)
    model = GPT2(tiny_config()).eval()
    ids = torch.randint(0, 300, (2, 12))
    fused = model(ids).logits
    slow = model.set_fused(False)(ids).logits
    torch.testing.assert_close(slow, fused, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_cached_steps_equal_one_full_forward(fused):
    torch.manual_seed(3)
    model = GPT2(tiny_config(fused=fused)).eval()
    ids = torch.randint(0, 300, (2, 10))
    full = model(ids).logits
    out = model(ids[:, :4], use_cache=True)
    steps = [out.logits]
    past = out.past_key_values
    for t in range(4, 10):
        out = model(ids[:, t : t + 1], past_key_values=past, use_cache=True)
        past = out.past_key_values
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    # several new tokens at once on top of a cache also follow the causal mask
    out = model(ids[:, :4], use_cache=True)
    rest = model(ids[:, 4:], past_key_values=out.past_key_values).logits
    torch.testing.assert_close(rest, full[:, 4:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_left_padded_batch_equals_each_sequence_alone(fused):
    torch.manual_seed(4)
    model = GPT2(tiny_config(fused=fused)).eval()
    rows = [torch.randint(0, 300, (n,)) for n in (8, 5, 2)]
    T = 8
    ids = torch.full((3, T), 7)  # padding value must not matter
    mask = torch.zeros(3, T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r) :] = r
        mask[i, T - len(r) :] = 1
    batched = model(ids, attention_mask=mask, use_cache=True)
    for i, r in enumerate(rows):
        alone = model(r[None]).logits[0]
        torch.testing.assert_close(batched.logits[i, T - len(r) :], alone, atol=1e-5, rtol=1e-5)
    # and the next step on the cache, with the mask extended by one real token
    nxt = torch.randint(0, 300, (3, 1))
    mask2 = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
    step = model(nxt, attention_mask=mask2, past_key_values=batched.past_key_values).logits
    for i, r in enumerate(rows):
        alone = model(torch.cat([r, nxt[i]])[None]).logits[0, -1]
        torch.testing.assert_close(step[i, 0], alone, atol=1e-5, rtol=1e-5)


def test_right_padding_leaves_real_tokens_unchanged():
    torch.manual_seed(5)
    model = GPT2(tiny_config()).eval()
    ids = torch.randint(0, 300, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    out = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(out[1, :3], model(ids[1:, :3]).logits[0], atol=1e-5, rtol=1e-5)


def test_dropout_active_in_train_and_off_in_eval():
    torch.manual_seed(6)
    model = GPT2(tiny_config(dropout=0.3))
    ids = torch.randint(0, 300, (2, 8))
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)
    model.eval()
    torch.testing.assert_close(model(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_logits_to_keep():
    model = GPT2(tiny_config()).eval()
    ids = torch.randint(0, 300, (2, 8))
    full = model(ids)
    torch.testing.assert_close(model(ids, logits_to_keep=1).logits, full.logits[:, -1:])
    none = model(ids, logits_to_keep=0)
    assert none.logits is None
    torch.testing.assert_close(none.hidden_states, full.hidden_states)


def test_tied_head_and_gpt2_parameter_count():
    model = GPT2(tiny_config())
    ids = torch.randint(0, 300, (1, 3))
    with torch.no_grad():
        model.wte.weight[5] = 0.0
    assert torch.all(model(ids).logits[..., 5] == 0)  # the head reads the embedding matrix
    with torch.device("meta"):
        gpt2 = GPT2(GPT2Config.from_name("gpt2"))
    assert gpt2.num_parameters() == 124_439_808


def test_presets():
    for name, (layers, heads, dim) in {
        "gpt2": (12, 12, 768),
        "gpt2-medium": (24, 16, 1024),
        "gpt2-large": (36, 20, 1280),
        "gpt2-xl": (48, 25, 1600),
    }.items():
        cfg = GPT2Config.from_name(name)
        shape = (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.n_positions)
        assert shape == (layers, heads, dim, 50257, 1024)
    with pytest.raises(ValueError, match="unknown GPT-2 preset"):
        GPT2Config.from_name("gpt3")


def test_config_round_trips_through_hf_json(tmp_path):
    cfg = tiny_config(dropout=0.2)
    cfg.to_json_file(tmp_path / "config.json")
    back = GPT2Config.from_json_file(tmp_path / "config.json")
    assert back == cfg
    from transformers import GPT2Config as HFConfig

    hf = HFConfig.from_pretrained(tmp_path)
    assert (hf.n_embd, hf.n_layer, hf.n_head, hf.vocab_size, hf.resid_pdrop) == (64, 2, 2, 300, 0.2)


def test_bad_config_errors(tmp_path):
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPT2Config(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="n_layer must be a positive integer"):
        GPT2Config(n_layer=0)
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"config.json: not valid JSON \(line 1"):
        GPT2Config.from_json_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text('{"n_embd": 64}')
    with pytest.raises(ValueError, match="missing GPT-2 keys"):
        GPT2Config.from_json_file(tmp_path / "config.json")


def test_config_counts_the_parameters_the_model_has():
    for cfg in (tiny_config(), GPT2Config(vocab_size=300, n_positions=40, n_embd=48, n_layer=3, n_head=4)):
        assert cfg.num_parameters == GPT2(cfg).num_parameters()
    assert GPT2Config.from_name("gpt2").num_parameters == 124_439_808  # the published 124M
    with pytest.raises(ValueError, match=r"over minigpt's limit .* check n_positions=1000000000"):
        GPT2Config(n_positions=10**9)


def test_input_longer_than_n_positions_is_an_error():
    model = GPT2(tiny_config(n_positions=16)).eval()
    with pytest.raises(ValueError, match="longer than this model's n_positions=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    out = model(torch.zeros(1, 16, dtype=torch.long), use_cache=True)  # exactly n_positions is fine
    with pytest.raises(ValueError, match="n_positions=16"):
        model(torch.zeros(1, 1, dtype=torch.long), past_key_values=out.past_key_values)


def test_bad_attention_mask_shape():
    model = GPT2(tiny_config())
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))
