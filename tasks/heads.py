"""GPT-2 with a classification head: pool the final hidden states of each row, then one linear layer.

    h = GPT2(x)                    (B, T, C)  final hidden states (after ln_f); the LM head is never computed
    e = pool(h, mask)              (B, C)     one vector per row
    logits = W dropout(e) + b      (B, K)

Pooling (the attention mask says which positions are real tokens, 1, and which are padding, 0):

    last:  e_b = h_{b, t_b},  t_b = the largest t with mask_{b,t} = 1     (the last real token)
    mean:  e_b = sum_t mask_{b,t} h_{b,t} / sum_t mask_{b,t}            (padding ignored)

GPT-2 is causal, so only the last real token has seen the whole text: `last` is the natural summary (what
GPT2ForSequenceClassification uses). `h[:, -1]` would be wrong for right-padded rows (it reads padding) and
right only by accident for left-padded ones; `last_token_index` finds t_b from the mask under either padding side.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

POOLINGS = ("last", "mean")


@dataclass
class ClassifierOutput:
    logits: torch.Tensor  # (B, K)
    pooled: torch.Tensor  # (B, C): the vector the head classified (SimCSE uses it as the sentence embedding)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B,) the position of each row's last real token, for left or right padding."""
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be (batch, time), got shape {tuple(attention_mask.shape)}")
    if not bool((attention_mask.sum(dim=1) > 0).all()):
        raise ValueError("a row of the batch has no real token (its attention mask is all zeros)")
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)  # (T,)
    return (attention_mask.long() * positions).argmax(dim=1)  # (B,): the largest position holding a 1


def pool_last(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, C), (B, T) -> (B, C): the hidden state at each row's last real token."""
    index = last_token_index(attention_mask)  # (B,)
    return hidden[torch.arange(hidden.size(0), device=hidden.device), index]  # (B, C)


def pool_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, C), (B, T) -> (B, C): the mean over each row's real tokens only."""
    if not bool((attention_mask.sum(dim=1) > 0).all()):
        raise ValueError("a row of the batch has no real token (its attention mask is all zeros)")
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1)  # (B, C)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "last":
        return pool_last(hidden, attention_mask)
    if pooling == "mean":
        return pool_mean(hidden, attention_mask)
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


class ClassificationHead(nn.Module):
    """hidden states (B, T, C) + mask -> ClassifierOutput(logits (B, K), pooled (B, C))."""

    def __init__(self, n_embd: int, num_labels: int, pooling: str = "last", dropout: float = 0.1):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(n_embd, num_labels)  # W: (K, C), b: (K,)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> ClassifierOutput:
        pooled = pool(hidden, attention_mask, self.pooling)  # (B, C)
        return ClassifierOutput(self.proj(self.dropout(pooled)), pooled)


class GPT2Classifier(nn.Module):
    """GPT-2 body + ClassificationHead. forward(input_ids, attention_mask) -> ClassifierOutput.

    `body` is a GPT2, possibly with LoRA/DoRA adapters injected (minigpt/lora.py) or frozen (last-linear-layer).
    """

    def __init__(self, body: nn.Module, num_labels: int, pooling: str = "last", dropout: float | None = None):
        super().__init__()
        cfg = body.config
        self.body = body
        self.head = ClassificationHead(cfg.n_embd, num_labels, pooling, cfg.dropout if dropout is None else dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ClassifierOutput:
        hidden = self.body(input_ids, attention_mask=attention_mask, logits_to_keep=0).hidden_states  # (B, T, C)
        return self.head(hidden, attention_mask)
