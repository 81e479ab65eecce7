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

import contextlib
import csv
import logging
import math
import operator
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from minigpt.files import FILES_READ, atomic_write_text

logger = logging.getLogger("minigpt.data")

REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SENTIMENT_NUM_LABELS = {"sst": 5, "cfimdb": 2}  # SST: 0 negative .. 4 positive; CFIMDB: 0 negative, 1 positive


class DataError(ValueError):
    """A data file that is not in the expected format; the message names the file and line."""


class MissingDataError(FileNotFoundError):
    """A data directory or file that is not there; the message says what it should hold and how to get it."""


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


# ----------------------------------------------------------------------------------- where the files are

_DOWNLOAD = "run `python run.py download data` (see data/README.md)"
_CFIMDB = ("no public download: copy it from the data/ folder of the CS224N GPT-2 default final project "
           "repository (cs224n_gpt)")
_SENTIMENT = "tab-separated, header `<empty>\\tid\\tsentence\\tsentiment`, labels {labels}, one example per line"
_SENTIMENT_TEST = "tab-separated, header `0\\t<empty>\\tid\\tsentence`, no label column"
_QUORA = "tab-separated, header `id\\tsentence1\\tsentence2\\tis_duplicate`, labels written 0.0 / 1.0"
_QUORA_TEST = "tab-separated, header `id\\tsentence1\\tsentence2`, no label column"
_SONNETS = "a header, then per sonnet its number alone on a line, a blank line and the "

# course file name -> (expected format, where to get it)
COURSE_FILES = {
    "sonnets.txt": (_SONNETS + "text (training sonnets 1-131)", _DOWNLOAD),
    "sonnets_held_out_dev.txt": (_SONNETS + "first 3 lines of each dev sonnet", _DOWNLOAD),
    "TRUE_sonnets_held_out_dev.txt": (_SONNETS + "full dev sonnets, numbered as the prompt file", _DOWNLOAD),
    "sonnets_held_out.txt": (_SONNETS + "first 3 lines of each test sonnet", _DOWNLOAD),
}
for _split in ("train", "dev"):
    COURSE_FILES[f"ids-sst-{_split}.csv"] = (_SENTIMENT.format(labels="0-4"), _DOWNLOAD)
    COURSE_FILES[f"ids-cfimdb-{_split}.csv"] = (_SENTIMENT.format(labels="0/1"), _CFIMDB)
    COURSE_FILES[f"quora-{_split}.csv"] = (_QUORA, _DOWNLOAD)
COURSE_FILES["ids-sst-test-student.csv"] = (_SENTIMENT_TEST, _DOWNLOAD)
COURSE_FILES["ids-cfimdb-test-student.csv"] = (_SENTIMENT_TEST, _CFIMDB)
COURSE_FILES["quora-test-student.csv"] = (_QUORA_TEST, _DOWNLOAD)


def course_file_name(dataset: str, split: str) -> str:
    """('sst' | 'cfimdb' | 'quora', 'train' | 'dev' | 'test') -> the course's file name."""
    split = "test-student" if split == "test" else split
    return f"quora-{split}.csv" if dataset == "quora" else f"ids-{dataset}-{split}.csv"


def resolve_data_dir(arg: str | os.PathLike | None = None, must_exist: bool = True) -> Path:
    """The data directory: `arg` (--data-dir), else $MINIGPT_DATA, else the repository's data/ folder."""
    if arg:
        path, source = Path(arg), "--data-dir"
    elif os.environ.get("MINIGPT_DATA"):
        path, source = Path(os.environ["MINIGPT_DATA"]), "$MINIGPT_DATA"
    else:
        path, source = REPO_DATA_DIR, "the default"
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise MissingDataError(f"data directory {path} (from {source}) is a file, not a directory")
    if must_exist and not path.is_dir():
        raise MissingDataError(
            f"data directory {path} (from {source}) does not exist. Fill it with "
            f"`python run.py download data --data-dir {path}` (sonnets, SST, Quora); the CFIMDB files must be "
            f"copied by hand. data/README.md lists every file and its format.")
    return path


def data_file(data_dir: str | os.PathLike, name: str) -> Path:
    """data_dir / name, or MissingDataError naming the file, its expected format and where to get it."""
    path = Path(data_dir) / name
    if path.is_file():
        FILES_READ[name] = path  # the run's record for --resume fingerprints it (training/run_settings.py)
        return path
    fmt, source = COURSE_FILES.get(name, ("see data/README.md", "see data/README.md"))
    raise MissingDataError(f"{path} is missing.\n  expected format: {fmt}\n  where to get it: {source}")


# ----------------------------------------------------------------------------------- tab-separated files

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


@contextlib.contextmanager
def _utf8(path):
    """Turn a UnicodeDecodeError inside the block into a DataError that names the file."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None


def _read_rows(path, columns: Sequence[str], label_col: str, labeled: bool) -> list[tuple[str, dict[str, str]]]:
    """The well-formed rows of a tab-separated file as (where, {column: field}); `where` is 'file:line'."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{path}: no such file")
    rows, skipped, skipped_lines = [], [], 0
    with open(path, encoding="utf-8-sig", newline="") as fp, _utf8(path):  # newline="": csv handles CRLF
        reader = csv.reader(fp, delimiter="\t")
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
            except csv.Error as e:  # e.g. an unbalanced quote that swallows the rest of the file
                raise DataError(f"{path}:{start}: {e} (an unbalanced '\"'?)") from None
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


# ----------------------------------------------------------------------------------- sonnets

_SONNET_NUMBER = re.compile(r"\n\s*(\d+)\s*\n")  # the course's separator, with the number captured


def split_sonnets(text: str, name: str = "<text>") -> list[tuple[int, str]]:
    """(number, sonnet) pairs, exactly as the course's re.split(r'\\n\\s*\\d+\\s*\\n') minus the header piece."""
    text = text.replace("\r\n", "\n")
    matches = list(_SONNET_NUMBER.finditer(text))
    if not matches:
        raise DataError(f"{name}: no numbered sonnets (expected a header, then each sonnet's number alone on "
                        f"a line followed by its text)")
    sonnets = []
    for m, after in zip(matches, matches[1:] + [None]):
        body = text[m.end():after.start() if after else len(text)].strip()
        if not body:
            line = text.count("\n", 0, m.start(1)) + 1
            raise DataError(f"{name}:{line}: sonnet {m.group(1)} has no text")
        sonnets.append((int(m.group(1)), body))
    return sonnets


def _read_sonnet_file(path) -> list[tuple[int, str]]:
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{path}: no such file")
    with _utf8(path):
        return split_sonnets(path.read_text(encoding="utf-8"), str(path))


def read_sonnets(path) -> list[str]:
    """The sonnets of a course sonnet file (training, held-out prompts, true held-out or generated), stripped."""
    return [s for _, s in _read_sonnet_file(path)]


def sonnet_numbers(path) -> list[int]:
    """The numbers of the sonnets in a course sonnet file, in file order."""
    return [n for n, _ in _read_sonnet_file(path)]


# ----------------------------------------------------------------------------------- writers

def _write_predictions(path, column: str, ids: Iterable[str], preds: Iterable) -> Path:
    ids, preds = list(ids), list(preds)
    if len(ids) != len(preds):
        raise ValueError(f"{path}: {len(ids)} ids but {len(preds)} predictions")
    lines = [f"id \t {column} \n"]
    for id_, pred in zip(ids, preds):
        if not id_ or any(c in id_ for c in ",\n\t"):
            raise ValueError(f"{path}: id {id_!r} cannot be written (empty, or holds a comma, tab or newline)")
        try:
            lines.append(f"{id_}, {operator.index(pred)} \n")
        except TypeError:
            raise ValueError(f"{path}: prediction {pred!r} for id {id_!r} is not an integer") from None
    return atomic_write_text(path, "".join(lines))


def write_sentiment_predictions(path, ids: Iterable[str], preds: Iterable[int]) -> Path:
    """Header `id \\t Predicted_Sentiment `, then one `<id>, <pred> ` row per example (the course's format)."""
    return _write_predictions(path, "Predicted_Sentiment", ids, preds)


def write_paraphrase_predictions(path, ids: Iterable[str], preds: Iterable[int]) -> Path:
    """Header `id \\t Predicted_Is_Paraphrase `, then `<id>, <pred> ` rows. The pred is written as given."""
    return _write_predictions(path, "Predicted_Is_Paraphrase", ids, preds)


@dataclass
class Predictions:
    column: str  # Predicted_Sentiment or Predicted_Is_Paraphrase
    ids: list[str]
    preds: list[int]


def read_predictions(path) -> Predictions:
    """Parse a prediction file written by write_*_predictions (or by the course's code)."""
    with open(path, encoding="utf-8") as fp:
        lines = fp.read().split("\n")
    header = [part.strip() for part in lines[0].split("\t")]
    if len(header) != 2 or header[0] != "id" or header[1] not in ("Predicted_Sentiment", "Predicted_Is_Paraphrase"):
        raise DataError(f"{path}:1: header {lines[0]!r} is not `id \\t Predicted_Sentiment ` or "
                        f"`id \\t Predicted_Is_Paraphrase `")
    result = Predictions(header[1], [], [])
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        id_, comma, pred = line.rpartition(",")
        try:
            value = int(pred.strip())
        except ValueError:
            value = None
        if not comma or not id_.strip() or value is None:
            raise DataError(f"{path}:{number}: {line!r} is not `<id>, <prediction> `")
        result.ids.append(id_.strip())
        result.preds.append(value)
    return result


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
