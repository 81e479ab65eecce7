"""Causal multi-head self-attention (Vaswani et al. 2017, "Attention Is All You Need", eq. 1), as in GPT-2.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head) + mask) V

Each of the n_head heads sees d_head = n_embd / n_head dimensions. Two paths compute the same thing:
  * `math_attention`: the equation above, line by line (read this one); what `fused=False` (`--explicit-math`,
    GPT2.set_fused(False)) runs everywhere, on every device, in training and in eval;
  * `fused_attention`: torch.nn.functional.scaled_dot_product_attention, one kernel (the default, faster). On a
    CPU in training with dropout it too runs the math (PyTorch's CPU kernel would run the same math in C++).

KV cache: at generation time the keys and values of earlier tokens do not change, so we keep them in a
`LayerCache` (kv_cache.py; each (B, n_head, T_past, d_head)) and only compute q, k, v for the new tokens: the new
keys and values are written into the cache, and attention reads all of them. Prefix-tuning reuses the same door:
its learned prefixes are the first positions of the cache.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPT2Config
from .dropout import Dropout
from .kv_cache import LayerCache


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.head_dim
        self.fused = cfg.fused
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # x -> [q | k | v]
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)  # concatenated heads -> residual stream
        self.attn_dropout = Dropout(cfg.dropout, cfg.fused)
        self.resid_dropout = Dropout(cfg.dropout, cfg.fused)

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, C = t.shape
        return t.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: LayerCache | None = None) -> torch.Tensor:
        """x: (B, T, C). mask: (B or 1, 1, T, S) bool, True = may attend, S = T_past + T; None = plain causal.
        cache: this layer's keys/values of the T_past earlier positions; the new ones are written into it.

        Returns the output (B, T, C)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # (B, H, T, D)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, S, D): the past and the new positions
        if self.fused:
            y = self.fused_attention(q, k, v, mask)
        else:
            y = self.math_attention(q, k, v, mask)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, H, D) -> (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))

    def math_attention(self, q, k, v, mask):
        """q: (B, H, T, D); k, v: (B, H, S, D) -> (B, H, T, D)."""
        T, S = q.size(2), k.size(2)
        scores = (q @ k.transpose(-2, -1)).div_(math.sqrt(self.head_dim))  # (B, H, T, S), in place: no copy
        if mask is None:
            # query i (absolute position S - T + i) may see keys 0 .. S - T + i
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
        scores.masked_fill_(~mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1)  # each row sums to 1 over the visible keys
        probs = self.attn_dropout(probs)
        return probs @ v  # (B, H, T, D)

    def fused_attention(self, q, k, v, mask):
        """The same as math_attention in one kernel: F.scaled_dot_product_attention."""
        T, S = q.size(2), k.size(2)
        p = self.dropout if self.training else 0.0
        if p > 0 and q.device.type == "cpu":
            return self.math_attention(q, k, v, mask)  # PyTorch's CPU kernel has no dropout: it would run the math
        if mask is None and T == S:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        if mask is None and T == 1:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # one new token sees everything
        if mask is None:
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)


def build_attention_mask(attention_mask: torch.Tensor, T: int) -> torch.Tensor:
    """Padding mask (B, S) of 1 = real token, 0 = padding -> (B, 1, T, S) bool for the last T queries.

    A query may see key j when j is not in its future (causal) and j is a real token. A padding query
    would see nothing at all, and softmax over nothing is NaN; we let such rows see every key instead.
    Their outputs are never used (padding is masked out as a key everywhere else).
    """
    B, S = attention_mask.shape
    causal = torch.ones(T, S, dtype=torch.bool, device=attention_mask.device).tril(diagonal=S - T)  # (T, S)
    allowed = causal[None, :, :] & attention_mask[:, None, :].bool()  # (B, T, S)
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    return allowed[:, None, :, :]  # (B, 1, T, S)
