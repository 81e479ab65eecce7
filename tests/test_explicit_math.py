"""`GPT2Config(fused=False)` / `model.set_fused(False)` (`--explicit-math`): the plain equations give the fused
path's numbers, within floating-point tolerance, for the model, every decoder and a training step; and the switch
reaches every module, of wrapped models too."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from decoding import beam_search, contrastive_search, greedy, sample
from minigpt import GPT2
from minigpt.lora import inject_adapters
from minigpt.prefix import PrefixTuning
from training.optimization import build_optimizer

from ._margins import MIN_MARGIN, assert_stable, greedy_margin
from .conftest import tiny_config


def fused_and_explicit(seed: int = 0, **kw) -> tuple[GPT2, GPT2]:
    """Two copies of one random tiny GPT2: the fused kernels, and the explicit equations."""
    torch.manual_seed(seed)
    fused = GPT2(tiny_config(**kw)).eval()
    return fused, copy.deepcopy(fused).set_fused(False)


def fused_flags(model: torch.nn.Module) -> set[bool]:
    return {m.fused for m in model.modules() if hasattr(m, "fused")}


def left_padded(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts, the second left-padded by 3: ids (2, 8), mask (2, 8)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 300, (2, 8), generator=g)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, :3] = 0
    return ids, mask


def test_explicit_model_gives_the_fused_logits_hidden_states_and_cached_steps():
    fused, explicit = fused_and_explicit()
    assert fused_flags(fused) == {True} and fused_flags(explicit) == {False} and not explicit.config.fused
    ids, mask = left_padded()
    with torch.no_grad():
        for attention_mask in (None, mask):
            a, b = fused(ids, attention_mask=attention_mask), explicit(ids, attention_mask=attention_mask)
            torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(b.hidden_states, a.hidden_states, atol=1e-5, rtol=1e-5)
        # the cache: a prefill of 5 positions, then one token at a time, with the padding mask
        steps = []
        for model in (fused, explicit):
            out = model(ids[:, :5], attention_mask=mask[:, :5], use_cache=True)
            logits = [out.logits]
            for t in range(5, 8):
                out = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], past_key_values=out.past_key_values,
                            use_cache=True)
                logits.append(out.logits)
            steps.append(torch.cat(logits, dim=1))
    torch.testing.assert_close(steps[1], steps[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(steps[0][0], fused(ids).logits[0], atol=1e-5, rtol=1e-5)  # row 0 has no padding


def test_every_decoder_gives_the_same_tokens_with_the_explicit_math():
    fused, explicit = fused_and_explicit(seed=2)
    ids, mask = left_padded(seed=3)
    n, eos = 12, 5

    got = greedy(explicit, ids, n, eos, attention_mask=mask)
    want = greedy(fused, ids, n, eos, attention_mask=mask)
    assert greedy_margin(fused, want, ids.size(1), mask, eos) > MIN_MARGIN  # no near-tie another kernel could flip
    assert torch.equal(got, want)

    def sampled(model):
        generators = [torch.Generator().manual_seed(7 + b) for b in range(2)]
        return sample(model, ids, n, temperature=0.9, top_p=0.8, generator=generators, eos_token_id=eos,
                      attention_mask=mask)

    assert torch.equal(sampled(explicit), assert_stable(lambda: sampled(fused), fused))

    def contrastive(model):
        return contrastive_search(model, ids, n, top_k=4, alpha=0.6, eos_token_id=eos, attention_mask=mask)

    assert torch.equal(contrastive(explicit), assert_stable(lambda: contrastive(fused), fused))

    def beams(model):
        return beam_search(model, ids, n, num_beams=3, num_return_sequences=2, eos_token_id=eos, attention_mask=mask)

    assert torch.equal(beams(explicit), assert_stable(lambda: beams(fused), fused))


def training_step(model: GPT2, explicit_math: bool, ids: torch.Tensor):
    """One step with dropout on, AdamW as the trainer builds it: (loss, gradients, parameters after AdamW)."""
    model.train()
    opt = build_optimizer(model, "adamw", 1e-2, 0.1, explicit_math=explicit_math)
    torch.manual_seed(11)  # the same dropout masks: both forms draw u ~ U[0, 1) in the same order
    logits = model(ids[:, :-1]).logits
    loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    return loss.detach(), grads, [p.detach() for p in model.parameters()]


def test_a_training_step_gives_the_same_loss_gradients_and_update():
    fused, explicit = fused_and_explicit(seed=5, dropout=0.1)
    ids = torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(1))
    loss_a, grads_a, params_a = training_step(fused, False, ids)  # fused kernels, torch's fused AdamW
    loss_b, grads_b, params_b = training_step(explicit, True, ids)  # the equations, AdamW one parameter a time
    torch.testing.assert_close(loss_b, loss_a, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    # Adam's first step moves each entry by ~lr * g / (|g| + eps): where g is rounding noise (the key bias gets no
    # gradient: softmax ignores a shift shared by all keys) the noise decides the sign, so compare where g is clear
    clear = [g.abs() > 1e-5 for g in grads_a]
    assert sum(int(c.sum()) for c in clear) > 0.9 * sum(c.numel() for c in clear)
    for a, b, c in zip(params_a, params_b, clear, strict=True):
        torch.testing.assert_close(b[c], a[c], atol=1e-6, rtol=1e-5)
    # the dropout masks really were the same: without the seed the losses differ
    torch.manual_seed(12)
    other = F.cross_entropy(explicit(ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten())
    assert (other - loss_b).abs() > 1e-4


@pytest.mark.parametrize("wrap", ["lora", "dora", "prefix"])
def test_set_fused_reaches_every_module_of_a_wrapped_model(wrap):
    torch.manual_seed(0)
    model = GPT2(tiny_config(dropout=0.1))
    wrapped = PrefixTuning(model, n_prefix=3, hidden=16) if wrap == "prefix" else inject_adapters(model, wrap)
    assert fused_flags(wrapped) == {True}
    assert wrapped.set_fused(False) is wrapped
    assert fused_flags(wrapped) == {False} and not wrapped.config.fused
    if wrap != "prefix":  # every adapter's dropout was reached
        assert all(not m.dropout.fused for n, m in wrapped.named_modules() if n.endswith("c_attn"))
    wrapped.set_fused(True)
    assert fused_flags(wrapped) == {True} and wrapped.config.fused


def test_adapters_injected_into_an_explicit_model_are_explicit_too():
    model = GPT2(tiny_config()).set_fused(False)
    inject_adapters(model, "lora", dropout=0.1)
    assert fused_flags(model) == {False}
