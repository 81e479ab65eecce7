"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation", eq. 5).

At each step the k most likely next tokens V_k are the candidates; the chosen one balances model confidence
against a "degeneration penalty", the similarity of the candidate's hidden state to those of the context:

    x_t = argmax_{v in V_k} (1 - alpha) * p(v | x_<t)  -  alpha * max_{1 <= j < t} cos(h_v, h_j)

h_j are the final hidden states (after ln_f) of the prompt and of every generated token; h_v is the hidden
state the model produces when v is appended. alpha = 0 is greedy decoding; a large alpha avoids repeating
itself. Token for token the same as transformers' `generate(penalty_alpha=alpha, top_k=k)`.

The k candidates run in ONE batched forward on the cache (batch k, one token each). The chosen candidate's
forward already gives the next step's hidden state, KV cache and logits, so one forward per step suffices; the
LM head is applied to the chosen candidate only. The cache is preallocated with k rows (minigpt/kv_cache.py):
a step writes one position per row, and the chosen row's keys/values at that position are copied to the others.

Options from our sonnet experiments, each off by default:
    dynamic_alpha       alpha rises linearly from `alpha_start` (first token) to `alpha_end` (default: `alpha`,
                        last token): fluent openings, stronger anti-repetition as the text grows.
    use_mean_sim        the penalty is the mean cosine similarity to the context instead of the max.
    repetition_penalty  CTRL (Keskar et al. 2019) on tokens already in the sequence, before the top-k:
                        a positive logit is divided by the penalty, a negative one multiplied (penalty > 1
                        makes repeats less likely).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minigpt.kv_cache import KVCache

from .sampling import check_prompt, inference


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (1, V); seen (1, L) the token ids so far -> logits with every seen token penalised once."""
    scores = logits.gather(1, seen)  # (1, L)
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
) -> torch.Tensor:
    """(1, T) prompt -> (1, T + n). alpha_start / alpha_end only matter with dynamic_alpha=True."""
    check_prompt(model, input_ids, max_new_tokens, eos_token_id, "contrastive_search")
    alpha_end = alpha if alpha_end is None else alpha_end
    check_contrastive_options(top_k, alpha, repetition_penalty, alpha_start, alpha_end, model.config.vocab_size)
    T = input_ids.size(1)

    prompt_cache = KVCache(model.config.n_layer, capacity=T + max_new_tokens)
    out = model(input_ids, past_key_values=prompt_cache, use_cache=True, logits_to_keep=1)
    # unit hidden states of the context, preallocated: row j is h_j / |h_j|
    context = input_ids.new_empty((T + max_new_tokens, model.config.n_embd), dtype=out.hidden_states.dtype)
    context[:T] = unit(out.hidden_states[0])  # (T, C)
    logits = out.logits[:, -1].float()  # (1, V)
    # the k candidates run as k rows of one cache; every row holds the same context, they differ only in the
    # position being decided, and after each choice the chosen row's keys/values there go to every row
    cache = prompt_cache.repeat_rows(top_k)
    tokens = input_ids.new_empty((1, T + max_new_tokens))  # the prompt, then each chosen token
    tokens[:, :T] = input_ids

    n = T  # tokens so far
    for step in range(max_new_tokens):
        if repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, tokens[:, :n], repetition_penalty)
        probs = F.softmax(logits, dim=-1)
        top_probs, top_ids = torch.topk(probs, k=top_k, dim=-1)  # (1, k) each, most likely first

        # the k candidates as a batch of k one-token continuations of the same context
        cand = model(top_ids.view(top_k, 1), past_key_values=cache, use_cache=True, logits_to_keep=0)
        h = cand.hidden_states[:, 0]  # (k, C)

        cosine = context[:n] @ unit(h).T  # (n, k): cos(h_j, h_v)
        penalty = cosine.mean(dim=0) if use_mean_sim else cosine.max(dim=0).values  # (k,)
        a = step_alpha(step, max_new_tokens, alpha, dynamic_alpha, alpha_start, alpha_end)
        score = (1.0 - a) * top_probs[0] - a * penalty  # (k,)
        best = int(score.argmax())  # the first one on ties

        tokens[0, n] = top_ids[0, best]
        context[n] = unit(h[best])
        n += 1
        if step == max_new_tokens - 1 or (eos_token_id is not None and int(top_ids[0, best]) == eos_token_id):
            break
        # next step: the chosen candidate's keys/values in every row, and its logits (LM head on it only)
        cache.keep_row(best, position=cache.length - 1)
        logits = model.lm_head(h[best : best + 1]).float()  # (1, V)
    return tokens[:, :n]
