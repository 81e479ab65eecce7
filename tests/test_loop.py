"""The plain loop (training/loop.py): the data order, the loop alone trains a tiny GPT-2, equals the trainer's
first epoch, weights micro-batches by their share of the step, refuses to step on NaN, and its explicit AdamW
(--explicit-math: minigpt's AdamW) takes the same steps as torch's fused one."""
from __future__ import annotations

import math

import pytest
import torch

import minigpt.optim as optim
from tests import _train_script as script
from training.loop import NonFiniteLossError, epoch_plan, train_epoch
from training.optimization import build_optimizer, build_scheduler
from training.trainer import TrainConfig, seed_everything, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_epoch_plan_is_a_seeded_permutation():
    plan = epoch_plan(10, batch_size=3, grad_accum=2, world_size=1, seed=7, epoch=0)
    ids = torch.cat([m for step in plan for m in step])
    assert sorted(ids.tolist()) == list(range(10)) and [len(s) for s in plan] == [2, 2]
    again = epoch_plan(10, 3, 2, 1, 7, 0)
    assert all(torch.equal(a, b) for s, t in zip(plan, again) for a, b in zip(s, t))
    assert not torch.equal(ids, torch.cat([m for s in epoch_plan(10, 3, 2, 1, 7, 1) for m in s]))
    # with 2 ranks the final micro-batch of 1 example cannot be split: it is dropped
    assert [len(m) for s in epoch_plan(9, 4, 1, 2, 7, 0) for m in s] == [4, 4]


def plain_steps(data, plan):
    """The loop's input: every micro-batch collated, weighted by its share of the step's examples."""
    return [[(script.collate([data[j] for j in ids.tolist()]), len(ids) / sum(len(m) for m in step))
             for ids in step] for step in plan]


def plain_epoch(data, cfg: TrainConfig, dropout: float = 0.1):
    """One epoch with nothing but the plain loop, set up as the trainer sets it up (seed, optimizer, schedule)."""
    model = script.tiny_model(0, dropout)
    plan = epoch_plan(len(data), cfg.batch_size, cfg.grad_accum, 1, cfg.seed, 0)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, explicit_math=cfg.explicit_math)
    scheduler = build_scheduler(optimizer, cfg.schedule, round(cfg.warmup * len(plan)), cfg.epochs * len(plan))
    seed_everything(cfg.seed)  # the trainer seeds dropout here, after building the model
    stats = list(train_epoch(model, plain_steps(data, plan), script.lm_loss, optimizer, scheduler, cfg.max_grad_norm))
    return model, stats


def test_the_plain_loop_trains_and_equals_the_trainers_first_epoch(tmp_path):
    data = script.synthetic_data(48, 1)
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=1, batch_size=4, grad_accum=2, lr=1e-2, warmup=0.2,
                      device="cpu", seed=5, keep_best=0)
    model, stats = plain_epoch(data, cfg)
    assert len(stats) == 6 and all(s["grad_norm"] > 0 and math.isfinite(s["grad_norm"]) for s in stats)
    with torch.no_grad():  # it learns: the loss over the whole training set falls well below the untrained one
        before = float(script.lm_loss(script.tiny_model(0, 0.1).eval(), script.collate(data)))
        after = float(script.lm_loss(model.eval(), script.collate(data)))
    assert after < before - 0.1, (before, after)

    trained = script.tiny_model(0, 0.1)
    result = train(trained, data, script.collate, script.lm_loss, cfg)
    torch.testing.assert_close(torch.tensor([s["loss"] for s in stats]),
                               torch.tensor([s["loss"] for s in result.step_log]), atol=1e-6, rtol=0)
    assert [s["lr"] for s in stats] == pytest.approx([s["lr"] for s in result.step_log], abs=1e-12)
    for name, weight in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], weight, atol=1e-6, rtol=0, msg=name)


def test_micro_batch_weights_make_the_step_one_mean_over_its_examples():
    """Two micro-batches of 3 and 1 examples, weighted 3/4 and 1/4, give the gradient of one batch of 4."""
    data = script.synthetic_data(4, 1)
    grads = []
    for parts in ([[0, 1, 2], [3]], [[0, 1, 2, 3]]):
        model = script.tiny_model(0, dropout=0.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: only the gradient is looked at
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        step = [(script.collate([data[j] for j in ids]), len(ids) / 4) for ids in parts]
        optimizer.zero_grad = lambda set_to_none=True: None  # keep the gradient for the comparison
        (stats,) = train_epoch(model, [step], script.lm_loss, optimizer, scheduler, max_grad_norm=0)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)
    assert stats["grad_norm"] == pytest.approx(float(grads[1].norm()), rel=1e-5)


def test_a_nan_loss_stops_before_the_optimizer_step():
    data = script.synthetic_data(8, 1)
    model = script.tiny_model(0, dropout=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    steps = [[(script.collate(data[:4]), 1.0)], [(script.collate(data[4:]), 1.0)]]
    calls = 0

    def loss_fn(m, batch):
        nonlocal calls
        calls += 1
        return script.lm_loss(m, batch) * (float("nan") if calls == 1 else 1.0)

    with pytest.raises(NonFiniteLossError, match="loss nan"):
        list(train_epoch(model, steps, loss_fn, optimizer, scheduler, max_grad_norm=1.0))
    assert calls == 1 and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_explicit_math_reaches_the_optimizer_and_takes_the_same_steps(tmp_path, monkeypatch):
    """train(explicit_math=True) steps with minigpt's AdamW, our equations (each of its updates is counted here);
    the default steps with torch's fused kernel, which never calls them. Both train alike, within float tolerance."""
    calls = []
    plain = optim.adamw_step
    monkeypatch.setattr(optim, "adamw_step", lambda *a: calls.append(1) or plain(*a))
    data = script.synthetic_data(16, 1)
    runs = {}
    for explicit in (False, True):
        calls.clear()
        cfg = TrainConfig(out_dir=str(tmp_path / str(explicit)), epochs=1, batch_size=4, lr=3e-3, device="cpu",
                          seed=5, keep_best=0, weight_decay=0.1, explicit_math=explicit)
        model = script.tiny_model(0, dropout=0.0)
        result = train(model, data, script.collate, script.lm_loss, cfg)
        n_params = sum(1 for p in model.parameters() if p.requires_grad)
        assert len(calls) == (len(result.step_log) * n_params if explicit else 0), explicit
        runs[explicit] = (result, model.state_dict())
    assert runs[True][0].step_log and [s["loss"] for s in runs[True][0].step_log] == pytest.approx(
        [s["loss"] for s in runs[False][0].step_log], abs=1e-5)
    for name, weight in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], weight, atol=1e-5, rtol=0, msg=name)
