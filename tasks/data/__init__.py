"""The course's data (CS224N GPT-2 default final project): where the files are, how to read and write them, and
the extra training data the tasks can add.

    files.py           --data-dir resolution, data_file, DataError / MissingDataError, atomic_write_text
    tsv.py             SST / CFIMDB / Quora tab-separated files -> SentimentExample, ParaphraseExample
    sonnets.py         sonnets.txt and friends; the generated sonnets file
    predictions.py     the prediction files the course grades
    fetch_data.py      `run.py download data`: the public data sets in the course's formats
    gutenberg.py       the sonnets from Project Gutenberg (for fetch_data.py)
    augment.py         back-translation rows (--augment)
    hard_negatives.py  adversarial hard negatives for Quora (--adversarial)

The readers and writers are imported here too, so `from tasks.data import read_sonnets` works.
"""
from .files import (
    COURSE_FILES,
    REPO_DATA_DIR,
    SENTIMENT_NUM_LABELS,
    DataError,
    MissingDataError,
    atomic_write_text,
    course_file_name,
    course_files,
    data_file,
    resolve_data_dir,
)
from .predictions import Predictions, read_predictions, write_paraphrase_predictions, write_sentiment_predictions
from .sonnets import read_sonnets, sonnet_numbers, split_sonnets, write_sonnets
from .tsv import ParaphraseExample, SentimentExample, course_preprocess, paraphrase_prompt, read_quora, read_sentiment

__all__ = ["COURSE_FILES", "REPO_DATA_DIR", "SENTIMENT_NUM_LABELS", "DataError", "MissingDataError",
           "atomic_write_text", "course_file_name", "course_files", "data_file", "resolve_data_dir", "Predictions",
           "read_predictions", "write_paraphrase_predictions", "write_sentiment_predictions", "read_sonnets",
           "sonnet_numbers", "split_sonnets", "write_sonnets", "ParaphraseExample", "SentimentExample",
           "course_preprocess", "paraphrase_prompt", "read_quora", "read_sentiment"]
