"""Dropout (Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural Networks from Overfitting").

In training, every entry is zeroed with probability p and the survivors are scaled by 1 / (1 - p), so the expected
value of each entry is unchanged; in eval mode dropout is the identity:

    y = x * keep / (1 - p),      keep ~ Bernoulli(1 - p), drawn anew for every entry and every call

Two forms compute it:
  * `plain_dropout`: the equation above, line by line; what `fused=False` (`--explicit-math`) runs;
  * F.dropout, PyTorch's kernel (one fused kernel on a GPU): the fast path. On the CPU it draws keep with the
    same bernoulli_ call, so the same seed gives the same mask as plain_dropout.
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
            return F.dropout(x, self.p, training=True)
        return self.plain_dropout(x)

    def plain_dropout(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p)  # 1.0 with probability 1 - p, else 0.0
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}" + ("" if self.fused else ", fused=False")
