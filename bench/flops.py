"""The work a training step does, for `bench train`'s MFU column: the methods' settings, the model FLOPs per token
and the machine's matmul peak.

Model FLOPs per token of one training step (matmul FLOPs only; embeddings, LayerNorm, GELU, softmax not counted):
    N = matmul weights of the model: n_layer * 12 * C^2 + vocab * C (the tied LM head counts once, as a matmul)
    attention: 4 * n_layer * S * C forward (Q K^T and A V, S = keys seen: T, or T + n_prefix), x3 with backward
    full:   6 N + 12 n_layer S C                   (forward 2N, backward 2N for activations + 2N for weights)
    lora:   4 N + 6 N_ad + 12 n_layer S C          frozen weights skip their weight gradient: 2N + 2N;
                                                   N_ad = r * (in + out) per adapted layer, trained: 6 N_ad
    dora:   lora + 4 N_wrap                        peft's DoRA computes W0 dropout(x) a second time (forward +
                                                   activation gradient), N_wrap = in * out of the adapted layers;
                                                   the per-step weight norm ||W0 + s B A|| is not counted
    prefix: 4 N + 12 n_layer (T + P) C             the per-step prefix MLP is not counted
    sentiment (--task sentiment, full fine-tuning): 6 N' + 12 n_layer T C, N' = n_layer * 12 C^2 + C * 5 (no LM head)
"""
from __future__ import annotations

import torch

from bench.timing import synchronize, timed

METHODS = ("full", "lora", "dora", "prefix")
LORA = dict(r=8, alpha=16, dropout=0.1)
TARGETS = ("c_attn", "c_proj")  # peft's target_modules; both sides match them as suffixes of module names
PREFIX = dict(n_prefix=10, hidden=512)
NUM_LABELS = 5  # --task sentiment: SST's five classes


def matmul_peak_gflops(n: int, repeats: int, device: str = "cpu", dtype=torch.float32) -> float:
    """GFLOP/s of an n x n x n torch.mm (2 n^3 FLOPs) in `dtype`: the machine's practical matmul peak."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)

    def mm():
        torch.mm(a, b)
        synchronize(device)

    return 2 * n**3 / timed(mm, repeats) / 1e9


def flops_per_token(method: str, cfg, T: int, task: str = "lm") -> float:
    """Model FLOPs of one training step per token (module docstring); the same count for both sides."""
    L, C, V = cfg.n_layer, cfg.n_embd, cfg.vocab_size
    blocks = L * 12 * C * C  # c_attn 3C^2, attn.c_proj C^2, c_fc 4C^2, mlp.c_proj 4C^2
    n = blocks + (V * C if task == "lm" else C * NUM_LABELS)  # LM head (tied) or classification head
    S = T + (PREFIX["n_prefix"] if method == "prefix" else 0)
    attention = 12 * L * S * C
    if method == "full":
        return 6 * n + attention
    # adapted layers (TARGETS as suffixes): attn.c_attn (C -> 3C), attn.c_proj (C -> C), mlp.c_proj (4C -> C)
    shapes = [(C, 3 * C), (C, C), (4 * C, C)]
    n_adapter = L * sum(LORA["r"] * (i + o) for i, o in shapes)
    n_wrapped = L * sum(i * o for i, o in shapes)
    frozen = 4 * n + attention
    if method == "lora":
        return frozen + 6 * n_adapter
    if method == "dora":
        return frozen + 6 * n_adapter + 4 * n_wrapped
    return frozen  # prefix
