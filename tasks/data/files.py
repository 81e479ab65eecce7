"""Where the course's data files are (--data-dir, $MINIGPT_DATA, data/) and the errors that name them. (Every
data writer writes through minigpt/files.py's atomic_write_text, re-exported here.)

    resolve_data_dir(arg)        the data directory, or MissingDataError saying how to get it
    data_file(data_dir, name)    one file of it
    course_file_name(set, split) ids-sst-train.csv, quora-test-student.csv, ...
    course_files(data_dir, sets)  {name: path} of the files a run of these data sets reads: TrainConfig.data_files,
                                  which the run record fingerprints for --resume (training/run_settings.py)
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from minigpt.files import atomic_write_text  # noqa: F401 (re-exported)

REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data"
SENTIMENT_NUM_LABELS = {"sst": 5, "cfimdb": 2}  # SST: 0 negative .. 4 positive; CFIMDB: 0 negative, 1 positive


class DataError(ValueError):
    """A data file that is not in the expected format; the message names the file and line."""


class MissingDataError(FileNotFoundError):
    """A data directory or file that is not there; the message says what it should hold and how to get it."""


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


SONNET_FILES = ("sonnets.txt", "sonnets_held_out_dev.txt", "TRUE_sonnets_held_out_dev.txt", "sonnets_held_out.txt")


def course_files(data_dir: Path, *datasets: str) -> dict[str, str]:
    """{name: path} of the course files a run of these data sets reads ('sonnet', 'sst', 'cfimdb', 'quora')."""
    names = [n for d in datasets for n in (SONNET_FILES if d == "sonnet" else
                                           [course_file_name(d, split) for split in ("train", "dev", "test")])]
    return {name: str(Path(data_dir) / name) for name in names}


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
            f"data directory {path} (from {source}) does not exist. If the course's files are in another folder, "
            f"give --data-dir FOLDER (or set $MINIGPT_DATA=FOLDER); else fill this one with "
            f"`python run.py download data --data-dir {path}` (sonnets, SST, Quora); the CFIMDB files must be "
            f"copied by hand. data/README.md lists every file and its format.")
    return path


def data_file(data_dir: str | os.PathLike, name: str) -> Path:
    """data_dir / name, or MissingDataError naming the file, its expected format and where to get it."""
    path = Path(data_dir) / name
    if path.is_file():
        return path
    fmt, source = COURSE_FILES.get(name, ("see data/README.md", "see data/README.md"))
    raise MissingDataError(f"{path} is missing.\n  expected format: {fmt}\n  where to get it: {source}\n  "
                           f"or, if the course's files are in another folder: --data-dir FOLDER (or $MINIGPT_DATA)")


@contextlib.contextmanager
def utf8_or_data_error(path):
    """Turn a UnicodeDecodeError inside the block into a DataError that names the file."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
