"""The NaN guard (training/nan_guard.py, training/loop.py) inside a training run: no step on NaN, no NaN saved,
and the error says where and which checkpoint is still good."""
from __future__ import annotations

import pytest
import torch

from tests._fixtures import Affine, Scripted, affine_data, assert_same_weights, cfg_for, collate_xy, mse
from training.trainer import NonFiniteLossError, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---- NaN/inf guard ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_non_finite_stops_and_keeps_last_good_checkpoint(tmp_path, poison):
    calls = 0

    def loss_fn(model, batch):  # 4 examples, batch 2: 2 steps per epoch; call 4 = epoch 2, step 2
        nonlocal calls
        calls += 1
        loss = mse(model, batch)
        if calls == 4 and poison == "loss":
            return loss * float("nan")
        if calls == 4:  # finite loss (0), infinite gradient: d sqrt(u)/du at u = 0
            return loss + torch.sqrt(model.proj.weight.pow(2).sum() * 0)
        return loss

    evaluate = Scripted([0.1, 0.2, 0.3], tmp_path)
    model = Affine()
    with pytest.raises(NonFiniteLossError) as info:
        train(model, affine_data(4), collate_xy, loss_fn, cfg_for(tmp_path), evaluate, "dev_acc")
    message = str(info.value)
    assert "epoch 2, step 2/2" in message and str(tmp_path / "last.pt") in message
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (last["progress"]["epoch"], last["progress"]["step_in_epoch"], last["progress"]["global_step"]) == (1, 0, 2)
    assert_same_weights(last["model"], evaluate.weights[0])  # the state after epoch 1, intact
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the poisoned step was never taken
    assert not list(tmp_path.glob("*.tmp"))


def test_overflowing_update_is_never_saved(tmp_path, monkeypatch):
    """Finite loss and gradient, but the update overflows: the guard refuses to write those weights. (The trainer's
    optimizer is torch's fused AdamW, training/optimization.py: its step is made to overflow.)"""
    AdamW = torch.optim.AdamW
    real_step = AdamW.step

    def overflowing_step(self, closure=None):
        real_step(self, closure)
        self.param_groups[0]["params"][0].data[0, 0] = float("inf")

    monkeypatch.setattr(AdamW, "step", overflowing_step)
    with pytest.raises(NonFiniteLossError, match="NaN/inf weights.*after global step 1; nothing was written") as info:
        train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path, save_every=1))
    assert str(info.value).count("non-finite training values") == 1  # said once, not wrapped again
    assert not (tmp_path / "last.pt").exists()
