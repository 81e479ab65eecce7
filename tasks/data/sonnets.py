"""The sonnet files: a header, then per sonnet its number alone on a line, a blank line and the text (the
course's sonnets.txt, sonnets_held_out*.txt); and the generated sonnets in the same layout."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .files import DataError, MissingDataError, atomic_write_text, utf8_or_data_error

_SONNET_NUMBER = re.compile(r"\n\s*(\d+)\s*\n")  # the course's separator, with the number captured


def split_sonnets(text: str, name: str = "<text>") -> list[tuple[int, str]]:
    """(number, sonnet) pairs, exactly as the course's re.split(r'\\n\\s*\\d+\\s*\\n') minus the header piece.
    A number on the file's first line starts sonnet 1 (a file without a header): the course's split would drop
    that sonnet as the header, so the text gets a newline in front, and the header piece is empty."""
    text = "\n" + text.replace("\r\n", "\n")
    matches = list(_SONNET_NUMBER.finditer(text))
    if not matches:
        raise DataError(f"{name}: no numbered sonnets (expected a header, then each sonnet's number alone on "
                        f"a line followed by its text)")
    sonnets = []
    for m, after in zip(matches, matches[1:] + [None]):
        body = text[m.end():after.start() if after else len(text)].strip()
        if not body:
            line = text.count("\n", 0, m.start(1))  # (the newline put in front is not the file's)
            raise DataError(f"{name}:{line}: sonnet {m.group(1)} has no text")
        sonnets.append((int(m.group(1)), body))
    return sonnets


def _read_sonnet_file(path) -> list[tuple[int, str]]:
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{path}: no such file")
    with utf8_or_data_error(path):
        return split_sonnets(path.read_text(encoding="utf-8"), str(path))


def read_sonnets(path) -> list[str]:
    """The sonnets of a course sonnet file (training, held-out prompts, true held-out or generated), stripped."""
    return [s for _, s in _read_sonnet_file(path)]


def sonnet_numbers(path) -> list[int]:
    """The numbers of the sonnets in a course sonnet file, in file order."""
    return [n for n, _ in _read_sonnet_file(path)]



def write_sonnets(path, sonnets: Sequence[str], numbers: Sequence[int]) -> Path:
    """`--Generated Sonnets-- `, a blank line, then per sonnet a blank line, its number and its text.

    The text is checked to parse back to the same sonnets first (a generated line holding only a number, or
    an empty sonnet, would shift every later sonnet against its reference), and DataError names the culprit.
    """
    if len(sonnets) != len(numbers):
        raise ValueError(f"{path}: {len(sonnets)} sonnets but {len(numbers)} numbers")
    text = "--Generated Sonnets-- \n\n" + "".join(f"\n{int(n)}\n{s}\n" for n, s in zip(numbers, sonnets))
    expected = [(int(n), s.strip()) for n, s in zip(numbers, sonnets)]
    parsed = split_sonnets(text, str(path)) if sonnets else []  # raises DataError for a sonnet with no text
    if parsed != expected:
        i = next((i for i, pair in enumerate(expected) if i >= len(parsed) or parsed[i] != pair), len(expected) - 1)
        raise DataError(f"{path}: sonnet {expected[i][0]} would not parse back as written (a line holding only "
                        f"a number splits it): {sonnets[i]!r}")
    return atomic_write_text(path, text)
