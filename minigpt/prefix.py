"""Prefix-tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation").

The pretrained GPT2 stays frozen. Every layer gets n_prefix extra key/value pairs that every real token may attend
to, as if a learned "virtual prompt" came before the input (section 4.1):

    h_i = P_theta[i, :]          for the prefix positions i < n_prefix     (only P_theta trains)

Optimising P_theta directly is unstable, so the paper reparameterises it with an MLP over a smaller matrix
(section 4.3):

    P_theta[i, :] = MLP(P'_theta[i, :])      P': (n_prefix, C),  MLP: C -> hidden -> tanh -> n_layer * 2 * C

After training only P_theta is needed: `fold_mlp()` replaces the MLP by its output.

The prefixes enter the model through the KV-cache door (attention.py): they are the first n_prefix positions of
the KVCache passed as `past_key_values`, so the model itself needs no change. Real tokens still start at position
0: the prefix has no position embedding.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .kv_cache import KVCache
from .model import GPT2, ModelOutput
from .state_dict import state_dict_problems


class PrefixTuning(nn.Module):
    """A frozen GPT2 plus learned per-layer key/value prefixes; call it exactly like the GPT2 itself."""

    def __init__(self, model: GPT2, n_prefix: int = 10, hidden: int = 512, use_mlp: bool = True):
        super().__init__()
        if not isinstance(model, GPT2):
            raise TypeError(f"PrefixTuning wraps a minigpt GPT2, got {type(model).__name__}")
        if not isinstance(n_prefix, int) or n_prefix < 1:
            raise ValueError(f"n_prefix must be a positive integer, got {n_prefix!r}")
        cfg = model.config
        self.model = model.requires_grad_(False)  # frozen: only the prefix parameters below train
        self.n_prefix = n_prefix
        self.n_layer, self.n_head, self.head_dim = cfg.n_layer, cfg.n_head, cfg.head_dim
        out_dim = cfg.n_layer * 2 * cfg.n_embd  # one key and one value vector per layer
        factory = dict(device=model.wte.weight.device, dtype=model.wte.weight.dtype)
        if use_mlp:
            if not isinstance(hidden, int) or hidden < 1:
                raise ValueError(f"prefix MLP hidden size must be a positive integer, got {hidden!r}")
            self.prefix_embedding = nn.Parameter(torch.randn(n_prefix, cfg.n_embd, **factory))  # P', (P, C)
            self.mlp = nn.Sequential(
                nn.Linear(cfg.n_embd, hidden, **factory), nn.Tanh(), nn.Linear(hidden, out_dim, **factory)
            )
        else:
            self.prefix = nn.Parameter(0.02 * torch.randn(n_prefix, out_dim, **factory))  # P_theta, (P, L*2*C)

    @property
    def config(self):
        return self.model.config  # decoders read n_positions and eos_token_id here

    def lm_head(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(h)  # the frozen model's own head: decoders call it on chosen hidden states

    def set_fused(self, fused: bool) -> "PrefixTuning":
        """GPT2.set_fused on the wrapped model (the prefix MLP has no fused form)."""
        self.model.set_fused(fused)
        return self

    def prefix_matrix(self) -> torch.Tensor:
        """P_theta: (n_prefix, n_layer * 2 * C), through the MLP or directly."""
        if hasattr(self, "mlp"):
            return self.mlp(self.prefix_embedding)
        return self.prefix

    def prefix_key_values(self, batch_size: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (k, v), each (batch_size, n_head, n_prefix, head_dim): what goes first into the KVCache."""
        P, L, H, D = self.n_prefix, self.n_layer, self.n_head, self.head_dim
        kv = self.prefix_matrix().view(P, L, 2, H, D).permute(1, 2, 3, 0, 4)  # (L, 2, H, P, D)
        return [(kv[i, 0].expand(batch_size, H, P, D), kv[i, 1].expand(batch_size, H, P, D)) for i in range(L)]

    @torch.no_grad()
    def fold_mlp(self) -> "PrefixTuning":
        """Replace the MLP reparameterisation by its output P_theta (Li & Liang 4.3); outputs do not change."""
        if hasattr(self, "mlp"):
            self.prefix = nn.Parameter(self.prefix_matrix().detach().clone())
            del self.mlp, self.prefix_embedding
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int | None = None,
    ) -> ModelOutput:
        """Same arguments and output as GPT2.forward; the returned past_key_values include the prefix.

        First call: no cache (a new KVCache is made) or an empty KVCache; it first receives the prefix. Later calls
        pass the same cache (out.past_key_values) back.
        attention_mask may cover the real tokens only (B, T_real_past + T) or also the prefix
        (B, n_prefix + T_real_past + T); either way 1 = real token, and positions count real tokens from 0.
        """
        B, T = input_ids.shape
        if past_key_values is None:
            past_key_values = KVCache(self.n_layer, capacity=self.n_prefix + T)
        if not isinstance(past_key_values, KVCache):
            raise ValueError(f"past_key_values must be a minigpt KVCache (minigpt/kv_cache.py) or None, got "
                             f"{type(past_key_values).__name__}")
        if past_key_values.length == 0:
            for layer, (k, v) in zip(past_key_values.layers, self.prefix_key_values(B)):
                layer.append(k, v)  # an empty cache starts with the prefix
        past_len = past_key_values.length  # prefix + real tokens already cached
        if past_len < self.n_prefix:
            raise ValueError(
                f"past_key_values hold {past_len} positions, fewer than the {self.n_prefix} prefix positions; "
                "pass the cache that an earlier PrefixTuning call returned"
            )
        real_past = past_len - self.n_prefix
        real_mask = None
        if attention_mask is not None:
            real_mask = self.real_token_mask(attention_mask, B, real_past + T)
            prefix_ones = real_mask.new_ones(B, self.n_prefix)
            attention_mask = torch.cat((prefix_ones, real_mask), dim=1)  # (B, past_len + T)
        if position_ids is None:
            position_ids = GPT2.default_positions(B, T, real_past, real_mask, input_ids.device)  # from 0
        return self.model(input_ids, attention_mask, past_key_values, use_cache, position_ids, logits_to_keep)

    def real_token_mask(self, attention_mask: torch.Tensor, B: int, real_len: int) -> torch.Tensor:
        """The part of attention_mask that covers real tokens, (B, real_len)."""
        if attention_mask.shape == (B, real_len):
            return attention_mask
        if attention_mask.shape == (B, self.n_prefix + real_len):
            return attention_mask[:, self.n_prefix :]
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, expected ({B}, {real_len}) for the real "
            f"tokens or ({B}, {self.n_prefix + real_len}) with the {self.n_prefix} prefix positions"
        )

    def prefix_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the prefix parameters (not the frozen GPT2): what a prefix-tuning run needs to save."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}

    def load_prefix_state_dict(self, state_dict: dict[str, torch.Tensor]) -> "PrefixTuning":
        """Load what prefix_state_dict saved; ValueError naming every missing, unexpected or misshaped key."""
        problems = state_dict_problems(self.prefix_state_dict(), state_dict)
        if problems:
            raise ValueError("prefix state dict does not fit (same n_prefix, hidden, use_mlp and model size "
                             "needed): " + " | ".join(problems))
        self.load_state_dict(state_dict, strict=False)
        return self
