r"""Back-translation augmentation (--augment FILE): extra training rows whose texts were translated into another
language and back (Sennrich et al. 2016; as augmentation for classification, Xie et al. 2020, "UDA"). The round
trip rewords a text while mostly keeping its meaning, so the source row's label carries over.

The file has exactly the format of the task's training file, and the same reader checks it:
- sentiment: like ids-sst-train.csv / ids-cfimdb-train.csv, tab-separated with the header
  `<empty>\tid\tsentence\tsentiment` (an index column first, as pandas writes it);
- paraphrase: like quora-train.csv, tab-separated with the header `id\tsentence1\tsentence2\tis_duplicate`, the
  label written 0.0 / 1.0.
Give each row a new id (e.g. the source id + "-bt-de"). Rows whose text (after the task's preprocessing) equals a
training row's are dropped, since they add nothing; the log counts the rows kept and dropped. Several round trips
(de, fr, ru, ...) can share one file.

Making one, with any translation system: write `round_trip(texts: list[str]) -> list[str]` (English -> X ->
English, e.g. two MarianMT models opus-mt-en-de and opus-mt-de-en through transformers, or a translation API) and
call

    make_back_translation_file("data/quora-train.csv", "data/quora-train-bt-de.csv", round_trip, "paraphrase")

which translates every text of the training file (both questions of a pair) and writes the rows with ids
`<id>-bt`. Then train with `--augment data/quora-train-bt-de.csv`.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Callable

from .files import atomic_write_text
from .tsv import ParaphraseExample, SentimentExample, read_quora, read_sentiment

logger = logging.getLogger("minigpt.augment")


def read_augment_sentiment(path, num_labels: int, train: list[SentimentExample]) -> list[SentimentExample]:
    """The rows of a sentiment augmentation file that are not already in `train` (same sentence and label)."""
    rows = read_sentiment(path, labeled=True, num_labels=num_labels)
    seen = {(e.sentence, e.label) for e in train}
    kept = [e for e in rows if (e.sentence, e.label) not in seen]
    logger.info(f"augment: {len(kept)} back-translated rows added from {path} ({len(rows) - len(kept)} identical to a "
        f"training row dropped)")
    return kept


def read_augment_pairs(path, train: list[ParaphraseExample]) -> list[ParaphraseExample]:
    """The rows of a paraphrase augmentation file that are not already in `train` (same pair and label)."""
    rows = read_quora(path, labeled=True)
    seen = {(e.sentence1, e.sentence2, e.label) for e in train}
    kept = [e for e in rows if (e.sentence1, e.sentence2, e.label) not in seen]
    logger.info(f"augment: {len(kept)} back-translated pairs added from {path} ({len(rows) - len(kept)} identical to a "
        f"training pair dropped)")
    return kept


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a translation must not bring tabs or line breaks into a tab-separated file


def make_back_translation_file(train_path, out_path, round_trip: Callable[[list[str]], list[str]],
                               task: str, id_suffix: str = "-bt") -> Path:
    """Translate every text of a training file with `round_trip` and write the augmentation file (see above).

    task: "sentiment" (SST / CFIMDB train file) or "paraphrase" (Quora train file). Labels are copied.
    """
    if task == "sentiment":
        source = read_sentiment(train_path, labeled=True, lowercase=False)
        texts = [e.sentence for e in source]
    elif task == "paraphrase":
        source = read_quora(train_path, labeled=True, preprocess=False)
        texts = [s for e in source for s in (e.sentence1, e.sentence2)]
    else:
        raise ValueError(f"task must be 'sentiment' or 'paraphrase', got {task!r}")
    translated = [_one_line(t) for t in round_trip(texts)]
    if len(translated) != len(texts):
        raise ValueError(f"round_trip returned {len(translated)} texts for {len(texts)}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")  # quotes a field holding '"' as pandas does
    if task == "sentiment":
        writer.writerow(["", "id", "sentence", "sentiment"])
        for i, (e, text) in enumerate(zip(source, translated)):
            writer.writerow([i, e.id + id_suffix, text, e.label])
    else:
        writer.writerow(["id", "sentence1", "sentence2", "is_duplicate"])
        for e, s1, s2 in zip(source, translated[0::2], translated[1::2]):
            writer.writerow([e.id + id_suffix, s1, s2, f"{float(e.label):.1f}"])
    return atomic_write_text(out_path, buffer.getvalue())
