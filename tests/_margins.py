"""Keep token-for-token tests away from argmax near-ties.

Two computations of the same logits on different kernels (another CPU vendor, thread count, batch shape, or a
GPU) differ by ~1e-7. A decoder's choice between two tokens whose scores are that close can flip, so a test that
asserts identical tokens must check that every choice on its path was clear:

    greedy_margin(model, out, T, mask)   the smallest top-1 minus top-2 logit gap along greedy's own path
    assert_stable(run, model)            the decoder's tokens do not change when the final hidden states are
                                         jittered by 1e-4 (logits move by ~1e-5, a hundred times the kernel
                                         noise): every decision (contrastive scores, beam rankings) had room
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

KERNEL_NOISE = 1e-7  # what another kernel may change in a logit
MIN_MARGIN = 1e-5  # a clear choice: 100 x the kernel noise


@torch.no_grad()
def greedy_margin(model, out: torch.Tensor, T: int, attention_mask: torch.Tensor | None = None,
                  eos_token_id: int | None = None) -> float:
    """out (B, T + n): greedy's output for prompts (B, T). Returns min over rows and steps (while the row is
    unfinished) of logits[top-1] - logits[top-2] at the position that chose the token."""
    model.eval()
    mask = None
    if attention_mask is not None:
        mask = torch.cat([attention_mask, attention_mask.new_ones(out.size(0), out.size(1) - T)], dim=1)
    logits = model(out, attention_mask=mask).logits[:, T - 1 : -1].float()  # (B, n, V): the choosing positions
    top2 = logits.topk(2, dim=-1).values  # (B, n, 2)
    gap = top2[..., 0] - top2[..., 1]  # (B, n)
    if eos_token_id is not None:  # after a row's eos its tokens are padding, not choices
        done_before = (out[:, T:] == eos_token_id).long().cumsum(dim=1) - (out[:, T:] == eos_token_id).long()
        gap = gap.masked_fill(done_before > 0, float("inf"))
    return float(gap.min())


@contextmanager
def jitter(model, scale: float, seed: int):
    """Add scale * N(0, 1) noise (a fixed stream) to the output of the model's final LayerNorm."""
    g = torch.Generator().manual_seed(seed)

    def hook(module, args, output):
        return output + scale * torch.randn(output.shape, generator=g).to(output)

    handle = model.ln_f.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def assert_stable(run, model, scale: float = 1e-4, tries: int = 2) -> torch.Tensor:
    """run() -> tokens. Assert the tokens survive `tries` jitters of the final hidden states; return them."""
    expected = run()
    for seed in range(tries):
        with jitter(model, scale, seed):
            again = run()
        assert torch.equal(again, expected), (
            "a near-tie on the reference path: the tokens change under a 1e-4 jitter, so another kernel could "
            "flip them; choose another seed or prompt for this test"
        )
    return expected
