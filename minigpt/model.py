"""GPT-2 (Radford et al. 2019), the whole model.

    h_0 = W_te[tokens] + W_pe[positions]                   token + position embeddings
    h_l = Block_l(h_{l-1})            for l = 1 .. n_layer  pre-LN transformer blocks (block.py)
    h   = LayerNorm_f(h_L)                                  final LayerNorm
    logits = h W_te^T                                       LM head, tied to the token embedding

Parameter names follow the public checkpoint (wte, wpe, h.0.attn.c_attn, ..., ln_f), so loading it is a
rename and a transpose (checkpoint.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .attention import build_attention_mask
from .block import Block, LayerNorm
from .config import GPT2Config
from .dropout import Dropout
from .kv_cache import KVCache, LayerCache


@dataclass
class ModelOutput:
    logits: torch.Tensor | None  # (B, T, vocab), or only the last `logits_to_keep` positions
    hidden_states: torch.Tensor  # (B, T, C): the final hidden states, after ln_f
    past_key_values: KVCache | None  # with use_cache: every layer's keys/values, (B, n_head, T_total, head_dim)


class GPT2(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.config = cfg
        # token embedding, also the LM head; padding_idx (the course's model: 0) = the row the lookup never trains
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd, padding_idx=cfg.padding_idx)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)  # learned absolute positions
        self.drop = Dropout(cfg.dropout, cfg.fused)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = LayerNorm(cfg.n_embd, cfg.layer_norm_epsilon, cfg.fused)
        self.gradient_checkpointing = False  # set_gradient_checkpointing; a switch of this run, not of the weights
        self.apply(self._init_weights)
        # GPT-2 paper, section 2.3: scale the residual projections by 1/sqrt(N), N = 2 residual adds per layer.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def set_fused(self, fused: bool) -> "GPT2":
        """Switch every module between the fused kernels and the explicit equations (same numbers, within
        floating-point tolerance): attention, LayerNorm, GELU, dropout (and LoRA's dropout). The decoders read
        config.fused too (top-p's plain sort). `--explicit-math` calls set_fused(False)."""
        self.config.fused = fused
        for m in self.modules():
            if hasattr(m, "fused"):
                m.fused = fused
        return self

    def set_gradient_checkpointing(self, enabled: bool = True) -> "GPT2":
        """Trade compute for memory (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"): with it on,
        the backward pass keeps only each block's input and runs the block's forward again to get the rest, so the
        activations held between forward and backward shrink from every tensor inside every block to one (B, T, C)
        tensor per block, at the price of a second forward of the blocks (about a third more compute).

        torch.utils.checkpoint, non-reentrant, with the random state saved and restored: the recomputed dropout
        masks are the ones of the first pass, so the gradients are the same. Off in eval and under no_grad (nothing
        to save). HF's name for the same switch; `--gradient-checkpointing` on the training commands calls it."""
        self.gradient_checkpointing = enabled
        return self

    def run_blocks(self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        """h_l = Block_l(h_{l-1}) for l = 1 .. n_layer: (B, T, C) -> (B, T, C); each block recomputed in the
        backward pass when gradient checkpointing is on."""
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()
        for i, block in enumerate(self.h):
            layer = None if cache is None else cache[i]
            x = recomputed(block, x, mask, layer) if recompute else block(x, mask, layer)  # (B, T, C)
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int | None = None,
    ) -> ModelOutput:
        """input_ids: (B, T) token ids.

        attention_mask: (B, T_past + T), 1 = real token, 0 = padding (may be left padding); positions then
            count real tokens only, so a left-padded row gives the same logits as the row alone.
        past_key_values: a KVCache (kv_cache.py) holding the earlier positions; this call writes its keys and
            values into it (pass the same one each step). use_cache=True without one: a new KVCache, returned
            in ModelOutput.past_key_values.
        position_ids: (B, T) explicit positions (default: from the mask, else T_past, T_past + 1, ...).
        logits_to_keep: None = logits for every position; n = only the last n (0 = none; saves the LM head).
        """
        cache = self.cache_for(past_key_values, use_cache, T=input_ids.size(1))
        position_ids = self.positions(input_ids, attention_mask, cache, position_ids)  # (B, T)
        mask = None if attention_mask is None else build_attention_mask(attention_mask, input_ids.size(1))

        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))  # (B, T, C)
        x = self.run_blocks(x, mask, cache)  # (B, T, C)
        x = self.ln_f(x)  # (B, T, C)
        logits = self.logits(x, logits_to_keep)  # (B, T or logits_to_keep, vocab), or None
        return ModelOutput(logits, x, cache if use_cache else None)

    # ----- the helpers of forward: the cache, the positions (and the checks on them), the LM head -----------------
    def cache_for(self, past_key_values: KVCache | None, use_cache: bool, T: int) -> KVCache | None:
        """The KVCache this call writes into: the one passed in, a new one for use_cache=True, or None."""
        if past_key_values is not None and not isinstance(past_key_values, KVCache):
            raise ValueError(f"past_key_values must be a minigpt KVCache (minigpt/kv_cache.py) or None, got "
                             f"{type(past_key_values).__name__}")
        if past_key_values is None and use_cache:
            return KVCache(self.config.n_layer, capacity=T)
        return past_key_values

    def positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: KVCache | None,
                  position_ids: torch.Tensor | None) -> torch.Tensor:
        """(B, T) position ids: the ones given, else counted from the mask, else T_past, T_past + 1, ...; the mask's
        shape and the last position against n_positions are checked here, where they enter."""
        B, T = input_ids.shape
        past_len = 0 if cache is None else cache.length
        if attention_mask is not None and attention_mask.shape != (B, past_len + T):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected (batch, past + new) = "
                f"({B}, {past_len + T})"
            )
        if position_ids is None:
            last_position = past_len + T - 1  # positions never exceed the number of tokens so far
            position_ids = self.default_positions(B, T, past_len, attention_mask, input_ids.device)
        else:
            last_position = int(position_ids.max()) if T > 0 else 0
        if last_position >= self.config.n_positions:
            raise ValueError(
                f"sequence of {last_position + 1} positions is longer than this model's "
                f"n_positions={self.config.n_positions}; shorten the input"
            )
        return position_ids

    def logits(self, x: torch.Tensor, logits_to_keep: int | None) -> torch.Tensor | None:
        """The LM head over every position (logits_to_keep None), the last n only, or none (0): (B, T', vocab)."""
        if logits_to_keep is None:
            return self.lm_head(x)
        return self.lm_head(x[:, -logits_to_keep:]) if logits_to_keep > 0 else None

    def lm_head(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states (..., C) -> logits (..., vocab): the LM head, tied to the token embedding."""
        return F.linear(h, self.wte.weight)

    @staticmethod
    def default_positions(B, T, past_len, attention_mask, device) -> torch.Tensor:
        if attention_mask is None:
            return torch.arange(past_len, past_len + T, device=device).expand(B, T)
        # position of a real token = number of real tokens before it; padding gets 0 (ignored anyway)
        positions = attention_mask.long().cumsum(dim=-1) - 1
        return positions.clamp(min=0)[:, past_len:]  # (B, T)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied head is the embedding: counted once


def recomputed(block: Block, x: torch.Tensor, mask: torch.Tensor | None, layer: LayerCache | None) -> torch.Tensor:
    """block(x, mask, layer), its inner activations dropped after the forward and recomputed in the backward.

    A cached layer (prefix-tuning trains through its KV cache) is rewound to where this block found it before the
    recomputation, so the block writes the same keys and values into the same positions again."""
    start = None if layer is None else layer.length

    def run(x: torch.Tensor) -> torch.Tensor:
        if layer is not None:
            layer.length = start
        return block(x, mask, layer)

    return checkpoint(run, x, use_reentrant=False)  # preserve_rng_state (default): the same dropout masks
