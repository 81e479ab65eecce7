r"""Readers and writers for the course's data files (CS224N GPT-2 default final project).

The formats (data/README.md has the details and the quirks):
- SST / CFIMDB: tab-separated, written by pandas, so an unnamed index column comes first:
  `<index>\tid\tsentence\tsentiment` (train, dev) and `0\t<empty>\tid\tsentence` (test-student, no labels).
- Quora: `id\tsentence1\tsentence2\tis_duplicate` (GPT project) or the same with a leading unnamed index column
  (minBERT project); `is_duplicate` is written `0.0` / `1.0`; test-student has no label column.
- Sonnets: a header, then per sonnet its number alone on a line and the text.
Columns are found by their header names, so both Quora layouts read the same way.

Bad rows. A row is *broken* when quoting went wrong: it has a different number of fields than the header, a
field holds a line break or a tab (only an unbalanced `"` puts them there), or its label field is empty or not
a number. Broken rows are skipped with a warning naming the file and lines (the real minBERT Quora dev file has
two, lines 2577 and 14222). When more than max(5, 1%) of a file's lines are in broken rows, the file is not in
this format: an error. A Quora row with an empty question is skipped too (read_quora). Everything else that is
wrong (a missing column, a label outside the label set, an empty sentence, a test file with labels, a dev file
without) raises `DataError` naming the file and line.
"""
from __future__ import annotations

import csv
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .files import DataError, MissingDataError, utf8_or_data_error

logger = logging.getLogger("minigpt.data")


@dataclass
class SentimentExample:
    id: str
    sentence: str
    label: int | None  # None in test-student files


@dataclass
class ParaphraseExample:
    id: str
    sentence1: str
    sentence2: str
    label: int | None  # 1 = the questions ask the same thing; None in test-student files



# ----------------------------------------------------------------------------------- tab-separated files

def tsv_reader(fp):
    """csv.reader over tab-separated text with no cap on a field's length: Python's default cap (131,072
    characters) refuses a long review, which is data. An unbalanced quote now swallows lines into one field
    instead, and _broken() reports that row."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the largest a C long holds on every platform
    return csv.reader(fp, delimiter="\t")


def _broken(fields: list[str], header: list[str], label_col: str, labeled: bool) -> str | None:
    """Why this row's quoting is broken (see the module docstring), or None for a well-formed row."""
    if len(fields) != len(header):
        return f"{len(fields)} fields where the header has {len(header)}"
    if any(c in field for field in fields for c in "\n\r\t"):
        return "a field holds a line break or a tab"
    if labeled:
        value = fields[header.index(label_col)].strip()
        if not value:
            return f"empty {label_col}"
        try:
            float(value)
        except ValueError:
            return f"{label_col} {value!r} is not a number"
    return None


def _check_header(path: Path, header: list[str], columns: Sequence[str], label_col: str, labeled: bool):
    if len(header) == 1 and "," in header[0]:
        raise DataError(f"{path}:1: the header {header[0]!r} has no tabs; these files are tab-separated")
    if labeled and label_col not in header:
        raise DataError(f"{path}:1: no {label_col!r} column (header {header}): this looks like a test-student "
                        f"file without labels, but a train/dev file with labels was expected here")
    if not labeled and label_col in header:
        raise DataError(f"{path}:1: a {label_col!r} column (header {header}): this looks like a train/dev file "
                        f"with labels, but a test-student file was expected")
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}:1: missing column(s) {missing}; the header is {header}")


def _read_rows(path, columns: Sequence[str], label_col: str, labeled: bool) -> list[tuple[str, dict[str, str]]]:
    """The well-formed rows of a tab-separated file as (where, {column: field}); `where` is 'file:line'."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{path}: no such file")
    rows, skipped, skipped_lines = [], [], 0
    with open(path, encoding="utf-8-sig", newline="") as fp, utf8_or_data_error(path):  # newline="": csv handles CRLF
        reader = tsv_reader(fp)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file (expected a header line)")
        _check_header(path, header, columns, label_col, labeled)
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise DataError(f"{path}:{start}: {e}") from None
            if not fields:  # a blank line
                continue
            end = reader.line_num
            where = f"{path}:{start}" if end == start else f"{path}:{start}-{end}"
            reason = _broken(fields, header, label_col, labeled)
            if reason:
                logger.warning("%s: skipped a row with broken quoting: %s", where, reason)
                skipped.append(f"{where}: {reason}")
                skipped_lines += end - start + 1
            else:
                rows.append((where, dict(zip(header, fields))))
        total_lines = reader.line_num
    if skipped_lines > max(5, 0.01 * total_lines):
        raise DataError(f"{path}: {skipped_lines} of {total_lines} lines are in broken rows, so this is not the "
                        f"expected format; the first: {skipped[0]}")
    if not rows:
        raise DataError(f"{path}: no data rows")
    logger.info("read %d rows from %s (%d skipped)", len(rows), path, len(skipped))
    return rows


def _text(where: str, row: dict[str, str], column: str) -> str:
    value = row[column].strip()
    if not value:
        raise DataError(f"{where}: empty {column}")
    return value


def _label(where: str, row: dict[str, str], column: str, num_labels: int | None) -> int:
    raw = row[column].strip()
    value = float(raw)  # a number: _broken checked it
    in_range = value >= 0 and (num_labels is None or value < num_labels)
    if not (math.isfinite(value) and value == int(value) and in_range):
        allowed = f"0..{num_labels - 1}" if num_labels is not None else "a non-negative integer"
        raise DataError(f"{where}: {column} {raw!r} is outside the label set ({allowed})")
    return int(value)


def _warn_duplicate_ids(path, ids: list[str]):
    seen = set()
    for id_ in ids:
        if id_ in seen:
            logger.warning("%s: id %r appears more than once", path, id_)
        seen.add(id_)


def read_sentiment(path, labeled: bool, num_labels: int | None = None,
                   lowercase: bool = True) -> list[SentimentExample]:
    """An SST / CFIMDB file. Sentences are stripped and, like the course's loader, lower-cased by default.

    num_labels: 5 for SST, 2 for CFIMDB (SENTIMENT_NUM_LABELS); None accepts any non-negative integer.
    """
    examples = []
    for where, row in _read_rows(path, ("id", "sentence"), "sentiment", labeled):
        sentence = _text(where, row, "sentence")
        label = _label(where, row, "sentiment", num_labels) if labeled else None
        examples.append(SentimentExample(_text(where, row, "id"), sentence.lower() if lowercase else sentence, label))
    _warn_duplicate_ids(path, [e.id for e in examples])
    return examples


def course_preprocess(text: str) -> str:
    """The course's Quora normalisation: lower-case, a space before each . ? , and ', whitespace collapsed."""
    for mark in ".?,'":
        text = text.replace(mark, " " + mark)
    return " ".join(text.lower().split())


def read_quora(path, labeled: bool, preprocess: bool = True) -> list[ParaphraseExample]:
    """A Quora file, GPT-project or minBERT layout. preprocess=True applies course_preprocess, as the course.

    A row with an empty question is skipped in train/dev files, as the course skips the rows it cannot read,
    with one warning that counts them and names the first lines; in a test-student file it is kept (every
    test id needs a prediction) with an empty question, and a warning.
    """
    examples, empty = [], []
    for where, row in _read_rows(path, ("id", "sentence1", "sentence2"), "is_duplicate", labeled):
        s1, s2 = row["sentence1"].strip(), row["sentence2"].strip()
        if not (s1 and s2):
            empty.append(where.rpartition(":")[2])
            if labeled:
                continue
        if preprocess:
            s1, s2 = course_preprocess(s1), course_preprocess(s2)
        label = _label(where, row, "is_duplicate", 2) if labeled else None
        examples.append(ParaphraseExample(_text(where, row, "id"), s1, s2, label))
    if empty:
        first = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
        logger.warning("%s: %d row(s) with an empty question %s (line %s)", path, len(empty),
                       "skipped" if labeled else "kept, to predict every test id", first)
    if not examples:
        raise DataError(f"{path}: every row has an empty question")
    _warn_duplicate_ids(path, [e.id for e in examples])
    return examples


def paraphrase_prompt(s1: str, s2: str) -> str:
    """The cloze prompt; the answer is the next token, "yes" or "no".

    The course's train/dev prompt has no closing quote after s2 (`"{s2}\\n`); we close it.
    """
    return f'Question 1: "{s1}"\nQuestion 2: "{s2}"\nAre these questions asking the same thing?\n'


