"""The decoder flags (decoding/config.py): their defaults are DecodeConfig's, bad values are refused naming the
flag, and the parsed flags make the DecodeConfig they say."""
from __future__ import annotations

import argparse

import pytest

from decoding.config import DecodeConfig, add_decoder_arguments, decode_config_from_args


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_decoder_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_are_the_documented_settings():
    """top-p 0.9 at temperature 1.2 are the course's; the rest are minigpt's own (decoding/config.py)."""
    cfg = decode_config_from_args(parse())
    assert cfg == DecodeConfig()
    assert (cfg.decoder, cfg.top_p, cfg.temperature, cfg.alpha, cfg.num_beams) == ("top-p", 0.9, 1.2, 0.6, 5)
    assert (cfg.length_penalty, cfg.no_repeat_ngram_size, cfg.top_k, cfg.contrastive_k) == (0.6, 3, 0, 4)
    assert (cfg.num_candidates, cfg.batch_size, cfg.ensemble_alpha_spread) == (8, 0, 0.2)  # 0 = all prompts at once


@pytest.mark.parametrize("argv, expected", [
    (["--decoder", "top-p", "--max-new-tokens", "7", "--temperature", "0.7", "--top-p", "0.5", "--top-k", "20",
      "--seed", "3", "--decode-batch-size", "4"],
     dict(decoder="top-p", max_new_tokens=7, temperature=0.7, top_p=0.5, top_k=20, seed=3, batch_size=4)),
    (["--decoder", "contrastive", "--contrastive-k", "6", "--alpha", "0.4", "--dynamic-alpha", "--alpha-start",
      "0.1", "--use-mean-sim", "--repetition-penalty", "1.3"],
     dict(decoder="contrastive", contrastive_k=6, alpha=0.4, dynamic_alpha=True, alpha_start=0.1,
          use_mean_sim=True, repetition_penalty=1.3)),
    (["--decoder", "mbr", "--num-beams", "2", "--length-penalty", "1.0", "--no-repeat-ngram-size", "0",
      "--num-candidates", "3"],
     dict(decoder="mbr", num_beams=2, length_penalty=1.0, no_repeat_ngram_size=0, num_candidates=3)),
    (["--decoder", "ensemble", "--ensemble-alpha-spread", "0.1", "--temperature", "0.8", "--alpha", "0.5"],
     dict(decoder="ensemble", ensemble_alpha_spread=0.1, temperature=0.8, alpha=0.5)),
])
def test_every_flag_reaches_the_config(argv, expected):
    assert decode_config_from_args(parse(*argv)) == DecodeConfig(**expected)


def test_help_names_the_decoders_that_read_each_flag():
    parser = argparse.ArgumentParser()
    add_decoder_arguments(parser)
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["top_p"].startswith("top-p/ensemble: ") and helps["num_beams"].startswith("beam/mbr/ensemble: ")
    assert helps["alpha_start"].startswith("contrastive: ") and not helps["decoder"].startswith("greedy/")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--top-p", "0"], "--top-p: must be in (0, 1]"),
        (["--top-p", "1.5"], "--top-p: must be in (0, 1]"),
        (["--temperature", "0"], "--temperature: must be > 0"),
        (["--temperature", "-1"], "--temperature: must be > 0"),
        (["--num-beams", "0"], "--num-beams: must be >= 1"),
        (["--top-k", "-1"], "--top-k: must be >= 0"),
        (["--contrastive-k", "0"], "--contrastive-k: must be >= 1"),
        (["--ensemble-alpha-spread", "-0.1"], "--ensemble-alpha-spread: must be in [0, 1]"),
        (["--decode-batch-size", "-1"], "--decode-batch-size: must be >= 0"),
        (["--alpha", "2"], "--alpha: must be in [0, 1]"),
        (["--num-candidates", "1"], "--num-candidates: must be >= 2"),
        (["--num-beams", "two"], "--num-beams: invalid int value"),
        (["--temperature", "nan"], "must be a finite number"),
        (["--decoder", "nucleus"], "invalid choice"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse(*argv)
    assert message in capsys.readouterr().err


def test_top_k_is_the_sampling_filter_and_contrastive_k_the_candidates():
    """--top-k no longer doubles as contrastive search's candidate count: each setting has its own flag."""
    cfg = decode_config_from_args(parse("--decoder", "contrastive", "--top-k", "0", "--contrastive-k", "3"))
    assert (cfg.top_k, cfg.contrastive_k) == (0, 3)
    with pytest.raises(ValueError, match="--contrastive-k"):  # the old spelling says where the setting went
        decode_config_from_args(parse("--decoder", "contrastive", "--top-k", "4"))
    help_text = argparse.ArgumentParser()
    add_decoder_arguments(help_text)
    text = help_text.format_help()
    assert "--contrastive-k" in text and "--ensemble-alpha-spread" in text
