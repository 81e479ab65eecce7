"""Our GPT-2 tokenizer against transformers' GPT2TokenizerFast built from the same files."""
import pytest
import torch

from minigpt.tokenizer import Tokenizer, bytes_to_unicode, write_vocab_files
from tests.conftest import shared_path

STRINGS = [
    "Hello world",
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:",
    "  leading and trailing spaces   ",
    "tabs\tand\n\nnewlines\r\n and   runs    of spaces",
    "I'm sure they'll say we've done it, isn't it? You'd, we'd, I'D, SHE'S",
    "numbers 1234567 3.14159 -42 1,000,000 2026-11-27",
    "unicode: café naïve Zürich ß 東京 日本語 😀🎉 ∑ Ω ü",
    "punctuation!!! ??? ... --- (parens) [brackets] {braces} \"quotes\" 'single'",
    "<|endoftext|>",
    "a<|endoftext|>b <|endoftext|> c",
    "",
    " ",
    "\u00a0non-breaking\u2003em-space\u200bzero-width",
]


def test_byte_map_is_a_bijection_onto_printable_characters():
    m = bytes_to_unicode()
    assert len(m) == 256 and len(set(m.values())) == 256
    assert m[ord(" ")] == "Ġ" and m[ord("\n")] == "Ċ" and m[ord("A")] == "A"
    assert all(ch.isprintable() for ch in m.values())


def test_real_gpt2_tokenizer_matches_transformers():
    gpt2_dir = shared_path("gpt2")
    from transformers import GPT2TokenizerFast

    ours = Tokenizer.from_dir(gpt2_dir)
    ref = GPT2TokenizerFast(str(gpt2_dir / "vocab.json"), str(gpt2_dir / "merges.txt"))
    for s in STRINGS:
        assert ours.encode(s) == ref.encode(s), s
        assert ours.decode(ours.encode(s)) == s
    assert ours.encode("Hello world") == [15496, 995]
    assert ours.encode("<|endoftext|>") == [50256] == [ours.eos_token_id]
    assert ours.token_id("yes") == 8505 and ours.token_id(" no") == 645 and ours.token_id("no") == 3919


def test_tiny_tokenizer_round_trips_and_merges(tmp_path):
    tok = Tokenizer.from_dir(write_vocab_files(tmp_path, [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]))
    assert tok.vocab_size == 260 and tok.eos_token_id == 259
    assert tok.encode(" the") == [258]
    for s in STRINGS:
        assert tok.decode(tok.encode(s)) == s
    with pytest.raises(ValueError, match="not a single token"):
        tok.token_id("xyz")


def test_encode_batch_padding_truncation_and_mask(tmp_path):
    tok = Tokenizer.from_dir(write_vocab_files(tmp_path))
    texts = ["abcdef", "ab", ""]
    right = tok.encode_batch(texts)
    assert right.input_ids.shape == (3, 6)
    assert right.attention_mask.tolist() == [[1] * 6, [1, 1, 0, 0, 0, 0], [0] * 6]
    assert right.input_ids[1, 2:].eq(tok.eos_token_id).all()
    left = tok.encode_batch(texts, padding_side="left")
    assert left.attention_mask[1].tolist() == [0, 0, 0, 0, 1, 1]
    assert left.input_ids[1, -2:].tolist() == tok.encode("ab")
    cut = tok.encode_batch(texts, max_length=4, truncation_side="left")
    assert cut.num_truncated == 1 and cut.input_ids[0].tolist() == tok.encode("cdef")
    cut = tok.encode_batch(texts, max_length=4)
    assert cut.input_ids[0].tolist() == tok.encode("abcd")
    assert tok.decode(torch.tensor(tok.encode("xyz"))) == "xyz"


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        Tokenizer.from_dir(tmp_path)
    write_vocab_files(tmp_path)
    (tmp_path / "vocab.json").write_text("{broken")
    with pytest.raises(ValueError, match="vocab.json: not valid JSON"):
        Tokenizer.from_dir(tmp_path)
