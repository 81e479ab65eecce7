"""The transformer block of GPT-2: LayerNorm, GELU (tanh; erf for the course's model), the MLP, the pre-LN block.

GPT-2 moved LayerNorm to the *input* of each sub-layer (Radford et al. 2019, section 2.3):

    x = x + attn(ln_1(x))
    x = x + mlp(ln_2(x))
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import CausalSelfAttention
from .config import GPT2Config
from .dropout import Dropout
from .kv_cache import LayerCache


class LayerNorm(nn.Module):
    """Ba et al. 2016: y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, over the last dimension."""

    def __init__(self, dim: int, eps: float = 1e-5, fused: bool = True):
        super().__init__()
        self.eps = eps
        self.fused = fused
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C)
        if not self.fused:  # the equation
            mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
            var = x.var(dim=-1, keepdim=True, unbiased=False)  # (..., 1), biased variance, as LayerNorm defines it
            return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)  # the same in one kernel


def gelu(x: torch.Tensor, fused: bool = True, form: str = "tanh") -> torch.Tensor:
    """GELU (Hendrycks & Gimpel 2016), in one of two forms (GPT2Config.gelu says why there are two):

    "tanh", the approximation GPT-2 was trained with:  gelu(x) = 0.5 x (1 + tanh( sqrt(2/pi) (x + 0.044715 x^3) ))
    "erf", the exact form (the course's model):       gelu(x) = x Phi(x) = 0.5 x (1 + erf( x / sqrt(2) ))
    """
    if form == "erf":
        if not fused:  # the equation
            return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
        return F.gelu(x, approximate="none")  # the same in one kernel
    if not fused:  # the equation
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return F.gelu(x, approximate="tanh")  # the same in one kernel


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> GELU -> C."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.fused = cfg.fused
        self.gelu = cfg.gelu  # "tanh" (GPT-2) or "erf" (the course's model)
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.dropout = Dropout(cfg.dropout, cfg.fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.c_proj(gelu(self.c_fc(x), self.fused, self.gelu)))


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, cfg.layer_norm_epsilon, cfg.fused)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg.n_embd, cfg.layer_norm_epsilon, cfg.fused)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: LayerCache | None = None) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        x = x + self.attn(self.ln_1(x), mask, cache)
        x = x + self.mlp(self.ln_2(x))
        return x
