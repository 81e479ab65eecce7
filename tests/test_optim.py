"""minigpt.optim.AdamW (the plain equations, --explicit-math) against torch.optim.AdamW's for-loop form and its
fused kernel (the default fast path, training/optimization.py) on a tiny GPT2, on CPU (CUDA: tests/test_cuda.py);
resuming each from the other's state; LRSchedule against torch's LambdaLR."""
import copy

import pytest
import torch

import minigpt.optim as optim
from minigpt import GPT2
from tests.conftest import tiny_config
from training.optimization import build_optimizer, load_optimizer_state


def tiny_model() -> GPT2:
    torch.manual_seed(0)
    model = GPT2(tiny_config())
    fc = model.h[0].mlp.c_fc
    fc.weight = torch.nn.Parameter(fc.weight.detach().t().contiguous().t())  # one non-contiguous parameter
    return model


def train(model, opt, steps: int, seed: int = 1, skip_head_every: int = 0) -> torch.Tensor:
    """All parameters, flattened, after `steps` AdamW steps on fixed random data (on the model's device).

    skip_head_every=k: every k-th step the last LayerNorm gets no gradient, so its step count lags the others'."""
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    for i in range(steps):
        ids = torch.randint(0, 300, (2, 16), generator=g).to(device)
        opt.zero_grad()
        logits = model(ids).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()
        if skip_head_every and i % skip_head_every == 0:
            model.ln_f.weight.grad = None
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def fixed_gradient_steps(model, opt, steps: int, seed: int = 1) -> torch.Tensor:
    """All parameters, flattened, after `steps` steps on fixed random gradients. No backward: the parameters do not
    feed back into the gradients, so two kernels that round differently stay a rounding apart (with a backward,
    Adam's lr-sized steps on near-zero gradients let rounding noise pick their sign)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in model.parameters():
            # in the parameter's own memory layout, as autograd writes a gradient: torch 2.13's fused CPU kernel
            # misreads a gradient strided unlike its parameter (the non-contiguous c_fc here)
            p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=g) * 1e-3)
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def torch_adamw(groups, **kw):
    return torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.1, **kw)


def ours(groups):
    return optim.AdamW(groups, lr=1e-3)


def run(make_optimizer, steps=30, **kw) -> torch.Tensor:
    model = tiny_model()
    return train(model, make_optimizer(optim.param_groups(model, 0.1)), steps, **kw)


@pytest.fixture(scope="module")
def expected():
    return run(lambda groups: torch_adamw(groups, foreach=False))


def test_one_parameter_at_a_time_equals_torch_for_loop(expected):
    """The eight lines per parameter, as torch's for-loop path runs them, in the same order."""
    got = run(ours)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_the_fused_fast_path_equals_our_equations():
    """What training runs by default (build_optimizer: torch's fused kernel on a CPU) against our equations:
    another kernel, so a tolerance."""
    model, reference = tiny_model(), tiny_model()
    fast = build_optimizer(model, "adamw", 1e-3, 0.1)
    assert isinstance(fast, torch.optim.AdamW) and fast.param_groups[0]["fused"] is True
    want = fixed_gradient_steps(reference, ours(optim.param_groups(reference, 0.1)), 30)
    torch.testing.assert_close(fixed_gradient_steps(model, fast, 30), want, atol=1e-6, rtol=1e-5)
    assert isinstance(build_optimizer(tiny_model(), "adamw", 1e-3, 0.1, explicit_math=True), optim.AdamW)


def test_a_parameter_that_misses_steps_keeps_its_own_step_count():
    want = run(lambda groups: torch_adamw(groups, foreach=False), steps=12, skip_head_every=3)
    got = run(ours, steps=12, skip_head_every=3)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_resume_from_state_dict_equals_uninterrupted():
    """10 steps, save, a fresh model and optimizer load both, 10 more steps == 20 steps without a stop."""
    want = run(ours, steps=20)
    model = tiny_model()
    opt = ours(optim.param_groups(model, 0.1))
    train(model, opt, 10)
    saved_model, saved_opt = model.state_dict(), opt.state_dict()
    model = tiny_model()
    model.load_state_dict(saved_model)
    opt = ours(optim.param_groups(model, 0.1))
    opt.load_state_dict(saved_opt)
    # the data stream continues where it stopped: train 10 on the same generator would replay steps 1-10
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        torch.randint(0, 300, (2, 16), generator=g)
    for _ in range(10):
        ids = torch.randint(0, 300, (2, 16), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(ids).logits.flatten(0, 1), ids.flatten()).backward()
        opt.step()
    got = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.equal(got, want), (got - want).abs().max()


def test_param_groups_decay_matrices_only():
    model = GPT2(tiny_config())
    decay, no_decay = optim.param_groups(model, 0.1)
    assert all(p.ndim == 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert no_decay["weight_decay"] == 0.0
    assert any(p is model.wte.weight for p in no_decay["params"])  # embeddings do not decay


def test_state_dict_is_torchs_format_and_loads_both_ways():
    """Ours and torch's fused AdamW keep the same state (torch.optim.Optimizer's format, the step a float32
    tensor): after the same steps both number the parameters and keep the state alike, and each continues from
    the other's state as from its own (--resume may switch --explicit-math), through load_optimizer_state."""
    model, reference = tiny_model(), tiny_model()
    mine, theirs = ours(optim.param_groups(model, 0.1)), torch_adamw(optim.param_groups(reference, 0.1), fused=True)
    train(model, mine, 5)
    train(reference, theirs, 5)
    saved, want = mine.state_dict(), theirs.state_dict()
    assert [g["params"] for g in saved["param_groups"]] == [g["params"] for g in want["param_groups"]]
    for group, their_group in zip(saved["param_groups"], want["param_groups"]):
        assert all(group[k] == their_group[k] for k in ("lr", "betas", "eps", "weight_decay"))
    assert saved["state"].keys() == want["state"].keys()
    for i, state in saved["state"].items():
        assert torch.is_tensor(state["step"]) and int(state["step"]) == int(want["state"][i]["step"]) == 5
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[k], want["state"][i][k], atol=1e-6, rtol=1e-5)

    def five_more(model, optimizer):
        return fixed_gradient_steps(model, optimizer, 5, seed=2)

    crossed = copy.deepcopy(model)
    torch_from_ours = torch_adamw(optim.param_groups(crossed, 0.1), fused=True)
    load_optimizer_state(torch_from_ours, copy.deepcopy(saved))
    assert torch_from_ours.param_groups[0]["fused"] is True  # it keeps its own kernel
    crossed_back = copy.deepcopy(reference)
    ours_from_torch = ours(optim.param_groups(crossed_back, 0.1))
    load_optimizer_state(ours_from_torch, copy.deepcopy(want))
    torch.testing.assert_close(five_more(crossed, torch_from_ours), five_more(model, mine), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(five_more(crossed_back, ours_from_torch), five_more(reference, theirs),
                               atol=1e-6, rtol=1e-5)


def test_zero_grad_and_bad_parameter_lists():
    model = tiny_model()
    opt = ours(optim.param_groups(model, 0.1))
    train(model, opt, 1)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="empty parameter list"):
        ours([])
    with pytest.raises(ValueError, match="more than one parameter group"):
        ours([{"params": [model.wte.weight]}, {"params": [model.wte.weight]}])
    with pytest.raises(ValueError, match="parameter groups"):
        load_optimizer_state(ours([model.wte.weight]), opt.state_dict())


def test_a_checkpoint_with_an_int_step_count_resumes():
    """last.pt files written before the fused fast path hold the step as an int: they still resume, in both."""
    model = tiny_model()
    opt = ours(optim.param_groups(model, 0.1))
    train(model, opt, 3)
    saved = copy.deepcopy(opt.state_dict())
    for state in saved["state"].values():
        state["step"] = int(state["step"])
    for make in (ours, lambda groups: torch_adamw(groups, fused=True)):
        resumed = make(optim.param_groups(model, 0.1))
        load_optimizer_state(resumed, copy.deepcopy(saved))
        assert all(int(s["step"]) == 3 for s in resumed.state.values())
        resumed.step()  # a step with the gradients still there runs
        assert all(int(s["step"]) == 4 for s in resumed.state.values())


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # no steps: rates only
@pytest.mark.parametrize("multiplier", [lambda s: optim.linear_warmup_decay(s, 3, 10), lambda s: 0.5 ** s],
                         ids=["linear-warmup-decay", "halving"])
def test_lr_schedule_equals_torchs_lambda_lr_and_resumes(multiplier):
    model = tiny_model()
    mine, theirs = ours(optim.param_groups(model, 0.1)), torch_adamw(optim.param_groups(model, 0.1))
    schedule = optim.LRSchedule(mine, multiplier)
    reference = torch.optim.lr_scheduler.LambdaLR(theirs, multiplier)
    rates = lambda opt: [g["lr"] for g in opt.param_groups]  # noqa: E731
    for step in range(12):
        assert rates(mine) == rates(theirs), step  # the same products base x multiplier(step): exactly equal
        if step == 6:  # a new optimizer and schedule take over from the saved ones
            saved_optimizer, saved_schedule = mine.state_dict(), schedule.state_dict()
            mine = ours(optim.param_groups(model, 0.1))
            mine.load_state_dict(saved_optimizer)
            schedule = optim.LRSchedule(mine, multiplier)
            schedule.load_state_dict(saved_schedule)
            assert rates(mine) == rates(theirs)
        if step == 9:  # and from a LambdaLR's state (a checkpoint written before LRSchedule)
            schedule = optim.LRSchedule(mine, multiplier)
            schedule.load_state_dict(reference.state_dict())
            assert rates(mine) == rates(theirs)
        schedule.step()
        reference.step()
