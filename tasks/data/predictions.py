"""The course's prediction files: `id \\t Predicted_Sentiment ` (or `Predicted_Is_Paraphrase `), then one
`<id>, <prediction> ` row per example."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .files import DataError, atomic_write_text


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

