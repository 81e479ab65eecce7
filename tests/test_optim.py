"""minigpt.optim.AdamW against torch.optim.AdamW (its CPU default, the for-loop path) on a tiny GPT2."""
import pytest
import torch

import minigpt.optim as optim
from minigpt import GPT2
from tests.conftest import tiny_config


def train(make_optimizer, steps: int = 100) -> torch.Tensor:
    """All parameters, flattened, after `steps` AdamW steps on a tiny GPT2 with fixed data."""
    torch.manual_seed(0)
    model = GPT2(tiny_config())
    fc = model.h[0].mlp.c_fc
    fc.weight = torch.nn.Parameter(fc.weight.detach().t().contiguous().t())  # one non-contiguous parameter
    opt = make_optimizer(optim.param_groups(model, 0.1))
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, 300, (2, 16), generator=g)
        opt.zero_grad()
        logits = model(ids).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture(scope="module")
def expected():
    return train(lambda groups: torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.1))


@pytest.mark.parametrize("chunk", [optim.CHUNK, 4096, 333])
def test_adamw_equals_torch_over_100_steps(monkeypatch, expected, chunk):
    """Bitwise: the piece-by-piece update (any piece size, pieces not dividing the tensors) does exactly the
    operations of torch's per-tensor loop, in the same order."""
    monkeypatch.setattr(optim, "CHUNK", chunk)
    got = train(lambda groups: optim.AdamW(groups, lr=1e-3))
    assert torch.equal(got, expected), (got - expected).abs().max()


def test_param_groups_decay_matrices_only():
    model = GPT2(tiny_config())
    decay, no_decay = optim.param_groups(model, 0.1)
    assert all(p.ndim == 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert no_decay["weight_decay"] == 0.0
    assert any(p is model.wte.weight for p in no_decay["params"])  # embeddings do not decay
