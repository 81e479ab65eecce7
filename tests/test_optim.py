"""minigpt.optim.AdamW against torch.optim.AdamW(foreach=True) on a tiny GPT2, on CPU (CUDA: tests/test_cuda.py);
its state_dict against torch's; LRSchedule against torch's LambdaLR."""
import copy

import pytest
import torch

import minigpt.optim as optim
from minigpt import GPT2
from tests.conftest import tiny_config


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


def torch_adamw(groups):
    return torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.1, foreach=True)


def ours(groups, **kw):
    return optim.AdamW(groups, lr=1e-3, **kw)


def run(make_optimizer, steps=30, **kw) -> torch.Tensor:
    model = tiny_model()
    return train(model, make_optimizer(optim.param_groups(model, 0.1)), steps, **kw)


@pytest.fixture(scope="module")
def expected():
    return run(torch_adamw)


def test_whole_parameters_equal_torch_foreach_bitwise(monkeypatch, expected):
    """With pieces as large as the parameters, every foreach operation is torch's, on the same tensors: bitwise."""
    monkeypatch.setattr(optim, "CHUNK", 1 << 30)
    got = run(ours)
    assert torch.equal(got, expected), (got - expected).abs().max()


@pytest.mark.parametrize("chunk", [optim.CHUNK, 1000])  # 1000: pieces that do not divide the tensors
def test_pieces_equal_torch_foreach(monkeypatch, expected, chunk):
    """Cut into pieces, the same operations run on other slices, where a CPU's vector kernels may round the last
    few entries differently: tolerance, not bitwise."""
    monkeypatch.setattr(optim, "CHUNK", chunk)
    got = run(ours)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_one_parameter_at_a_time_equals_torch_for_loop():
    """foreach=False: the eight lines per parameter, as torch's for-loop path runs them."""
    want = run(lambda groups: torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.1, foreach=False))
    got = run(lambda groups: ours(groups, foreach=False))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_a_parameter_that_misses_steps_keeps_its_own_step_count():
    want = run(torch_adamw, steps=12, skip_head_every=3)
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


def test_pieces_of_the_cpu_lists_cover_every_entry_once(monkeypatch):
    monkeypatch.setattr(optim, "CHUNK", 100)
    tensors = [torch.zeros(250), torch.zeros(30), torch.zeros(7, 9), torch.zeros(5, 4).t()]  # last: non-contiguous
    lists = list(optim.piece_lists(tensors, tensors, tensors, tensors, [1, 2, 3, 4]))
    for ps, *_ in lists:
        assert sum(x.numel() for x in ps) <= 100 or len(ps) == 1
        for x in ps:
            x.add_(1)
    assert all(torch.equal(t, torch.ones_like(t)) for t in tensors)
    assert [t for _, _, _, _, ts in lists for t in ts][:3] == [1, 1, 1]  # a piece carries its parameter's step



def test_state_dict_is_torchs_format_and_loads_both_ways():
    """minigpt/optimizer_base.py writes torch.optim's format: after the same steps both number the parameters and
    keep the state alike, and each optimizer continues from the other's state as from its own."""
    model, reference = tiny_model(), tiny_model()
    mine, theirs = ours(optim.param_groups(model, 0.1)), torch_adamw(optim.param_groups(reference, 0.1))
    train(model, mine, 5)
    train(reference, theirs, 5)
    saved, want = mine.state_dict(), theirs.state_dict()
    assert [g["params"] for g in saved["param_groups"]] == [g["params"] for g in want["param_groups"]]
    for group, their_group in zip(saved["param_groups"], want["param_groups"]):
        assert all(group[k] == their_group[k] for k in ("lr", "betas", "eps", "weight_decay"))
    assert saved["state"].keys() == want["state"].keys()
    for i, state in saved["state"].items():
        assert state["step"] == int(want["state"][i]["step"]) == 5
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[k], want["state"][i][k], atol=1e-6, rtol=1e-5)

    def five_more(model, optimizer):
        return train(model, optimizer, 5, seed=2)

    crossed = copy.deepcopy(model)
    torch_from_ours = torch_adamw(optim.param_groups(crossed, 0.1))
    torch_from_ours.load_state_dict(copy.deepcopy(saved))
    crossed_back = copy.deepcopy(reference)
    ours_from_torch = ours(optim.param_groups(crossed_back, 0.1))
    ours_from_torch.load_state_dict(copy.deepcopy(want))
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
    with pytest.raises(ValueError, match="no parameters"):
        ours([])
    with pytest.raises(ValueError, match="more than one parameter group"):
        ours([{"params": [model.wte.weight]}, {"params": [model.wte.weight]}])
    with pytest.raises(ValueError, match="groups of sizes"):
        ours([model.wte.weight]).load_state_dict(opt.state_dict())


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
