"""minigpt/dropout.py against the definition (and nn.Dropout's semantics): keep rate, scale, gradient, eval."""
import pytest
import torch

from minigpt.dropout import Dropout


def test_training_zeroes_a_fraction_p_and_scales_the_rest():
    p, n = 0.1, 1_000_000
    x = torch.rand(n) + 0.5  # no zeros of its own
    torch.manual_seed(0)
    y = Dropout(p).train()(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 5 * (p * (1 - p) / n) ** 0.5  # binomial: within 5 standard deviations
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] * (1 / (1 - p)), rtol=0, atol=0)  # exactly the scaled input
    torch.testing.assert_close(y.mean(), x.mean(), rtol=2e-3, atol=0)  # the expectation is unchanged


def test_gradient_is_the_mask_times_the_scale():
    x = torch.randn(4, 1000, requires_grad=True)
    y = Dropout(0.3).train()(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() / 0.7)


def test_eval_mode_and_p_zero_are_the_identity_and_a_new_mask_every_call():
    x = torch.randn(100)
    assert Dropout(0.5).eval()(x) is x and Dropout(0.0).train()(x) is x
    d = Dropout(0.5).train()
    assert not torch.equal(d(x), d(x))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)


def test_plain_form_equals_torchs_kernel_and_set_fused_picks_it():
    """fused=False runs plain_dropout, the equation; on the CPU it draws keep with the same bernoulli_ call as
    F.dropout, so the same seed gives the same mask (the outputs differ only by rounding)."""
    x = torch.randn(8, 500, requires_grad=True)
    d = Dropout(0.3).train()
    torch.manual_seed(5)
    fast = d(x)
    d.fused = False
    torch.manual_seed(5)
    plain = d(x)
    assert torch.equal(plain == 0, fast == 0) and (fast == 0).any()
    torch.testing.assert_close(plain, fast, atol=1e-6, rtol=1e-6)
    torch.manual_seed(5)
    torch.testing.assert_close(d.plain_dropout(x), plain, atol=0, rtol=0)  # the flag chose the plain form
    plain.sum().backward()
    torch.testing.assert_close(x.grad, (plain != 0).float() / 0.7)
