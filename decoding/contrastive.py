"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation", eq. 5).

At each step the k most likely next tokens V_k are the candidates; the chosen one balances model confidence
against a "degeneration penalty", the similarity of the candidate's hidden state to those of the context:

    x_t = argmax_{v in V_k} (1 - alpha) * p(v | x_<t)  -  alpha * max_{1 <= j < t} cos(h_v, h_j)

h_j are the final hidden states (after ln_f) of the prompt and of every generated token; h_v is the hidden
state the model produces when v is appended. alpha = 0 is greedy decoding; a large alpha avoids repeating
itself. Token for token the same as transformers' `generate(penalty_alpha=alpha, top_k=k)`.

The k candidates run in ONE batched forward on the cache (batch k, one token each; B * k rows for B prompts).
The chosen candidate's forward already gives the next step's hidden state, KV cache and logits, so one forward
per step suffices; the LM head is applied to the chosen candidate only. The cache is preallocated with k rows per prompt
(minigpt/kv_cache.py): a step writes one position per row, and the chosen row's keys/values at that position
are copied to the other rows of its prompt.

Options from our sonnet experiments, each off by default:
    dynamic_alpha       alpha rises linearly from `alpha_start` (first token) to `alpha_end` (default: `alpha`,
                        last token): fluent openings, stronger anti-repetition as the text grows.
    use_mean_sim        the penalty is the mean cosine similarity to the context instead of the max.
    repetition_penalty  CTRL (Keskar et al. 2019) on tokens already in the sequence, before the top-k:
                        a positive logit is divided by the penalty, a negative one multiplied (penalty > 1
                        makes repeats less likely). Left padding is not a seen token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minigpt.kv_cache import KVCache

from .common import check_prompt, inference, mask_upto, padding_mask


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V); seen (B, L) the token ids so far of each row -> logits with every seen token penalised
    once (a token seen twice is gathered twice and written back with the same value)."""
    scores = logits.gather(1, seen)  # (B, L)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(1, seen, scores)


def step_alpha(step: int, max_new_tokens: int, alpha: float, dynamic: bool, start: float, end: float) -> float:
    """alpha for the step-th new token (0-based): constant, or linear from start to end over the generation."""
    if not dynamic:
        return alpha
    return start + (end - start) * step / max(1, max_new_tokens - 1)


def unit(h: torch.Tensor) -> torch.Tensor:
    """Scale each row to length 1, so dot products are cosine similarities."""
    return h / h.norm(dim=-1, keepdim=True)


def degeneration_penalty(cosine: torch.Tensor, is_real: torch.Tensor | None, use_mean_sim: bool) -> torch.Tensor:
    """cosine (B, n, k): cos(h_j, h_v) -> (B, k), the max (or mean) over the context positions j that are tokens.
    is_real: (B, n, 1) bool, False at padding (which takes no part); None when there is no padding."""
    if is_real is None:
        return cosine.mean(dim=1) if use_mean_sim else cosine.max(dim=1).values
    if use_mean_sim:
        return (cosine * is_real).sum(dim=1) / is_real.sum(dim=1)
    return cosine.masked_fill(~is_real, float("-inf")).max(dim=1).values


def check_contrastive_options(top_k, alpha, repetition_penalty, alpha_start, alpha_end, vocab_size) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"contrastive_search: top_k must be an integer >= 1, got {top_k!r}")
    if top_k > vocab_size:
        raise ValueError(f"contrastive_search: top_k={top_k} is larger than the vocabulary ({vocab_size})")
    for name, value in (("alpha", alpha), ("alpha_start", alpha_start), ("alpha_end", alpha_end)):
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"contrastive_search: {name} must be in [0, 1], got {value!r}")
    if not isinstance(repetition_penalty, (int, float)) or not repetition_penalty > 0:
        raise ValueError(f"contrastive_search: repetition_penalty must be > 0 (1.0 = off), got {repetition_penalty!r}")


@inference
def contrastive_search(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    top_k: int = 4,
    alpha: float = 0.6,
    dynamic_alpha: bool = False,
    use_mean_sim: bool = False,
    repetition_penalty: float = 1.0,
    eos_token_id: int | None = None,
    alpha_start: float = 0.0,
    alpha_end: float | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, T) left-padded prompts -> (B, T + n); rows that end early are padded with eos_token_id.

    attention_mask: (B, T), 1 = token, 0 = padding (None = no padding); padding never enters the similarity.
    alpha_start / alpha_end only matter with dynamic_alpha=True."""
    check_prompt(model, input_ids, max_new_tokens, eos_token_id, "contrastive_search", attention_mask)
    alpha_end = alpha if alpha_end is None else alpha_end
    check_contrastive_options(top_k, alpha, repetition_penalty, alpha_start, alpha_end, model.config.vocab_size)
    B, T = input_ids.shape
    k, L = top_k, T + max_new_tokens
    mask = padding_mask(attention_mask, max_new_tokens)  # (B, L) or None
    real = None if mask is None else mask.bool()  # (B, L): which positions are tokens (None: all of them)

    prompt_cache = KVCache(model.config.n_layer, capacity=L)
    out = model(input_ids, attention_mask=mask_upto(mask, T), past_key_values=prompt_cache, use_cache=True,
                logits_to_keep=1)
    # unit hidden states of the context, preallocated: context[b, j] = h_j / |h_j| of prompt b
    context = out.hidden_states.new_empty((B, L, model.config.n_embd))
    context[:, :T] = unit(out.hidden_states)  # (B, T, C)
    logits = out.logits[:, -1].float()  # (B, V)
    # prompt b's k candidates are rows b * k .. b * k + k - 1 of one cache; the rows of a group hold the same
    # context and differ only in the position being decided; after each choice the chosen row's keys/values
    # there go to every row of its group
    cache = prompt_cache.repeat_rows(k)
    cand_mask = None if mask is None else mask.repeat_interleave(k, dim=0)  # (B * k, L)
    tokens = input_ids.new_empty((B, L))  # the prompts, then each chosen token
    tokens[:, :T] = input_ids
    # repetition penalty: padding is not a seen token, so it is replaced by the row's last prompt token
    seen = tokens if mask is None else torch.where(real, tokens, input_ids[:, -1:])  # (B, L) after each step
    unfinished = torch.ones(B, dtype=torch.bool, device=input_ids.device)  # (B,)
    rows = torch.arange(B, device=input_ids.device)

    n = T  # tokens so far
    for step in range(max_new_tokens):
        if repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, seen[:, :n], repetition_penalty)
        probs = F.softmax(logits, dim=-1)
        top_probs, top_ids = torch.topk(probs, k=k, dim=-1)  # (B, k) each, most likely first

        # the B * k candidates as one batch of one-token continuations, one cache row each
        cand = model(top_ids.view(B * k, 1), attention_mask=mask_upto(cand_mask, n + 1), past_key_values=cache,
                     use_cache=True, logits_to_keep=0)
        h = cand.hidden_states[:, 0].view(B, k, -1)  # (B, k, C)

        cosine = context[:, :n] @ unit(h).transpose(1, 2)  # (B, n, k): cos(h_j, h_v)
        penalty = degeneration_penalty(cosine, None if real is None else real[:, :n, None], use_mean_sim)  # (B, k)
        a = step_alpha(step, max_new_tokens, alpha, dynamic_alpha, alpha_start, alpha_end)
        score = (1.0 - a) * top_probs - a * penalty  # (B, k)
        best = score.argmax(dim=-1)  # (B,), the first one on ties

        token = top_ids[rows, best]  # (B,)
        if eos_token_id is not None:
            token = token.masked_fill(~unfinished, eos_token_id)  # finished rows: padding
            unfinished &= token != eos_token_id
        tokens[:, n] = token
        if seen is not tokens:
            seen[:, n] = token
        context[:, n] = unit(h[rows, best])  # (B, C)
        n += 1
        if step == max_new_tokens - 1 or (eos_token_id is not None and not bool(unfinished.any())):
            break
        # next step: each group's chosen keys/values in all its rows, and its logits (LM head on it only)
        cache.keep_rows(best, position=cache.length - 1)
        logits = model.lm_head(h[rows, best]).float()  # (B, V)
    return tokens[:, :n]
