"""Fetch the public sources of the course data and write them in the course formats (`python run.py download data`).

- sonnets: Project Gutenberg eBook #1041 (Shakespeare's Sonnets, plain text). Split by number: sonnets.txt = 1-131,
  sonnets_held_out_dev.txt = first 3 lines of 132-143, TRUE_sonnets_held_out_dev.txt = full 132-143,
  sonnets_held_out.txt = first 3 lines of 144-154 (11 prompts; the course's test set differs, see data/README.md).
- sst: the Stanford Sentiment Treebank trees (trainDevTestTrees_PTB.zip, standard splits): sentence = the tree's
  leaves joined by spaces, after one leading space as in the course files; label = the root's label (0-4).
- quora: the Quora question-pairs TSV, shuffled with seed 11711 and split 70 / 10 / 20 % into train / dev / test.
- cfimdb: no public source; the error says where to get it.
Each download goes to <data_dir>/raw/ (as NAME.part, renamed when complete) and is reused by later runs: a file
put there by hand works offline. Standard library only, plus tqdm for the progress bar.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import random
import re
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .files import COURSE_FILES, DataError, atomic_write_text
from .gutenberg import build_sonnets
from .tsv import tsv_reader

logger = logging.getLogger("minigpt.data")

URLS = {
    "sonnets": "https://www.gutenberg.org/cache/epub/1041/pg1041.txt",
    "sst": "https://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip",
    "quora": "http://qim.fs.quoracdn.net/quora_duplicate_questions.tsv",
}
OUTPUTS = {
    "sonnets": ["sonnets.txt", "sonnets_held_out_dev.txt", "TRUE_sonnets_held_out_dev.txt", "sonnets_held_out.txt"],
    "sst": ["ids-sst-train.csv", "ids-sst-dev.csv", "ids-sst-test-student.csv"],
    "quora": ["quora-train.csv", "quora-dev.csv", "quora-test-student.csv"],
    "cfimdb": ["ids-cfimdb-train.csv", "ids-cfimdb-dev.csv", "ids-cfimdb-test-student.csv"],
}
SEED = 11711


class FetchError(RuntimeError):
    """Some sources could not be fetched; the message says, per file, how to get it by hand."""


def download(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """url -> dest, through dest.part (renamed when complete), with a progress bar."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "minigpt (python run.py download data)"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=None) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if total is not None and part.stat().st_size != total:
            raise OSError(f"got {part.stat().st_size} of {total} bytes")
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    logger.info("downloaded %s -> %s (%d bytes, sha256 %s)", url, dest, dest.stat().st_size, digest.hexdigest())
    return dest


# ----------------------------------------------------------------------------------- SST (PTB trees)

@dataclass
class Tree:
    label: int
    children: list[Tree] = field(default_factory=list)
    word: str | None = None  # set on leaves only

    def leaves(self) -> list[str]:
        return [self.word] if self.word is not None else [w for child in self.children for w in child.leaves()]


_TREE_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def parse_tree(text: str) -> Tree:
    """A PTB-style tree with integer labels: '(3 (2 It) (4 (4 works) (2 .)))'. ValueError if malformed."""
    tokens = _TREE_TOKEN.findall(text)
    tree, end = _parse_node(tokens, 0)
    if end != len(tokens):
        raise ValueError(f"text after the tree: {' '.join(tokens[end:end + 5])!r}")
    return tree


def _parse_node(tokens: list[str], i: int) -> tuple[Tree, int]:
    """Parse the node that starts at tokens[i]; return it and the index after its ')'."""
    if i + 2 >= len(tokens) or tokens[i] != "(" or not tokens[i + 1].lstrip("-").isdigit():
        raise ValueError(f"expected '(<label>' at token {i}, got {' '.join(tokens[i:i + 3])!r}")
    node, i = Tree(int(tokens[i + 1])), i + 2
    if tokens[i] not in ("(", ")"):  # a leaf: (label word)
        node.word, i = tokens[i], i + 1
    else:
        while i < len(tokens) and tokens[i] == "(":
            child, i = _parse_node(tokens, i)
            node.children.append(child)
    if i >= len(tokens) or tokens[i] != ")" or (node.word is None and not node.children):
        raise ValueError(f"expected a child node or ')' at token {i} (unbalanced parentheses?)")
    return node, i + 1


def _tsv(header: list[str], rows: list[list]) -> str:
    """Tab-separated text as pandas writes it: minimal quoting, doubled quotes, LF line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def build_sst(raw: Path, data_dir: Path) -> list[Path]:
    written = []
    with zipfile.ZipFile(raw) as archive:
        members = {Path(name).name: name for name in archive.namelist()}
        for split, name in (("train", "ids-sst-train.csv"), ("dev", "ids-sst-dev.csv"),
                            ("test", "ids-sst-test-student.csv")):
            if f"{split}.txt" not in members:
                raise DataError(f"{raw}: no {split}.txt in the archive (has {sorted(members)})")
            rows = []
            lines = archive.read(members[f"{split}.txt"]).decode("utf-8").splitlines()
            for number, line in enumerate(line for line in lines if line.strip()):
                try:
                    tree = parse_tree(line)
                except ValueError as e:
                    raise DataError(f"{raw}:{split}.txt:{number + 1}: {e}") from None
                # ids: the course's are opaque; ours are the first 25 hex digits of sha1("sst-<split>-<row>")
                id_ = hashlib.sha1(f"sst-{split}-{number}".encode()).hexdigest()[:25]
                sentence = " " + " ".join(tree.leaves())
                rows.append([number, id_, sentence, tree.label] if split != "test"
                            else [number + 1, float(number), id_, sentence])
            header = ["", "id", "sentence", "sentiment"] if split != "test" else ["0", "", "id", "sentence"]
            written.append(atomic_write_text(data_dir / name, _tsv(header, rows)))
            logger.info("wrote %s (%d sentences)", data_dir / name, len(rows))
    return written


# ----------------------------------------------------------------------------------- Quora

def build_quora(raw: Path, data_dir: Path) -> list[Path]:
    """Keep rows with two non-empty questions and a 0/1 label (whitespace runs, line breaks included, become one
    space); shuffle with SEED; split 70/10/20. ids: '<pair id> <uuid5 of "quora-<pair id>">', like the course's."""
    pairs, skipped = [], 0
    with open(raw, encoding="utf-8-sig", newline="") as fp:
        reader = tsv_reader(fp)
        header = next(reader, [])
        wanted = ["id", "question1", "question2", "is_duplicate"]
        if any(c not in header for c in wanted):
            raise DataError(f"{raw}:1: header {header} lacks one of {wanted}")
        columns = [header.index(c) for c in wanted]
        for fields in reader:
            if len(fields) != len(header):
                skipped += 1
                continue
            pair_id, q1, q2, label = (" ".join(fields[c].split()) for c in columns)
            if not (pair_id and q1 and q2 and label in ("0", "1")):
                skipped += 1
                continue
            pairs.append((f"{pair_id} {uuid.uuid5(uuid.NAMESPACE_URL, f'quora-{pair_id}')}", q1, q2, int(label)))
    logger.info("%s: %d question pairs kept, %d rows skipped (malformed or empty)", raw, len(pairs), skipped)
    random.Random(SEED).shuffle(pairs)
    n_train, n_dev = round(0.7 * len(pairs)), round(0.1 * len(pairs))
    parts = {"quora-train.csv": pairs[:n_train], "quora-dev.csv": pairs[n_train:n_train + n_dev],
             "quora-test-student.csv": pairs[n_train + n_dev:]}
    written = []
    for name, part in parts.items():
        if name == "quora-test-student.csv":
            text = _tsv(["id", "sentence1", "sentence2"], [p[:3] for p in part])
        else:
            text = _tsv(["id", "sentence1", "sentence2", "is_duplicate"], [[*p[:3], float(p[3])] for p in part])
        written.append(atomic_write_text(data_dir / name, text))
        logger.info("wrote %s (%d pairs)", data_dir / name, len(part))
    return written


# ----------------------------------------------------------------------------------- driver

BUILDERS = {"sonnets": build_sonnets, "sst": build_sst, "quora": build_quora}
RAW_NAMES = {"sonnets": "pg1041.txt", "sst": "trainDevTestTrees_PTB.zip", "quora": "quora_duplicate_questions.tsv"}


def _by_hand(name: str, data_dir: Path) -> str:
    return "\n".join(f"    {data_dir / f}: {COURSE_FILES[f][0]}" for f in OUTPUTS[name])


def _again(name: str, data_dir: Path) -> str:
    """The command that fetches this one source into this data directory again."""
    return f"python run.py download data --data-dir {data_dir} --only {name}"


OFFLINE = ("Offline with the course's files already in a folder? Skip the download: give the tasks "
           "--data-dir FOLDER (or set $MINIGPT_DATA=FOLDER).")


def _cfimdb_message(data_dir: Path) -> str:
    return (f"cfimdb: there is no public download. Copy the three files from the data/ folder of the CS224N GPT-2 "
            f"default final project repository (cs224n_gpt) into {data_dir}:\n{_by_hand('cfimdb', data_dir)}")


def fetch_data(data_dir, what=("sonnets", "sst", "quora"), urls: dict[str, str] | None = None,
               force: bool = False, timeout: float = 60.0) -> list[Path]:
    """Download and convert each source in `what`; return the files written.

    A source whose course files are all present is left alone unless force=True. Sources that cannot be fetched
    do not stop the others; at the end FetchError lists them, with what to do by hand for each file.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    urls = {**URLS, **(urls or {})}
    written, failures = [], []
    for name in what:
        if name not in OUTPUTS:
            raise ValueError(f"unknown data source {name!r}; choose from {sorted(OUTPUTS)}")
        if not force and all((data_dir / f).is_file() for f in OUTPUTS[name]):
            logger.info("%s: all files already in %s (force=True rewrites them)", name, data_dir)
            continue
        if name == "cfimdb":
            failures.append(_cfimdb_message(data_dir))
            continue
        raw = data_dir / "raw" / RAW_NAMES[name]
        if not raw.is_file():
            try:
                download(urls[name], raw, timeout)
            except (OSError, urllib.error.URLError) as e:  # URLError, HTTPError, timeouts, refused connections
                failures.append(f"{name}: could not download {urls[name]} ({e}).\n  Download it by hand and save "
                                f"it as {raw}, then run `{_again(name, data_dir)}`; or put the course's "
                                f"files there yourself:\n{_by_hand(name, data_dir)}")
                continue
        try:
            written += BUILDERS[name](raw, data_dir)
        except (DataError, csv.Error, zipfile.BadZipFile, UnicodeDecodeError) as e:
            failures.append(f"{name}: {raw} is not in the expected form ({e}).\n  Delete it and run "
                            f"`{_again(name, data_dir)}`, or put these files there yourself:\n"
                            f"{_by_hand(name, data_dir)}")
    sentiment = "sst" in what and "cfimdb" not in what  # the notice belongs to the sentiment data sets only
    if sentiment and not all((data_dir / f).is_file() for f in OUTPUTS["cfimdb"]):
        logger.warning(_cfimdb_message(data_dir))
    if failures:
        failures.append(OFFLINE)
        raise FetchError("\n\n".join(failures))
    return written
