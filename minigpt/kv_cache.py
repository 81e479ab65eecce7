"""The KV cache: the keys and values of every position so far, kept so that a step computes only its new ones.

One type for every user (the decoders, prefix-tuning, `model(..., use_cache=True)`): `KVCache` keeps each
layer's keys and values in one preallocated buffer (B, n_head, capacity, d_head), filled left to right. A step
writes its own T positions in place and attention reads the filled part, a view (no copy). (A list of (k, v)
pairs that `torch.cat`s each new key onto the past would copy all T_past positions of every layer every step.)

    cache = KVCache(config.n_layer, capacity=T + max_new_tokens)     # empty; buffers come with the first keys
    out = model(prompt, past_key_values=cache, use_cache=True)        # fills positions 0 .. T-1
    out = model(next_token, past_key_values=cache, use_cache=True)    # writes position T only

Pass the same `cache` object at every step (the model writes into it; `out.past_key_values` is that object).
Called with use_cache=True and no cache, the model makes one. A buffer that fills up is replaced by one twice as
large (one copy), so `capacity` is a size hint, not a limit. Prefix-tuning (prefix.py) appends its learned
prefixes first; gradients flow through the writes.
"""
from __future__ import annotations

import torch


class LayerCache:
    """One layer's keys and values: buffers (B, H, capacity, D), of which the first `length` positions are filled."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new keys/values (B, H, T, D) after the filled positions; return all of them, (B, H, S, D)."""
        start, end = self.length, self.length + k.size(2)
        if self.keys is None or end > self.keys.size(2):
            self.grow(k, end)
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def grow(self, k: torch.Tensor, needed: int) -> None:
        """New buffers shaped like k, with room for max(needed, capacity, 2 x the old size) positions."""
        B, H, _, D = k.shape
        size = max(needed, self.capacity, 2 * (0 if self.keys is None else self.keys.size(2)))
        keys, values = k.new_empty(B, H, size, D), k.new_empty(B, H, size, D)
        if self.keys is not None:
            keys[:, :, : self.length] = self.keys[:, :, : self.length]
            values[:, :, : self.length] = self.values[:, :, : self.length]
        self.keys, self.values = keys, values

    def filled(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]


class KVCache:
    """The preallocated cache of every layer; `cache[i]` is layer i's LayerCache."""

    def __init__(self, n_layer: int, capacity: int):
        self.capacity = capacity
        self.layers = [LayerCache(capacity) for _ in range(n_layer)]

    def __getitem__(self, i: int) -> LayerCache:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def length(self) -> int:
        """Positions cached (the same in every layer after a forward)."""
        return self.layers[0].length

    def repeat_rows(self, n: int) -> "KVCache":
        """A new cache of B * n rows: rows b * n .. b * n + n - 1 each hold row b's positions (a group per prompt:
        the candidates of contrastive search, the beams of beam search)."""
        out = KVCache(len(self.layers), self.capacity)
        for i, layer in enumerate(self.layers):
            k, v = layer.filled()  # (B, H, S, D)
            out[i].append(k.repeat_interleave(n, dim=0), v.repeat_interleave(n, dim=0))  # (B * n, H, S, D)
        return out

    def reorder_rows(self, rows: torch.Tensor) -> None:
        """Row r takes over the keys/values of row rows[r] (beam search: each beam continues its parent; rows
        index the whole cache, so a beam of prompt b names a row of prompt b's group)."""
        for layer in self.layers:
            layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)

    def keep_rows(self, chosen: torch.Tensor, position: int) -> None:
        """The rows form B groups of n consecutive rows (repeat_rows); in group b, copy the keys/values at
        `position` of its row chosen[b] (0 <= chosen[b] < n) into all n rows. chosen: (B,) LongTensor."""
        B = chosen.numel()
        device = self.layers[0].keys.device
        group, chosen = torch.arange(B, device=device), chosen.to(device)  # made once, not per layer
        for layer in self.layers:
            for buffer in (layer.keys, layer.values):
                groups = buffer.view(B, -1, *buffer.shape[1:])  # (B, n, H, capacity, D), a view
                picked = groups[group, chosen, :, position]  # (B, H, D), a copy
                groups[:, :, :, position] = picked[:, None]

