"""DecodeConfig and decode() (decoding/config.py): the dispatch runs the chosen decoder with the config's
settings (token-identical to calling the decoder directly), and a bad setting names its flag."""
from __future__ import annotations

import pytest
import torch

from decoding import beam_search, contrastive_search, greedy, sample
from decoding.config import DECODERS, DecodeConfig, decode
from decoding.ensemble import candidate_ensemble
from decoding.mbr import mbr_decode

from ._margins import assert_stable
from .conftest import tiny_pair

WORDS = [f"w{i % 37}{'aeiou'[i % 5]}" for i in range(300)]
PROMPT = torch.tensor([[11, 42, 7, 99]])
EOS = 119


def to_text(ids: list[int]) -> str:
    return " ".join(WORDS[i] for i in ids)


@pytest.fixture(scope="module")
def model():
    return tiny_pair(0)[0]


def run(model, **settings):
    return decode(model, PROMPT, DecodeConfig(max_new_tokens=8, **settings), eos_token_id=EOS, decode_fn=to_text)


def test_dispatch_runs_the_chosen_decoder(model):
    assert torch.equal(run(model, decoder="greedy"), greedy(model, PROMPT, 8, eos_token_id=EOS))
    assert torch.equal(run(model, seed=3), sample(model, PROMPT, 8, temperature=1.2, top_p=0.9,
                                                  generator=torch.Generator().manual_seed(3), eos_token_id=EOS))
    assert torch.equal(run(model, seed=3, top_k=5), sample(model, PROMPT, 8, temperature=1.2, top_p=0.9, top_k=5,
                                                           generator=torch.Generator().manual_seed(3),
                                                           eos_token_id=EOS))
    assert torch.equal(run(model, decoder="contrastive", contrastive_k=3, alpha=0.5),
                       contrastive_search(model, PROMPT, 8, top_k=3, alpha=0.5, eos_token_id=EOS))
    assert torch.equal(run(model, decoder="contrastive", dynamic_alpha=True, alpha_start=0.1, use_mean_sim=True,
                           repetition_penalty=1.3),
                       contrastive_search(model, PROMPT, 8, top_k=4, dynamic_alpha=True, alpha_start=0.1,
                                          use_mean_sim=True, repetition_penalty=1.3, eos_token_id=EOS))
    assert torch.equal(run(model, decoder="beam", num_beams=3),
                       beam_search(model, PROMPT, 8, num_beams=3, length_penalty=0.6, no_repeat_ngram_size=3,
                                   eos_token_id=EOS))
    assert torch.equal(run(model, decoder="mbr", num_beams=3, num_candidates=3),
                       mbr_decode(model, PROMPT, 8, to_text, num_beams=3, num_candidates=3, length_penalty=0.6,
                                  no_repeat_ngram_size=3, eos_token_id=EOS))


def test_the_ensemble_uses_the_named_alpha_spread(model):
    cfg = DecodeConfig(decoder="ensemble", max_new_tokens=8, num_candidates=2, num_beams=2, alpha=0.5,
                       ensemble_alpha_spread=0.3, contrastive_k=3)
    assert cfg.ensemble_alphas() == (0.2, 0.5, 0.8)
    assert DecodeConfig(decoder="ensemble", alpha=0.9).ensemble_alphas() == (0.7, 0.9, 1.0)  # clipped to [0, 1]
    assert DecodeConfig(decoder="ensemble", ensemble_alpha_spread=0.0).ensemble_alphas() == (0.6,)  # one alpha
    got = decode(model, PROMPT, cfg, eos_token_id=EOS, decode_fn=to_text)
    gens = [torch.Generator().manual_seed(cfg.seed)]
    want = candidate_ensemble(model, PROMPT, 8, to_text, num_samples=2, top_p=0.9, temperature=1.2,
                              alphas=(0.2, 0.5, 0.8), contrastive_top_k=3, num_beams=2, length_penalty=0.6,
                              no_repeat_ngram_size=3, eos_token_id=EOS, generator=gens)
    assert torch.equal(got, want)


def test_a_left_padded_batch_samples_row_b_from_seed_plus_b(model):
    batch, mask = torch.cat([PROMPT, PROMPT]), torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    got = assert_stable(lambda: decode(model, batch, DecodeConfig(max_new_tokens=8, seed=3), attention_mask=mask,
                                       eos_token_id=EOS), model)  # no draw on a boundary another shape could move
    alone = assert_stable(lambda: sample(model, PROMPT[:, 1:], 8, temperature=1.2, top_p=0.9,
                                         generator=torch.Generator().manual_seed(4), eos_token_id=EOS), model)
    assert torch.equal(got[1, 1 : 1 + alone.size(1)], alone[0])


def test_reranking_decoders_need_decode_fn(model):
    with pytest.raises(ValueError, match="decode_fn"):
        decode(model, PROMPT, DecodeConfig(decoder="mbr", max_new_tokens=8), eos_token_id=EOS)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(decoder="nucleus"), "--decoder must be one of"),
        (dict(temperature=0.0), "--temperature must be > 0"),
        (dict(top_p=1.5), "--top-p must be in"),
        (dict(top_k=-1), "--top-k must be >= 0"),
        (dict(decoder="contrastive", contrastive_k=0), "--contrastive-k must be >= 1"),
        (dict(decoder="contrastive", alpha=float("nan")), "--alpha must be a finite number"),
        (dict(decoder="mbr", num_candidates=1), "--num-candidates must be >= 2"),
        (dict(decoder="ensemble", ensemble_alpha_spread=2.0), "--ensemble-alpha-spread must be in"),
        (dict(max_new_tokens=0), "--max-new-tokens must be >= 1"),
        (dict(batch_size=-1), "--decode-batch-size must be >= 0"),
    ],
)
def test_bad_settings_name_their_flag(settings, message):
    with pytest.raises(ValueError, match=message):
        DecodeConfig(**settings)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(decoder="beam", top_p=0.5), "--decoder beam does not use --top-p: leave it out"),
        (dict(decoder="greedy", temperature=0.7, seed=3), "--decoder greedy does not use --temperature, --seed"),
        (dict(decoder="contrastive", top_k=4), "does not use --top-k; its candidate count is --contrastive-k"),
        (dict(decoder="ensemble", top_k=4), "does not use --top-k; its candidate count is --contrastive-k"),
        (dict(decoder="top-p", num_beams=3), "--decoder top-p does not use --num-beams"),
        (dict(decoder="beam", alpha=0.3), "--decoder beam does not use --alpha"),
        (dict(decoder="mbr", repetition_penalty=1.2), "--decoder mbr does not use --repetition-penalty"),
        (dict(decoder="contrastive", alpha_start=0.2), "--alpha-start is the first token's alpha under "
                                                       "--dynamic-alpha"),
    ],
)
def test_a_setting_the_decoder_ignores_is_refused(settings, message):
    """One rule for every decoder: a setting away from its default that the chosen decoder never reads."""
    with pytest.raises(ValueError, match=message):
        DecodeConfig(**settings)


def test_every_decoder_accepts_its_own_settings_at_their_defaults():
    for decoder in DECODERS:
        assert DecodeConfig(decoder=decoder, max_new_tokens=3, batch_size=2).decoder == decoder
        for name in ("temperature", "top_p", "alpha", "num_beams"):  # a default is never "set"
            assert DecodeConfig(decoder=decoder, **{name: getattr(DecodeConfig(), name)})
