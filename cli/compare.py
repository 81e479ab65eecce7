"""`python run.py compare A B [C ...]`: is a difference between systems real, or noise of a small test set?

Each system's score comes with its 95% bootstrap interval, and each system after the first with the p-value of
its gap to the first (metrics/significance.py: sacreBLEU 2.5.1's procedures, same numbers). Two kinds of file:

- generated sonnets (the course format, `generated_sonnets_dev.txt`) with --refs the true sonnets: chrF, the
  sonnets paired by number (the statistics of one sonnet are one item to resample); a file numbered 0..n-1, as
  the course's code (and `--protocol course`) writes, is paired by position with --refs, which must then hold
  the same number of sonnets;
- prediction files of one classification task (`id \\t Predicted_Sentiment` or `id \\t Predicted_Is_Paraphrase`)
  with --gold the labelled file (ids-sst-dev.csv, ids-cfimdb-dev.csv, quora-dev.csv): accuracy and macro-F1,
  paired by id (one example is one item).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from metrics.chrf import chrf_from_sums, segment_stats
from metrics.significance import BOOTSTRAP_SAMPLES, RANDOMIZATION_TRIALS, SEED, bootstrap_interval, paired_test
from minigpt.settings import number
from tasks.data import read_predictions, read_quora, read_sentiment, read_sonnets, sonnet_numbers

HOW_TO_READ = """\
how to read it:
  score      the metric on the test set as it is.
  95%        mean ± half-width of the scores of 1000 test sets resampled from this one (bootstrap): the range
             a rerun on another test set of the same size would likely land in. On 12 dev sonnets it is about
             ±2 chrF, so two systems 1 chrF apart are not told apart by the dev set.
  p          the chance of a gap at least this large between the system and the first one if both were equally
             good (paired: both are scored on the same resampled items). p < 0.05: the gap is unlikely to be
             noise. p >= 0.05: no evidence either way (a larger test set might tell). With many systems, about
             1 in 20 equal ones still gets p < 0.05 by chance. Identical scores get no p ("same").
  The numbers equal sacreBLEU's (`sacrebleu REFS -i A B -m chrf --paired-bs`, or --paired-ar with --test ar;
  each sonnet joined into one line), since the same seed (12345) draws the same resamples.

examples:
  python run.py compare runs/a/generated_sonnets_dev.txt runs/b/generated_sonnets_dev.txt \\
      --refs data/TRUE_sonnets_held_out_dev.txt
  python run.py compare runs/a/predictions/full-model-sst-dev-out.csv runs/b/predictions/full-model-sst-dev-out.csv \\
      --gold data/ids-sst-dev.csv --test ar
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.epilog = HOW_TO_READ
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="two or more systems' outputs of one task; the first is the baseline the others are "
                             "tested against")
    parser.add_argument("--refs", help="the true sonnets (TRUE_sonnets_held_out_dev.txt), for generated sonnets")
    parser.add_argument("--gold", help="the labelled data file, for prediction files (e.g. ids-sst-dev.csv)")
    parser.add_argument("--test", choices=("bs", "ar"), default="bs",
                        help="bs: paired bootstrap (sacrebleu --paired-bs); ar: approximate randomization "
                             "(--paired-ar) (default: bs)")
    parser.add_argument("--samples", type=number(int, 1), default=None,
                        help=f"resamples (bs, default {BOOTSTRAP_SAMPLES}) or trials (ar, default "
                             f"{RANDOMIZATION_TRIALS}) of the paired test; the intervals always use "
                             f"{BOOTSTRAP_SAMPLES}")


# ----- reading the systems ------------------------------------------------------------------------------------
def file_kind(path: str) -> str:
    """'Predicted_Sentiment' or 'Predicted_Is_Paraphrase' for a prediction file, else 'sonnets'."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    with open(path, encoding="utf-8", errors="replace") as f:
        header = [part.strip() for part in f.readline().split("\t")]
    return header[1] if len(header) == 2 and header[0] == "id" and header[1].startswith("Predicted_") else "sonnets"


def numbered_sonnets(path: str) -> dict[int, str]:
    numbers, sonnets = sonnet_numbers(path), read_sonnets(path)
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        raise ValueError(f"{path}: sonnet {repeated[0]} appears more than once")
    return dict(zip(numbers, sonnets))


def sonnet_tables(files: list[str], refs_path: str) -> tuple[str, list[np.ndarray]]:
    """(description, per system its (sonnets, 3 * 6) chrF statistics, sonnets in --refs order)."""
    refs = numbered_sonnets(refs_path)
    tables, by_position = [], []
    for path in files:
        system = numbered_sonnets(path)
        if course_numbered(system, refs):
            if len(system) != len(refs):
                raise ValueError(f"{path}: its {len(system)} sonnets are numbered 0..{len(system) - 1} (the course's "
                                 f"numbering), so they pair with --refs {refs_path} by position, but that holds "
                                 f"{len(refs)}: the counts differ")
            by_position.append(path)
            system = dict(zip(refs, system.values()))  # the k-th sonnet is the k-th of --refs
        missing = [n for n in refs if n not in system]
        if missing:
            raise ValueError(f"{path}: sonnet {missing[0]} is missing ({len(missing)} of the {len(refs)} in "
                             f"--refs {refs_path}); each system must hold every sonnet of --refs")
        extra = [n for n in system if n not in refs]
        if extra:
            raise ValueError(f"{path}: sonnet {extra[0]} is not in --refs {refs_path}")
        tables.append(np.array(segment_stats([system[n] for n in refs], list(refs.values()))))
    what = f"{len(refs)} sonnets paired by number with {refs_path}"
    if by_position:
        what += (f" ({', '.join(by_position)}: numbered 0..{len(refs) - 1} as the course's code writes, so paired "
                 "by position, in --refs order)")
    return what, tables


def course_numbered(system: dict[int, str], refs: dict[int, str]) -> bool:
    """A file numbered 0, 1, ..., n-1 in order (the course's generate_submission_sonnets) against references that
    carry other numbers: its sonnets can only pair with the references by position."""
    return list(system) == list(range(len(system))) and set(system) != set(refs)


def gold_labels(gold_path: str, column: str) -> dict[str, int]:
    if column == "Predicted_Sentiment":
        examples = read_sentiment(gold_path, labeled=True)
    else:
        examples = read_quora(gold_path, labeled=True)
    return {e.id: e.label for e in examples}


def aligned_predictions(path: str, gold: dict[str, int], gold_path: str) -> list[int]:
    """The file's predictions in the order of the gold ids; every gold id exactly once."""
    predictions = read_predictions(path)
    by_id = {}
    for id_, pred in zip(predictions.ids, predictions.preds):
        if id_ in by_id:
            raise ValueError(f"{path}: id {id_!r} appears more than once")
        if id_ not in gold:
            raise ValueError(f"{path}: id {id_!r} is not in --gold {gold_path}: ids do not match")
        by_id[id_] = pred
    missing = [id_ for id_ in gold if id_ not in by_id]
    if missing:
        raise ValueError(f"{path}: no prediction for id {missing[0]!r} ({len(missing)} of the {len(gold)} ids "
                         f"of --gold {gold_path}): ids do not match")
    if predictions.column == "Predicted_Is_Paraphrase" and not set(by_id.values()) <= {0, 1}:
        odd = next(p for p in by_id.values() if p not in (0, 1))
        raise ValueError(f"{path}: prediction {odd} is not 0 or 1 (a file holding the answer token ids must be "
                         "mapped to 0/1 first)")
    return [by_id[id_] for id_ in gold]


def classification_table(preds: list[int], labels: list[int], classes: list[int]) -> np.ndarray:
    """(examples, 1 + 1 + 3 * classes): correct, 1 (to count), then per class TP, FP, FN of the example."""
    rows = []
    for p, y in zip(preds, labels):
        row = [int(p == y), 1]
        for k in classes:
            row += [int(p == k and y == k), int(p == k and y != k), int(p != k and y == k)]
        rows.append(row)
    return np.array(rows, dtype=np.int64)


def accuracy_from_sums(sums) -> float:
    return float(sums[0] / sums[1])


def macro_f1_from_sums(sums) -> float:
    """Mean over the classes that occur (TP + FP + FN > 0) of F1_k = 2 TP / (2 TP + FP + FN), as sklearn."""
    per_class = np.asarray(sums[2:], dtype=np.float64).reshape(-1, 3)  # (classes, 3): TP, FP, FN
    present = per_class[per_class.sum(axis=1) > 0]
    return float(np.mean(2 * present[:, 0] / (2 * present[:, 0] + present[:, 1] + present[:, 2])))


# ----- scoring and printing -----------------------------------------------------------------------------------
def metric_rows(tables: list[np.ndarray], score_fn, test: str, samples: int | None, dtype) -> list[tuple]:
    """Per system: (score interval, gap to the first, p against the first or None); test 'bs' or 'ar' with
    `samples` draws (None: the test's default)."""
    intervals = [bootstrap_interval(table, score_fn, dtype=dtype) for table in tables]
    rows = [(intervals[0], None, None)]
    for table, interval in zip(tables[1:], intervals[1:]):
        gap = interval.score - intervals[0].score
        p = None if gap == 0 else paired_test(tables[0], table, score_fn, test, samples, SEED, dtype)
        rows.append((interval, gap, p))
    return rows


def print_table(name: str, files: list[str], rows: list[tuple], digits: int) -> None:
    width = max(len("system"), *(len(f) for f in files))
    print(f"\n{name}\n  {'system':<{width}}  {'score':>8}  {'95% (mean ± half-width)':>24}  {'vs first':>9}  "
          f"{'p':>7}")
    for path, (interval, gap, p) in zip(files, rows):
        ci = f"{interval.mean:.{digits}f} ± {interval.half_width:.{digits}f}"
        vs = "baseline" if gap is None else f"{gap:+.{digits}f}"
        p_text = "" if gap is None else "same" if p is None else f"{p:.4f}"
        print(f"  {path:<{width}}  {interval.score:>8.{digits}f}  {ci:>24}  {vs:>9}  {p_text:>7}")


def main(args) -> int:
    if len(args.files) < 2:
        raise ValueError("compare: give at least two files (the first is the baseline)")
    kinds = [file_kind(path) for path in args.files]
    if len(set(kinds)) > 1:
        other = next(i for i, kind in enumerate(kinds) if kind != kinds[0])
        raise ValueError(f"compare: {args.files[other]} holds {kinds[other]} but {args.files[0]} holds "
                         f"{kinds[0]}: compare files of one task")
    test = ("paired bootstrap, " if args.test == "bs" else "approximate randomization, ") + \
        f"{args.samples or (BOOTSTRAP_SAMPLES if args.test == 'bs' else RANDOMIZATION_TRIALS)} samples"
    if kinds[0] == "sonnets":
        if not args.refs:
            raise ValueError("compare: generated sonnets need --refs, the true sonnets (TRUE_sonnets_held_out_dev.txt)")
        what, tables = sonnet_tables(args.files, args.refs)
        print(f"chrF of {what}; p: {test}, against {args.files[0]}")
        rows = metric_rows(tables, chrf_from_sums, args.test, args.samples, np.float32)
        print_table("chrF", args.files, rows, digits=2)
        return 0
    if not args.gold:
        raise ValueError(f"compare: prediction files need --gold, the labelled file of the task ({kinds[0]})")
    gold = gold_labels(args.gold, kinds[0])
    preds = [aligned_predictions(path, gold, args.gold) for path in args.files]
    labels = list(gold.values())
    classes = sorted(set(labels).union(*preds))
    tables = [classification_table(p, labels, classes) for p in preds]
    print(f"{len(labels)} examples paired by id with {args.gold}; p: {test}, against {args.files[0]}")
    for name, score_fn in (("accuracy", accuracy_from_sums), ("macro-F1", macro_f1_from_sums)):
        print_table(name, args.files, metric_rows(tables, score_fn, args.test, args.samples, np.float64), digits=4)
    return 0
