"""Fixtures for the classification task tests: a tiny tokenizer, synthetic separable data written in the course's
file formats, and the CLI's parser. Not a test module (its name starts with an underscore)."""
from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from minigpt.tokenizer import write_vocab_files

FILLERS = ("the", "a", "movie", "film", "plot", "actor", "story", "scene", "was", "is", "very", "really", "and",
           "but", "so", "one")  # no x, q, z, j or k: the keywords below use only those letters
SENTIMENT_KEYWORDS = ("xx", "qq", "zz", "jj", "kk")  # label k <=> the sentence holds SENTIMENT_KEYWORDS[k]
PARAPHRASE_KEYWORDS = ("zz", "xx")  # label k <=> the second question holds PARAPHRASE_KEYWORDS[k]
SCRATCH = "n_layer=2,n_head=2,n_embd=64,n_positions=256"


def tokenizer_dir(path: Path) -> Path:
    """A byte-level BPE in which "yes" and "no" are single tokens (the cloze answers)."""
    return write_vocab_files(path, merges=[("y", "e"), ("ye", "s"), ("n", "o")])


def keyword_sentence(rng: random.Random, keyword: str) -> str:
    words = [rng.choice(FILLERS) for _ in range(rng.randint(2, 4))]
    words.insert(rng.randint(0, len(words)), keyword)
    return " ".join(words)


def write_tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_sentiment_files(data_dir: Path, dataset: str = "sst", sizes=(200, 60, 40), seed: int = 0) -> Path:
    """ids-{dataset}-{train,dev,test-student}.csv in the course format; the keyword decides the label."""
    rng = random.Random(seed)
    num_labels = 5 if dataset == "sst" else 2
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "dev", "test-student"), sizes):
        labels = [i % num_labels for i in range(n)]
        rows = [(f"{split}{i:04d}", keyword_sentence(rng, SENTIMENT_KEYWORDS[y]), y) for i, y in enumerate(labels)]
        if split == "test-student":
            write_tsv(data_dir / f"ids-{dataset}-{split}.csv", ["0", "", "id", "sentence"],
                      [[i + 1, float(i), id_, s] for i, (id_, s, _) in enumerate(rows)])
        else:
            write_tsv(data_dir / f"ids-{dataset}-{split}.csv", ["", "id", "sentence", "sentiment"],
                      [[i, id_, s, y] for i, (id_, s, y) in enumerate(rows)])
    return data_dir


def write_quora_files(data_dir: Path, sizes=(200, 60, 40), seed: int = 0) -> Path:
    """quora-{train,dev,test-student}.csv in the GPT-project format; the keyword in question 2 decides."""
    rng = random.Random(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "dev", "test-student"), sizes):
        rows = []
        for i in range(n):
            y = i % 2
            rows.append([f"{i} {split}-{i:04d}", keyword_sentence(rng, rng.choice(FILLERS)) + "?",
                         keyword_sentence(rng, PARAPHRASE_KEYWORDS[y]) + "?", f"{float(y):.1f}"])
        if split == "test-student":
            write_tsv(data_dir / f"quora-{split}.csv", ["id", "sentence1", "sentence2"], [r[:3] for r in rows])
        else:
            write_tsv(data_dir / f"quora-{split}.csv", ["id", "sentence1", "sentence2", "is_duplicate"], rows)
    return data_dir


def parse(module, *argv: str) -> argparse.Namespace:
    """The task's command line, as run.py builds it."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])
