"""What every decoder shares: the "no_grad + eval mode" wrapper, the prompt checks, and the padding mask.

Every decoder (greedy and sampling, contrastive search, beam search, the candidate ensemble) takes B left-padded
prompts (B, T) with attention_mask (B, T) (1 = token, 0 = padding), checks them with `check_prompt`, and runs
under `@inference`.
"""
from __future__ import annotations

import functools

import torch


def inference(decoder):
    """Run `decoder(model, ...)` under torch.no_grad() with the model in eval mode (dropout off), then put every
    submodule back in the train/eval mode it had: the caller's mode never changes."""

    @functools.wraps(decoder)
    def wrapper(model, *args, **kwargs):
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                return decoder(model, *args, **kwargs)
        finally:
            for m, training in modes:
                m.training = training

    return wrapper


def check_room(prompt_tokens: int, max_new_tokens: int, n_positions: int, prompt: str = "the prompt") -> None:
    """The command line's check that a prompt and --max-new-tokens fit the context, blaming the right one: a
    prompt that fills the context by itself is the prompt's fault, whatever --max-new-tokens says."""
    if prompt_tokens >= n_positions:
        raise ValueError(f"{prompt} has {prompt_tokens} tokens, which leaves none of the model's {n_positions} "
                         f"positions to generate in: shorten it to under {n_positions} tokens")
    if prompt_tokens + max_new_tokens > n_positions:
        raise ValueError(f"--max-new-tokens {max_new_tokens}: {prompt} ({prompt_tokens} tokens) plus these exceed "
                         f"the model's context of {n_positions} positions (at most {n_positions - prompt_tokens})")


def check_prompt(model, input_ids, max_new_tokens: int, eos_token_id: int | None, who: str,
                 attention_mask: torch.Tensor | None = None) -> None:
    """Clear errors for a batch of prompts the decoders cannot continue. We refuse (rather than silently truncate
    the left context) when prompt + max_new_tokens does not fit the model's n_positions."""
    if not (isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2 and input_ids.dtype == torch.long):
        what = (f"shape {tuple(input_ids.shape)}, dtype {input_ids.dtype}" if isinstance(input_ids, torch.Tensor)
                else type(input_ids).__name__)
        raise ValueError(f"{who}: input_ids must be a (B, T) LongTensor, got {what}")
    B, T = input_ids.shape
    if B == 0 or T == 0:
        raise ValueError(f"{who}: the prompt is empty (input_ids has shape {(B, T)}); give at least one token")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"{who}: max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    cfg = model.config
    if T + max_new_tokens > cfg.n_positions:
        raise ValueError(
            f"{who}: prompt of {T} tokens + max_new_tokens={max_new_tokens} = {T + max_new_tokens} is longer "
            f"than the model's n_positions={cfg.n_positions}; shorten the prompt or ask for fewer tokens"
        )
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= cfg.vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{who}: token id {bad} in input_ids is outside the vocabulary [0, {cfg.vocab_size})")
    if eos_token_id is not None and not (isinstance(eos_token_id, int) and 0 <= eos_token_id < cfg.vocab_size):
        raise ValueError(f"{who}: eos_token_id must be None or an id in [0, {cfg.vocab_size}), got {eos_token_id!r}")
    if attention_mask is not None:
        check_padding(attention_mask, (B, T), who)


def check_padding(attention_mask, shape: tuple[int, int], who: str) -> None:
    """attention_mask: (B, T) of 0 (padding) and 1 (token), every row left-padded: zeros, then ones."""
    if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != shape:
        got = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
        raise ValueError(f"{who}: attention_mask must be a tensor shaped like input_ids {shape}, got {got}")
    m = attention_mask.long()
    if bool(((m != 0) & (m != 1)).any()):
        raise ValueError(f"{who}: attention_mask must hold only 0 (padding) and 1 (token)")
    bad = (m[:, 1:] < m[:, :-1]).any(dim=1) | (m[:, -1] == 0)  # a 1 followed by a 0, or no token at all
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(f"{who}: attention_mask row {row} is not left-padded (padding first, then at least one "
                         "token); pad prompts on the left for generation (encode_batch(padding_side='left'))")


def padding_mask(attention_mask: torch.Tensor | None, max_new_tokens: int) -> torch.Tensor | None:
    """The mask for prompt + every new token: (B, T) -> (B, T + max_new_tokens), new tokens all 1.
    None when nothing is padded, so the model takes its plain causal path (as for a single prompt)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    new = attention_mask.new_ones((attention_mask.size(0), max_new_tokens))
    return torch.cat([attention_mask, new], dim=1)  # (B, T + max_new_tokens)


def mask_upto(mask: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """The first n columns of the running mask (the tokens fed so far), or None."""
    return None if mask is None else mask[:, :n]
