"""Checking a state dict against the model it should load into, before loading it.

torch's load_state_dict(strict=True) stops at the first kind of problem; `state_dict_problems` lists every
missing, unexpected and misshaped key at once, so one error message says everything. Used by LoRA/DoRA adapters
(lora.py) and prefix-tuning (prefix.py); it reads no files. `non_finite_tensors` names the tensors holding NaN or
infinity (the checkpoint reader warns of them, the trainer refuses them).
"""
from __future__ import annotations

import torch


def state_dict_problems(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> list[str]:
    """Why `given` cannot load where `expected` fits: one line per kind of problem (missing keys, unexpected
    keys, shape mismatches), each listing every key; empty when it fits."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = [f"{k}: saved {tuple(given[k].shape)}, model {tuple(expected[k].shape)}"
                  for k in sorted(set(expected) & set(given)) if given[k].shape != expected[k].shape]
    return [f"{what}: {', '.join(keys)}" for what, keys in
            (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mismatched)) if keys]


def refuse_non_finite(module: torch.nn.Module, doing: str) -> None:
    """Weights holding NaN/inf: refuse to train or decode from them, naming the tensors. (Decoding them, the
    fused kernels and the explicit equations would write different garbage: one rule, no text at all.)"""
    bad = non_finite_tensors(module.state_dict())
    if bad:
        raise ValueError(f"the model's weights hold NaN or infinity ({', '.join(bad[:5])}"
                         f"{' ...' if len(bad) > 5 else ''}): refusing to {doing} with them; load other weights")


def non_finite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors (all on one device) that hold NaN or infinity; one read of the
    answers, not one wait for the GPU per tensor."""
    names = [name for name, t in state.items() if t.is_floating_point()]
    finite = torch.stack([torch.isfinite(state[name]).all() for name in names]).tolist() if names else []
    return [name for name, ok in zip(names, finite) if not ok]
