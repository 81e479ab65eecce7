"""`python run.py compare`: fixture files written here; chrF p-values equal sacreBLEU's, accuracy and macro-F1
intervals and p-values equal the same procedures run by hand on the examples, and bad input gives one line."""
from __future__ import annotations

import random

import numpy as np
import pytest
from sacrebleu.metrics import CHRF
from sacrebleu.significance import PairedTest

import run
from cli.compare import accuracy_from_sums, classification_table, macro_f1_from_sums, metric_rows, sonnet_tables
from metrics.chrf import chrf_from_sums
from tasks.classify import accuracy, macro_f1
from tasks.data import write_sentiment_predictions, write_sonnets
from tests._fixtures import noisy

WORDS = "thee thou love fair summer day sweet time beauty eyes heart doth art night".split()
NUMBERS = [132, 133, 134, 135, 136, 137, 138, 139, 140, 141]


def sonnet(rng: random.Random) -> str:
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(14))


def sonnet_fixture(tmp_path):
    """(refs file, refs, two systems' texts, their files) of 10 sonnets; system B is written in another order."""
    rng = random.Random(1)
    refs = [sonnet(rng) for _ in NUMBERS]
    a, b = [noisy(r, 0.3, rng) for r in refs], [noisy(r, 0.305, rng) for r in refs]  # close: p about 0.2-0.6
    refs_file = write_sonnets(tmp_path / "TRUE.txt", refs, NUMBERS)
    file_a = write_sonnets(tmp_path / "a.txt", a, NUMBERS)
    file_b = write_sonnets(tmp_path / "b.txt", b[::-1], NUMBERS[::-1])  # paired by number, not by position
    return refs_file, refs, a, b, file_a, file_b


def table_rows(out: str) -> dict[str, list[str]]:
    """file name -> the printed fields of its row (the last table printed wins)."""
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  /")}


@pytest.mark.parametrize("test", ["bs", "ar"])
def test_sonnet_p_values_and_intervals_equal_sacrebleu(tmp_path, capsys, test):
    refs_file, refs, a, b, file_a, file_b = sonnet_fixture(tmp_path)
    n = 1000 if test == "bs" else 2000
    assert run.main(["compare", str(file_a), str(file_b), "--refs", str(refs_file), "--test", test,
                     "--samples", str(n)]) == 0
    rows = table_rows(capsys.readouterr().out)
    _, scores = PairedTest([("a", a), ("b", b)], {"chrf": CHRF()}, [refs], test_type=test, n_samples=n)()
    expected_b = scores["chrF2"][1]
    interval_b = CHRF().corpus_score(b, [refs], n_bootstrap=1000)
    assert rows[str(file_b)][0] == f"{expected_b.score:.2f}"
    assert rows[str(file_b)][1:4] == [f"{interval_b._mean:.2f}", "±", f"{interval_b._ci:.2f}"]
    assert rows[str(file_b)][-1] == f"{expected_b.p_value:.4f}"
    assert 0.01 < expected_b.p_value < 0.99  # close systems: a p-value that a wrong count would change
    assert rows[str(file_a)][-1] == "baseline"
    # and to the last digit, from the rows compare prints
    rows = metric_rows(sonnet_tables([str(file_a), str(file_b)], str(refs_file))[1], chrf_from_sums, test, n,
                       np.float32)
    assert rows[1][2] == pytest.approx(expected_b.p_value, abs=1e-9)
    assert rows[1][0].score == pytest.approx(expected_b.score, abs=1e-9)


def test_classification_intervals_and_p_values(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ids = [f"id{i:03d}" for i in range(120)]
    labels = rng.integers(3, size=120)
    pred_a = np.where(rng.random(120) < 0.7, labels, rng.integers(3, size=120))
    pred_b = np.where(rng.random(120) < 0.75, labels, rng.integers(3, size=120))
    gold = tmp_path / "ids-sst-dev.csv"
    gold.write_text("\tid\tsentence\tsentiment\n" + "".join(
        f"{i}\t{id_}\tsentence number {i} .\t{y}\n" for i, (id_, y) in enumerate(zip(ids, labels))))
    file_a = write_sentiment_predictions(tmp_path / "a.csv", ids, pred_a.tolist())
    file_b = write_sentiment_predictions(tmp_path / "b.csv", ids[::-1], pred_b[::-1].tolist())
    assert run.main(["compare", str(file_a), str(file_b), "--gold", str(gold)]) == 0
    out = capsys.readouterr().out
    accuracy_part, f1_part = out.split("\naccuracy\n")[1].split("\nmacro-F1\n")
    acc_rows, f1_rows = table_rows(accuracy_part), table_rows(f1_part)
    assert acc_rows[str(file_b)][0] == f"{accuracy(pred_b.tolist(), labels.tolist()):.4f}"
    assert f1_rows[str(file_b)][0] == f"{macro_f1(pred_b.tolist(), labels.tolist()):.4f}"
    # the paired bootstrap by hand: sacreBLEU's draws (default_rng(12345)), gaps centred on their mean
    draws = np.random.default_rng(12345).choice(120, size=(1000, 120), replace=True)
    for rows, metric in ((acc_rows, accuracy), (f1_rows, macro_f1)):
        score_a = np.array([metric(pred_a[d].tolist(), labels[d].tolist()) for d in draws])
        score_b = np.array([metric(pred_b[d].tolist(), labels[d].tolist()) for d in draws])
        gap = abs(metric(pred_b.tolist(), labels.tolist()) - metric(pred_a.tolist(), labels.tolist()))
        gaps = np.abs(score_b - score_a)
        p = (np.sum(gaps - gaps.mean() > gap) + 1) / 1001
        ordered = np.sort(score_b)
        assert rows[str(file_b)][1:4] == [f"{ordered.mean():.4f}", "±", f"{0.5 * (ordered[974] - ordered[25]):.4f}"]
        assert rows[str(file_b)][-1] == f"{p:.4f}"


def test_macro_f1_from_sums_equals_the_task_metric():
    rng = np.random.default_rng(1)
    labels, preds = rng.integers(4, size=50).tolist(), rng.integers(3, size=50).tolist()
    table = classification_table(preds, labels, sorted(set(labels) | set(preds)))
    assert macro_f1_from_sums(table.sum(axis=0)) == pytest.approx(macro_f1(preds, labels))
    assert accuracy_from_sums(table.sum(axis=0)) == pytest.approx(accuracy(preds, labels))


def test_bad_inputs_give_one_line(tmp_path, capsys):
    refs_file, refs, a, b, file_a, file_b = sonnet_fixture(tmp_path)
    short = write_sonnets(tmp_path / "short.txt", a[:-1], NUMBERS[:-1])
    preds = write_sentiment_predictions(tmp_path / "p.csv", ["x", "y"], [0, 1])
    other = write_sentiment_predictions(tmp_path / "q.csv", ["x", "z"], [0, 1])
    gold = tmp_path / "gold.csv"
    gold.write_text("\tid\tsentence\tsentiment\n0\tx\tgood .\t1\n1\ty\tbad .\t0\n")
    cases = [
        ([str(file_a), str(short), "--refs", str(refs_file)], "sonnet 141 is missing"),
        ([str(file_a), str(preds), "--refs", str(refs_file)], "compare files of one task"),
        ([str(file_a), str(file_b)], "need --refs"),
        ([str(preds), str(other), "--gold", str(gold)], "'z' is not in --gold"),
        ([str(preds), str(preds)], "need --gold"),
        ([str(file_a)], "at least two files"),
        ([str(file_a), str(tmp_path / "nothing.txt"), "--refs", str(refs_file)], "no such file"),
    ]
    for argv, message in cases:
        assert run.main(["compare", *argv]) == 1, message
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_a_file_numbered_from_zero_as_the_course_writes_pairs_by_position(tmp_path, capsys):
    refs_file, refs, a, b, file_a, file_b = sonnet_fixture(tmp_path)
    course_a = write_sonnets(tmp_path / "course-a.txt", a, range(len(a)))  # the course's numbering, refs' order
    assert run.main(["compare", str(file_a), str(course_a), "--refs", str(refs_file)]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert rows[str(course_a)][0] == rows[str(file_a)][0] and rows[str(course_a)][-1] == "same"
    assert f"{course_a}: numbered 0..9 as the course's code writes, so paired by position" in out
    assert str(file_a) + ":" not in out  # the file numbered as --refs is paired by number, and not named so
    short = write_sonnets(tmp_path / "course-short.txt", a[:-1], range(len(a) - 1))
    assert run.main(["compare", str(file_a), str(short), "--refs", str(refs_file)]) == 1
    err = capsys.readouterr().err
    assert "numbered 0..8 (the course's numbering)" in err and "the counts differ" in err and err.count("\n") == 1
