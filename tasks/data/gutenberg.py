"""Shakespeare's Sonnets from Project Gutenberg (eBook #1041, plain text) -> the course's sonnet files: sonnets.txt
= 1-131, sonnets_held_out_dev.txt = first 3 lines of 132-143, TRUE_sonnets_held_out_dev.txt = full 132-143,
sonnets_held_out.txt = first 3 lines of 144-154 (`python run.py download data`, fetch_data.py)."""
from __future__ import annotations

import re
from pathlib import Path

from .files import DataError, atomic_write_text


def to_roman(n: int) -> str:
    """1 -> 'I', 4 -> 'IV', 154 -> 'CLIV'."""
    out = ""
    for value, letters in ((100, "C"), (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"),
                           (4, "IV"), (1, "I")):
        while n >= value:
            out, n = out + letters, n - value
    return out


# Gutenberg's curly punctuation -> the ASCII of the course's (Folger) text
_ASCII = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": "--", "\u00a0": " "})


def _text_lines(lines: list[str], stop_at_two_blanks: bool) -> list[str]:
    """The non-blank lines (right-stripped); optionally stop at the first two blank lines after some text."""
    out, blanks = [], 0
    for line in lines:
        if line.strip():
            out.append(line.rstrip())
            blanks = 0
        elif out:
            blanks += 1
            if stop_at_two_blanks and blanks == 2:
                break
    return out


def parse_gutenberg_sonnets(text: str, count: int = 154) -> list[str]:
    """The sonnets of a Project Gutenberg text whose sonnets are headed by roman numerals alone on a line.

    Rule: the text between the START and END markers; sonnet k starts after the first line (after sonnet k-1)
    that is numeral k, and holds the non-blank lines up to numeral k+1 (the last sonnet: up to the first two
    blank lines after its text). Common indentation is removed (the couplet keeps its extra indent), curly
    quotes and dashes become ASCII. A sonnet with fewer than 12 or more than 15 lines is an error.
    """
    text = text.replace("\r\n", "\n")
    start = re.search(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.M | re.I)
    end = re.search(r"^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.M | re.I)
    if not start or not end:
        raise DataError("not a Project Gutenberg text: no '*** START OF' / '*** END OF' marker lines")
    lines = text[start.end():end.start()].translate(_ASCII).split("\n")
    heads = []  # line index of each numeral, in order
    for i, line in enumerate(lines):
        if len(heads) < count and line.strip().rstrip(".") == to_roman(len(heads) + 1):
            heads.append(i)
    if len(heads) != count:
        raise DataError(f"found numerals I..{to_roman(len(heads))} only; expected {count} sonnets")
    sonnets = []
    for k, (head, after) in enumerate(zip(heads, heads[1:] + [len(lines)]), start=1):
        block = _text_lines(lines[head + 1:after], stop_at_two_blanks=k == count)
        if not 12 <= len(block) <= 15:
            raise DataError(f"sonnet {to_roman(k)} ({k}) has {len(block)} lines; expected 12 to 15")
        indent = min(len(line) - len(line.lstrip()) for line in block)
        sonnets.append("\n".join(line[indent:] for line in block))
    return sonnets


_SONNET_HEADER = ("Shakespeare's Sonnets\nfrom Project Gutenberg eBook #1041, https://www.gutenberg.org/ebooks/1041\n"
                  "written in the course's layout by `python run.py download data`\n\n\n\n\n")


def format_sonnet_file(numbered: list[tuple[int, str]]) -> str:
    """The course layout: a header, 4 blank lines, then per sonnet its number, a blank line, the text, a blank line."""
    return _SONNET_HEADER + "".join(f"{n}\n\n{text}\n\n" for n, text in numbered)


def build_sonnets(raw: Path, data_dir: Path) -> list[Path]:
    sonnets = parse_gutenberg_sonnets(raw.read_text(encoding="utf-8-sig"))
    numbered = list(enumerate(sonnets, start=1))
    first3 = [(n, "\n".join(s.split("\n")[:3])) for n, s in numbered]
    files = {"sonnets.txt": numbered[:131], "TRUE_sonnets_held_out_dev.txt": numbered[131:143],
             "sonnets_held_out_dev.txt": first3[131:143], "sonnets_held_out.txt": first3[143:]}
    return [atomic_write_text(data_dir / name, format_sonnet_file(part)) for name, part in files.items()]
