"""Dropout (Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural Networks from Overfitting").

In training, every entry is zeroed with probability p and the survivors are scaled by 1 / (1 - p), so the expected
value of each entry is unchanged; in eval mode dropout is the identity:

    y = x * keep / (1 - p),      keep ~ Bernoulli(1 - p), drawn anew for every entry and every call

We draw keep as (u >= p) with u ~ Uniform[0, 1): P(u >= p) = 1 - p.

Two forms compute the same thing (and, on the CPU, the same masks from the same random numbers):
  * `plain_dropout`: the equation above, line by line; what `fused=False` (`--explicit-math`) runs;
  * `fast_dropout`: on a GPU, F.dropout (one fused kernel); on a CPU, the mask built in place in the buffer of u
    (no separate bool mask, no separate division). Measured on this 2-core machine shared with other jobs (load
    average 5-6, so +-20%): forward + backward of a (16, 128, 768) fp32 activation, p = 0.1, two runs: plain
    141-154 ms, in-place mask 91-122 ms, nn.Dropout 91-122 ms; the in-place mask keeps the same fp32 mask for the
    backward as the plain form (it buys time, not memory).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Dropout(nn.Module):
    def __init__(self, p: float = 0.1, fused: bool = True):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.fused = fused  # False: plain_dropout, the equation (GPT2.set_fused switches it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.fused:
            return self.fast_dropout(x)
        return self.plain_dropout(x)

    def plain_dropout(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.rand_like(x) >= self.p  # True with probability 1 - p
        return x * keep / (1.0 - self.p)

    def fast_dropout(self, x: torch.Tensor) -> torch.Tensor:
        """The same equation, faster (module docstring): one kernel on a GPU, an in-place mask on a CPU."""
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        mask = torch.rand_like(x).ge_(self.p)  # u >= p: 1.0 with probability 1 - p, else 0.0
        return x * mask.mul_(1.0 / (1.0 - self.p))  # the mask, scaled in place, is what the backward keeps

    def extra_repr(self) -> str:
        return f"p={self.p}" + ("" if self.fused else ", fused=False")
