"""GPT-2's byte-level BPE (Radford et al. 2019, section 2.2), run by the `tokenizers` package.

Text is UTF-8 encoded, each byte mapped to a printable unicode character (a space becomes 'Ġ', a newline 'Ċ'),
split by GPT-2's regex into word-like pieces, and each piece merged by the ranked rules of `merges.txt`
into ids from `vocab.json`. `<|endoftext|>` is one special token (id 50256 in GPT-2), also used for padding.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

EOS_TEXT = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Printable latin-1 bytes map to themselves; the other 68 (control characters, space, ...) map to
    chr(256), chr(257), ... in order. So a space (byte 32) becomes 'Ġ' (U+0120).
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long, padded with eos
    attention_mask: torch.Tensor  # (B, T) long, 1 = real token
    num_truncated: int  # how many texts were cut to max_length


def check_merges(path: Path) -> None:
    """One 'a b' pair per line after GPT-2's '#version: 0.2' header; a bad line is named (tokenizers' own
    message names neither the file nor the line as it stands in the file)."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if (number == 1 and line.startswith("#version")) or not line:
            continue
        if len(line.split(" ")) != 2:
            raise ValueError(f"{path}:{number}: {line[:60]!r} is not a merge: each line after '#version: 0.2' "
                             f"holds two pieces separated by one space")


class Tokenizer:
    def __init__(self, vocab_path: str | Path, merges_path: str | Path):
        for p in (vocab_path, merges_path):
            if not Path(p).is_file():
                raise FileNotFoundError(f"tokenizer file not found: {p}")
        try:
            vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{vocab_path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if EOS_TEXT not in vocab:
            raise ValueError(f"{vocab_path}: has no {EOS_TEXT!r} entry")
        check_merges(Path(merges_path))
        try:
            bpe = models.BPE.from_file(str(vocab_path), str(merges_path))
        except Exception as e:  # tokenizers raises a bare Exception, e.g. for a merge of pieces not in the vocab
            reason = str(e).removeprefix("Error while reading BPE files: ")
            raise ValueError(f"{vocab_path}, {merges_path}: {reason}") from None
        tok = HFTokenizer(bpe)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's regex + byte map
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([EOS_TEXT])  # so "<|endoftext|>" in text is one token, as in GPT-2
        self._tok = tok
        self.eos_token_id: int = vocab[EOS_TEXT]
        self.pad_token_id: int = self.eos_token_id
        self.vocab_size: int = len(vocab)

    @classmethod
    def from_dir(cls, path: str | Path) -> "Tokenizer":
        """A directory holding GPT-2's `vocab.json` and `merges.txt` (a model directory, or ../shared/gpt2)."""
        path = Path(path)
        return cls(path / "vocab.json", path / "merges.txt")

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self._tok.decode(ids, skip_special_tokens=False)

    def token_id(self, text: str) -> int:
        """The id of a text that must be exactly one token (e.g. 'yes' -> 8505 in GPT-2)."""
        ids = self.encode(text)
        if len(ids) != 1:
            raise ValueError(f"{text!r} is not a single token: it encodes to {ids}")
        return ids[0]

    def encode_batch(
        self,
        texts: list[str],
        max_length: int | None = None,
        padding_side: str = "right",
        truncation_side: str = "right",
    ) -> Batch:
        """Encode, truncate each text to max_length tokens, pad to the longest with eos.

        truncation_side='left' keeps the end of long texts (the question of a cloze prompt);
        padding_side='left' lines the last tokens up (for batched generation).
        """
        if padding_side not in ("left", "right") or truncation_side not in ("left", "right"):
            raise ValueError("padding_side and truncation_side must be 'left' or 'right'")
        rows = [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]
        truncated = 0
        if max_length is not None:
            for i, r in enumerate(rows):
                if len(r) > max_length:
                    rows[i] = r[:max_length] if truncation_side == "right" else r[len(r) - max_length:]
                    truncated += 1
        T = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), T), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for i, r in enumerate(rows):
            span = slice(0, len(r)) if padding_side == "right" else slice(T - len(r), T)
            ids[i, span] = torch.tensor(r, dtype=torch.long)
            mask[i, span] = 1
        return Batch(ids, mask, truncated)


def write_vocab_files(directory: str | Path, merges: list[tuple[str, str]] = ()) -> Path:
    """Write a small byte-level BPE (`vocab.json` + `merges.txt`) for tests and from-scratch toy models.

    The vocabulary is the 256 byte symbols, then one token per merge, then <|endoftext|>.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[EOS_TEXT] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory
