"""Greedy decoding and sampling: temperature, top-k and top-p (nucleus) filters, with the KV cache.

Autoregressive decoding picks one token at a time from p(x_t | x_<t) = softmax(logits_t):

    greedy:   x_t = argmax_v logits_t[v]
    sampling: x_t ~ softmax(filter(logits_t))

The filters rewrite a row of logits, setting the removed entries to -inf (probability 0), and are applied in
this order (as transformers' `generate` does):

    temperature (Ackley et al. 1985):  logits / T             T > 1 flattens, T < 1 sharpens the distribution
    top-k (Fan et al. 2018):           keep the k largest logits (ties with the k-th largest are all kept)
    top-p (Holtzman et al. 2020):      keep the smallest set of most likely tokens whose probability mass is
                                       >= p; the token that crosses p is kept

Every decoder in this package shares the checks and the "no_grad + eval mode" wrapper of common.py.

Batches: every decoder takes B left-padded prompts (B, T) with attention_mask (B, T) (1 = token, 0 = padding).
Greedy, beam search and contrastive search (its default options) return what transformers' `generate` returns
for the same batch with pad_token_id = eos_token_id; sampling does too with one generator (a list of them, one
per row, is ours); contrastive search with padding does not let the repetition penalty count pad tokens.

KV cache: the prompt is run once (the "prefill"; only its last position needs logits, `logits_to_keep=1`), then
each step feeds the one new token together with the cached keys and values of everything before it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minigpt.kv_cache import KVCache

from .common import check_prompt, inference, mask_upto, padding_mask


def check_generator(generator, model, batch_size: int, who: str) -> None:
    """generator: None, one torch.Generator, or a list of batch_size of them, on the model's device."""
    gens = generator if isinstance(generator, (list, tuple)) else [generator]
    if isinstance(generator, (list, tuple)) and len(generator) != batch_size:
        raise ValueError(f"{who}: got {len(generator)} generators for {batch_size} prompts; give one per prompt")
    device = next(model.parameters()).device
    for g in gens:
        if g is not None and not isinstance(g, torch.Generator):
            raise ValueError(f"{who}: generator must be a torch.Generator or a list of them, got {type(g).__name__}")
        if g is not None and (g.device.type, g.device.index or 0) != (device.type, device.index or 0):
            raise ValueError(f"{who}: the generator is on {g.device} but the model is on {device}; "
                             f"create it with torch.Generator(device='{device}')")


# ----- the filters: (..., vocab) logits -> the same shape, removed entries set to -inf ---------------------------


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep every logit >= the k-th largest of its row (so ties at the boundary are all kept)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be a positive integer, got {k!r}")
    k = min(k, logits.size(-1))
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter, the plain form (as transformers writes it). Sorting ascending, a token is removed when the
    mass of it and every less likely token is <= 1 - p; the remaining (most likely) tokens hold mass >= p, and the
    most likely token always stays. The mask is built in sorted order, then scattered back to the vocabulary."""
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)  # (..., vocab), least likely first
    mass_up_to = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (..., vocab), non-decreasing
    remove_sorted = mass_up_to <= 1 - p
    remove_sorted[..., -1] = False  # the most likely token is never removed
    remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """Temperature, then top-k (0 = off), then top-p (1.0 = off)."""
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    if top_k != 0:
        logits = top_k_filter(logits, top_k)
    if top_p != 1.0:
        logits = top_p_filter(logits, top_p)
    return logits


def check_sampling_options(temperature, top_k, top_p) -> None:
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"sample: temperature must be > 0, got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"sample: top_k must be an integer >= 0 (0 = no top-k filter), got {top_k!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"sample: top_p must be in (0, 1] (1.0 = no top-p filter), got {top_p!r}")


# ----- the decoding loop ---------------------------------------------------------------------------------------


def decode_loop(model, input_ids, attention_mask, max_new_tokens, choose, eos_token_id) -> torch.Tensor:
    """Prefill the prompts, then repeatedly: choose a token per row from the last logits (B, V) -> (B, 1), feed
    them all in one forward (the weights are read once for the whole batch).

    A row that has produced eos_token_id is finished: its later tokens are eos (padding, as transformers writes
    them with pad_token_id = eos_token_id). The loop stops after max_new_tokens tokens or when every row is
    finished. The keys and values go into a preallocated cache (minigpt/kv_cache.py): each step writes one
    position per row."""
    B, T = input_ids.shape
    mask = padding_mask(attention_mask, max_new_tokens)  # (B, T + max_new) or None
    cache = KVCache(model.config.n_layer, capacity=T + max_new_tokens)
    out = model(input_ids, attention_mask=mask_upto(mask, T), past_key_values=cache, use_cache=True,
                logits_to_keep=1)  # only the last logits
    unfinished = torch.ones(B, dtype=torch.bool, device=input_ids.device)  # (B,)
    new_tokens = []
    for step in range(max_new_tokens):
        token = choose(out.logits[:, -1])  # (B, V) -> (B, 1)
        if eos_token_id is not None:
            token = token.masked_fill(~unfinished[:, None], eos_token_id)  # finished rows: padding
            unfinished &= token[:, 0] != eos_token_id
        new_tokens.append(token)
        if step == max_new_tokens - 1 or (eos_token_id is not None and not bool(unfinished.any())):
            break  # (without eos no row finishes: no check, no wait for the GPU)
        out = model(token, attention_mask=mask_upto(mask, T + step + 1), past_key_values=cache,
                    use_cache=True)  # (B, 1) -> logits (B, 1, V)
    return torch.cat([input_ids, *new_tokens], dim=1)  # (B, T + n)


@inference
def greedy(model, input_ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None = None,
           attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) left-padded prompts -> (B, T + n): always the most likely next token (the first one on ties).

    attention_mask: (B, T), 1 = token, 0 = padding (None = no padding). Rows that end early are padded with
    eos_token_id; n is the length of the longest row's continuation."""
    check_prompt(model, input_ids, max_new_tokens, eos_token_id, "greedy", attention_mask)
    return decode_loop(model, input_ids, attention_mask, max_new_tokens,
                       lambda logits: logits.argmax(-1, keepdim=True), eos_token_id)


def global_generator(device: torch.device) -> torch.Generator:
    """torch's global generator of `device` (CPU or CUDA), the one torch.manual_seed seeds and generator=None
    means; as an object, so that callers can pass it where a generator is expected."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    raise ValueError(f"no global generator for device {device}; use the CPU or a CUDA GPU")


def draw(probs: torch.Tensor, generator) -> torch.Tensor:
    """One token per row from probs (B, V) -> (B, 1). One generator (or None, torch's global one): a single
    multinomial call for the batch, as transformers makes. A list: row b draws from generator[b] alone."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, num_samples=1, generator=generator)
    return torch.cat([torch.multinomial(p[None], num_samples=1, generator=g) for p, g in zip(probs, generator)])


def draw_sorted(probs: torch.Tensor, generator) -> torch.Tensor:
    """The course's draw (sonnet_generation.py's generate): sort each row's probabilities, most likely first,
    draw a position of the sorted row, map it back to its token. The same distribution as draw(), but for the
    same generator state another token: multinomial reads the row in the order it is given.

        (p_sorted, order) = sort(probs, descending)      (B, V) each
        j ~ Multinomial(p_sorted)                        (B, 1) positions in the sorted row
        token = order[j]                                 (B, 1)
    """
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)  # (B, V) each
    return order.gather(-1, draw(sorted_probs, generator))  # (B, 1)


DRAWS = {"vocab": draw, "sorted": draw_sorted}  # sample(draw_order=...): the order multinomial reads the row in


@inference
def sample(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    eos_token_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
    draw_order: str = "vocab",
) -> torch.Tensor:
    """(B, T) left-padded prompts -> (B, T + n), each token drawn from softmax(filter(logits)).

    draw_order "vocab": multinomial reads the probabilities in vocabulary order (as transformers does); "sorted":
    most likely first, the course's draw (draw_sorted): the same distribution, other tokens for the same seed.

    How seeds map to rows (every choice is reproducible: the same generators in the same states give the same
    tokens):
      generator=None              torch's global generator; one torch.multinomial over the (B, V) batch per step,
                                  as transformers does, so seeding the global generator the same way gives the
                                  same tokens as `generate(do_sample=True, ...)` up to floating-point ties.
      generator=g                 one torch.Generator for the batch, drawn from the same way: reproducible, but
                                  row b's tokens depend on the other rows (they share the stream).
      generator=[g_0, ..., g_B-1] row b draws from g_b only: row b's tokens are exactly those that prompt b alone
                                  gives with g_b, whatever the other prompts are (the sonnet task seeds g_k with
                                  --seed + k). A finished row still draws (and drops) one token per step.
    Every generator must be on the model's device (else a ValueError says so)."""
    check_prompt(model, input_ids, max_new_tokens, eos_token_id, "sample", attention_mask)
    check_sampling_options(temperature, top_k, top_p)
    check_generator(generator, model, input_ids.size(0), "sample")
    if draw_order not in DRAWS:
        raise ValueError(f"sample: draw_order must be one of {', '.join(DRAWS)}, got {draw_order!r}")
    draw_fn = DRAWS[draw_order]

    def choose(logits):  # (B, V) -> (B, 1)
        probs = F.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
        return draw_fn(probs, generator)

    return decode_loop(model, input_ids, attention_mask, max_new_tokens, choose, eos_token_id)
