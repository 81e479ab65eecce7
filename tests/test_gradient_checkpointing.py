"""Gradient checkpointing (GPT2.set_gradient_checkpointing, --gradient-checkpointing): the same gradients and
training losses as without it, with dropout on, for every way a GPT-2 trains here; and far fewer saved tensors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minigpt import GPT2
from minigpt.lora import inject_adapters
from minigpt.prefix import PrefixTuning
from tasks.heads import GPT2Classifier
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def lm_loss(model, ids):
    logits = model(ids).logits  # (B, T, V)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


def classifier_loss(model, ids):
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # right padding in one row
    logits = model(ids, attention_mask=mask).logits  # (B, K)
    return F.cross_entropy(logits, torch.arange(ids.size(0)) % 3)


def gradients(model, loss_fn, ids, checkpointing: bool, autocast: bool = False, seed: int = 123) -> dict:
    """{name: gradient} of one backward with the GPT2 inside `model` switched as asked; the same dropout seed."""
    for m in model.modules():
        if isinstance(m, GPT2):
            m.set_gradient_checkpointing(checkpointing)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the dropout masks of both runs start from the same state
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = loss_fn(model, ids)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def build(kind: str, fused: bool = True):
    torch.manual_seed(0)
    gpt = GPT2(tiny_config(dropout=0.1, n_layer=3)).to(CPU).set_fused(fused).train()
    if kind == "full":
        return gpt, lm_loss
    if kind in ("lora", "dora"):
        return inject_adapters(gpt, method=kind, r=4, alpha=8, dropout=0.1).train(), lm_loss
    if kind == "prefix":
        return PrefixTuning(gpt, n_prefix=4, hidden=16).train(), lm_loss
    return GPT2Classifier(gpt, num_labels=3, pooling="last", dropout=0.1).train(), classifier_loss


@pytest.mark.parametrize("kind", ["full", "lora", "dora", "prefix", "classifier"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "explicit-math"])
def test_the_same_gradients_with_dropout_on(kind, fused):
    model, loss_fn = build(kind, fused)
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    plain = gradients(model, loss_fn, ids, checkpointing=False)
    recomputed = gradients(model, loss_fn, ids, checkpointing=True)
    assert plain.keys() == recomputed.keys() and plain
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=0, atol=1e-6, msg=name)
    # the dropout masks matter: another seed gives other gradients, so equal ones mean the same masks
    other = gradients(model, loss_fn, ids, checkpointing=False, seed=124)
    assert max((plain[n] - other[n]).abs().max() for n in plain) > 1e-4


def test_the_same_gradients_under_bf16_autocast():
    model, loss_fn = build("full")
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    plain = gradients(model, loss_fn, ids, checkpointing=False, autocast=True)
    recomputed = gradients(model, loss_fn, ids, checkpointing=True, autocast=True)
    for name in plain:  # the recomputation runs under the same autocast: the same bf16 roundings
        torch.testing.assert_close(recomputed[name], plain[name], rtol=0, atol=1e-6, msg=name)


def test_each_block_runs_twice_and_the_saved_activations_shrink():
    """What checkpointing buys: the tensors autograd keeps between forward and backward (counted by a
    saved-tensors hook; inside a checkpointed block the checkpoint's own hook keeps none) fall to under half."""
    torch.manual_seed(0)
    model = GPT2(tiny_config(dropout=0.1, n_layer=4, n_embd=64)).train()
    ids = torch.randint(0, 300, (4, 64), generator=torch.Generator().manual_seed(1))
    calls = []
    for block in model.h:
        block.register_forward_pre_hook(lambda *_: calls.append(1))  # (recomputation stops early: no post-hook)

    def saved_bytes(checkpointing: bool) -> int:
        model.set_gradient_checkpointing(checkpointing)
        seen = {}

        def pack(t):
            seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = lm_loss(model, ids)
        calls.clear()
        loss.backward()
        return sum(seen.values())

    without = saved_bytes(False)
    assert len(calls) == 0  # no recomputation without it
    with_it = saved_bytes(True)
    assert len(calls) == model.config.n_layer  # every block's forward ran again in the backward
    assert with_it < 0.5 * without, (with_it, without)


def test_off_in_eval_and_without_grad():
    """No recomputation where no backward comes: the output equals the plain one and no checkpoint runs."""
    torch.manual_seed(0)
    model = GPT2(tiny_config()).eval().set_gradient_checkpointing(True)
    ids = torch.randint(0, 300, (1, 8))
    with torch.no_grad():
        out = model(ids, use_cache=True)
    assert out.past_key_values.length == 8
    torch.testing.assert_close(out.logits, model.set_gradient_checkpointing(False)(ids).logits)


def train_losses(tmp_path, name: str, **switches) -> tuple[list[float], dict]:
    """Three steps of the trainer on a tiny GPT-2 with dropout 0.1: (the step losses, the final weights)."""
    from training.trainer import TrainConfig, seed_everything, train

    seed_everything(0)
    model = GPT2(tiny_config(dropout=0.1))
    data = [torch.randint(0, 300, (16,), generator=torch.Generator().manual_seed(i)) for i in range(12)]
    cfg = TrainConfig(out_dir=str(tmp_path / name), epochs=1, batch_size=4, lr=1e-3, keep_best=0, device="cpu",
                      **switches)
    result = train(model, data, lambda rows: {"input_ids": torch.stack(rows)},
                   lambda m, batch: lm_loss(m, batch["input_ids"]), cfg)
    return [s["loss"] for s in result.step_log], {k: v.clone() for k, v in model.state_dict().items()}


def test_the_trainer_gives_the_same_losses_with_gradient_checkpointing(tmp_path):
    losses, weights = train_losses(tmp_path, "plain")
    losses_ckpt, weights_ckpt = train_losses(tmp_path, "ckpt", gradient_checkpointing=True)
    assert len(losses) == 3
    assert losses_ckpt == pytest.approx(losses, rel=0, abs=1e-6)
    for name in weights:
        torch.testing.assert_close(weights_ckpt[name], weights[name], rtol=0, atol=1e-6, msg=name)


def test_the_flag_reaches_the_trainer_and_the_model(tmp_path):
    import argparse

    from training.config import add_training_arguments, config_from_args
    from training.model_switches import switch_model

    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--out-dir", str(tmp_path), "--gradient-checkpointing"]))
    assert cfg.gradient_checkpointing and not cfg.compile
    model = PrefixTuning(GPT2(tiny_config()), n_prefix=2, hidden=8)
    switch_model(model, cfg.gradient_checkpointing, cfg.compile, CPU)
    assert model.model.gradient_checkpointing
    with pytest.raises(ValueError, match="--gradient-checkpointing: the Linear being trained holds no minigpt GPT2"):
        switch_model(torch.nn.Linear(2, 2), True, False, CPU)
