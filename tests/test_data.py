"""tasks/data/ (files.py, tsv.py, sonnets.py, predictions.py): the course-format readers and writers, on fixtures
written here and on the real files."""
import csv
import logging
import re
from collections import Counter

import pytest

from tasks.data import (
    REPO_DATA_DIR,
    DataError,
    MissingDataError,
    ParaphraseExample,
    SentimentExample,
    course_file_name,
    course_preprocess,
    data_file,
    paraphrase_prompt,
    read_predictions,
    read_quora,
    read_sentiment,
    read_sonnets,
    resolve_data_dir,
    sonnet_numbers,
    write_paraphrase_predictions,
    write_sentiment_predictions,
    write_sonnets,
)
from tests.conftest import shared_path

SST_TRAIN = (
    "\tid\tsentence\tsentiment\n"
    "0\ta1\t The Rock is `` Conan '' -LRB- again -RRB- .\t3\n"
    "1\ta2\t Singer\\/composer Bryan Adams .\t4\n"
    "2\ta3\t It 's not good .\t0\n"
)
SST_TEST = "0\t\tid\tsentence\n1\t0.0\tt1\t Effective but too-tepid biopic\n2\t1.0\tt2\t Fun .\n"
# a CFIMDB-style quoted field: the value starts with a space and three literal quotes
CFIMDB_QUOTED = '\tid\tsentence\tsentiment\n0\tc1\t" """""" I liked it . """""" Really ."\t1\n1\tc2\t Bad .\t0\n'
QUORA_GPT = (
    "id\tsentence1\tsentence2\tis_duplicate\n"
    "65977 641b-aa\tWhat is AI?\tHow do you learn AI?\t0.0\n"
    '17 9f3c-bb\t"Do I need ""the"" here?"\tIs \'the\' needed, here?\t1.0\n'
)
QUORA_MINBERT = (
    "\tid\tsentence1\tsentence2\tis_duplicate\n"
    "65977\t641b-aa\tWhat is AI?\tHow do you learn AI?\t0.0\n"
    '17\t9f3c-bb\t"Do I need ""the"" here?"\tIs \'the\' needed, here?\t1.0\n'
)


def write(tmp_path, name, text, newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


# ---------------------------------------------------------------------------------------------- sentiment

def test_sst_train_quirks(tmp_path):
    path = write(tmp_path, "sst.csv", SST_TRAIN)
    examples = read_sentiment(path, labeled=True, num_labels=5)
    assert examples[0] == SentimentExample("a1", "the rock is `` conan '' -lrb- again -rrb- .", 3)
    assert examples[1].sentence == "singer\\/composer bryan adams ."  # the literal backslash is kept
    assert [e.label for e in examples] == [3, 4, 0]
    cased = read_sentiment(path, labeled=True, num_labels=5, lowercase=False)
    assert cased[1].sentence == "Singer\\/composer Bryan Adams ."  # stripped, case kept


def test_test_student_layout(tmp_path):
    examples = read_sentiment(write(tmp_path, "t.csv", SST_TEST), labeled=False, num_labels=5)
    assert examples == [SentimentExample("t1", "effective but too-tepid biopic", None),
                        SentimentExample("t2", "fun .", None)]


def test_quoted_field_with_doubled_quotes(tmp_path):
    examples = read_sentiment(write(tmp_path, "c.csv", CFIMDB_QUOTED), labeled=True, num_labels=2)
    assert examples[0].sentence == '""" i liked it . """ really .'
    assert [e.label for e in examples] == [1, 0]


def test_a_review_longer_than_pythons_csv_field_limit_is_read(tmp_path):
    review = " ".join(["it was long ."] * 20_000)  # 279,999 characters: over csv's default 131,072
    assert len(review) > 131_072
    text = f"\tid\tsentence\tsentiment\n0\tr1\t{review}\t1\n1\tr2\t Short .\t0\n"
    examples = read_sentiment(write(tmp_path, "long.csv", text), labeled=True, num_labels=2)
    assert [len(e.sentence) for e in examples] == [len(review), len("short .")]


def test_crlf_and_bom_read_like_lf(tmp_path):
    lf = read_sentiment(write(tmp_path, "lf.csv", SST_TRAIN), labeled=True, num_labels=5)
    crlf = read_sentiment(write(tmp_path, "crlf.csv", SST_TRAIN, newline="\r\n"), labeled=True, num_labels=5)
    bom = read_sentiment(write(tmp_path, "bom.csv", "\ufeff" + SST_TRAIN), labeled=True, num_labels=5)
    assert lf == crlf == bom


@pytest.mark.parametrize("row, message", [
    ("3\ta4\t Too high .\t5", r"bad\.csv:5: sentiment '5' is outside the label set \(0\.\.4\)"),
    ("3\ta4\t Half .\t2.5", r"bad\.csv:5: sentiment '2\.5' is outside the label set"),
    ("3\ta4\t Minus .\t-1", r"bad\.csv:5: sentiment '-1' is outside"),
    ("3\ta4\t   \t2", r"bad\.csv:5: empty sentence"),
    ("3\t\t Fine .\t2", r"bad\.csv:5: empty id"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path, "bad.csv", SST_TRAIN + row + "\n")
    with pytest.raises(DataError, match=message):
        read_sentiment(path, labeled=True, num_labels=5)


def test_bad_headers(tmp_path):
    with pytest.raises(DataError, match=r"nosent\.csv:1: missing column\(s\) \['sentence'\]"):
        read_sentiment(write(tmp_path, "nosent.csv", "\tid\ttext\tsentiment\n0\ta\t x\t1\n"), labeled=True)
    with pytest.raises(DataError, match=r"test\.csv:1: a 'sentiment' column .* train/dev file"):
        read_sentiment(write(tmp_path, "test.csv", SST_TRAIN), labeled=False)  # a test file with labels
    with pytest.raises(DataError, match=r"dev\.csv:1: no 'sentiment' column .* test-student"):
        read_sentiment(write(tmp_path, "dev.csv", SST_TEST), labeled=True)  # a dev file without labels
    with pytest.raises(DataError, match="tab-separated"):
        read_sentiment(write(tmp_path, "comma.csv", ",id,sentence,sentiment\n0,a, x,1\n"), labeled=True)
    with pytest.raises(DataError, match=r"empty\.csv: empty file"):
        read_sentiment(write(tmp_path, "empty.csv", ""), labeled=True)
    with pytest.raises(DataError, match="no data rows"):
        read_sentiment(write(tmp_path, "header.csv", "\tid\tsentence\tsentiment\n"), labeled=True)
    with pytest.raises(MissingDataError, match="no such file"):
        read_sentiment(tmp_path / "absent.csv", labeled=True)
    (tmp_path / "latin1.csv").write_bytes(SST_TRAIN.replace("Rock", "Ros\u00e9").encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv: not UTF-8 text"):
        read_sentiment(tmp_path / "latin1.csv", labeled=True)


# ---------------------------------------------------------------------------------------------- quora

def test_quora_both_layouts(tmp_path):
    gpt = read_quora(write(tmp_path, "gpt.csv", QUORA_GPT), labeled=True)
    minbert = read_quora(write(tmp_path, "minbert.csv", QUORA_MINBERT), labeled=True)
    # the id keeps its inner space; 0.0 / 1.0 become 0 / 1
    assert gpt[0] == ParaphraseExample("65977 641b-aa", "what is ai ?", "how do you learn ai ?", 0)
    assert gpt[1].sentence1 == 'do i need "the" here ?' and gpt[1].sentence2 == "is 'the ' needed , here ?"
    assert [e.label for e in gpt] == [0, 1]
    assert [(e.sentence1, e.sentence2, e.label) for e in minbert] == [(e.sentence1, e.sentence2, e.label) for e in gpt]
    raw = read_quora(write(tmp_path, "gpt.csv", QUORA_GPT), labeled=True, preprocess=False)
    assert raw[1].sentence1 == 'Do I need "the" here?'
    test = "id\tsentence1\tsentence2\n" + "".join(line.rsplit("\t", 1)[0] + "\n" for line in QUORA_GPT.splitlines()[1:])
    assert [e.label for e in read_quora(write(tmp_path, "test.csv", test), labeled=False)] == [None, None]


def test_course_preprocess():
    assert course_preprocess("  What's AI,  really?\tNo.") == "what 's ai , really ? no ."


def test_minbert_broken_quoting_rows_are_skipped_with_a_log(tmp_path, caplog):
    # the two shapes of the real minBERT dev file (lines 2577 and 14222): the quote eats the separator, and
    # is_duplicate is left empty; the rows after them must keep their own labels
    text = QUORA_MINBERT + (
        "65479\tad11\tAny dress idea?\t\"\"\"Where can I find a dress?\"\t\n"
        "207439\t17e4\tWhat is the conversion?\tWhat is the average conversion?\t0.0\n"
        "264614\t9054\t\"\"\"Given busy intervals, find free time?\"\t\t\n"
        "124483\t37c3\tWhy do an MBA?\tBest reasons for an MBA?\t1.0\n")
    with caplog.at_level(logging.WARNING, logger="minigpt.data"):
        examples = read_quora(write(tmp_path, "dev.csv", text), labeled=True)
    assert [(e.id, e.label) for e in examples] == [("641b-aa", 0), ("9f3c-bb", 1), ("17e4", 0), ("37c3", 1)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "dev.csv:4: skipped a row with broken quoting: empty is_duplicate" in warnings[0]
    assert "dev.csv:6:" in warnings[1]


def test_swallowing_quote_is_skipped_with_its_line_range(tmp_path, caplog):
    text = QUORA_GPT + '3 c\t"What is this?\tOther q\t0.0\n4 d\tQ a\tQ b"\t1.0\n5 e\tSame?\tSame!\t1.0\n'
    with caplog.at_level(logging.WARNING, logger="minigpt.data"):
        examples = read_quora(write(tmp_path, "q.csv", text), labeled=True)
    assert [(e.id, e.label) for e in examples] == [("65977 641b-aa", 0), ("17 9f3c-bb", 1), ("5 e", 1)]
    assert "q.csv:4-5: skipped a row with broken quoting: 3 fields where the header has 4" in caplog.text


def test_field_with_a_tab_is_broken(tmp_path, caplog):
    text = QUORA_GPT + '3 c\t"Tab\tinside"\tOther\t0.0\n'
    with caplog.at_level(logging.WARNING, logger="minigpt.data"):
        assert len(read_quora(write(tmp_path, "q.csv", text), labeled=True)) == 2
    assert "q.csv:4: skipped a row with broken quoting: a field holds a line break or a tab" in caplog.text


def test_many_broken_rows_mean_a_wrong_format(tmp_path):
    text = QUORA_GPT + "".join(f"{i} x\tA?\tB?\tyes\n" for i in range(10))  # labels that are not numbers
    with pytest.raises(DataError, match=r"q\.csv: 10 of 13 lines are in broken rows.* 'yes' is not a number"):
        read_quora(write(tmp_path, "q.csv", text), labeled=True)


def test_quora_label_outside_the_set(tmp_path):
    with pytest.raises(DataError, match=r"q\.csv:4: is_duplicate '0\.5' is outside the label set \(0\.\.1\)"):
        read_quora(write(tmp_path, "q.csv", QUORA_GPT + "3 c\tA?\tB?\t0.5\n"), labeled=True)
    with pytest.raises(DataError, match=r"q\.csv:1: a 'is_duplicate' column .* test-student file was expected"):
        read_quora(write(tmp_path, "q.csv", QUORA_GPT), labeled=False)


def test_quora_rows_with_an_empty_question_are_skipped_with_one_warning(tmp_path, caplog):
    rows = "".join(f"{i} e\tA?\t \t1.0\n" if i % 2 else f"{i} e\t\tB?\t0.0\n" for i in range(3, 10))
    path = write(tmp_path, "q.csv", QUORA_GPT + rows)  # lines 4..10 have an empty question
    with caplog.at_level(logging.WARNING, logger="minigpt.data"):
        examples = read_quora(path, labeled=True)
    assert [e.id for e in examples] == [e.id for e in read_quora(write(tmp_path, "ok.csv", QUORA_GPT), True)]
    warnings = [r.getMessage() for r in caplog.records if "empty question" in r.getMessage()]
    assert warnings == [f"{path}: 7 row(s) with an empty question skipped (line 4, 5, 6, 7, 8, ...)"]
    test_file = write(tmp_path, "t.csv", "id\tsentence1\tsentence2\n1 a\tA?\t\n2 b\tA?\tB?\n")
    assert [(e.id, e.sentence2) for e in read_quora(test_file, labeled=False)] == [("1 a", ""), ("2 b", "b ?")]
    with pytest.raises(DataError, match=r"q\.csv: every row has an empty question"):
        read_quora(write(tmp_path, "q.csv", "id\tsentence1\tsentence2\tis_duplicate\n1 a\t\tB\t1.0\n"), True)


def test_paraphrase_prompt():
    assert paraphrase_prompt("a b", 'c "d"') == (
        'Question 1: "a b"\nQuestion 2: "c "d""\nAre these questions asking the same thing?\n')


# ---------------------------------------------------------------------------------------------- sonnets

SONNETS = "Title\nby Someone\n\n\n\n\n1\n\nLine one,\nLine two.\n  Couplet.\n\n2\n\nSecond one\n\n 10 \n\nTenth\n"


def course_split(text):  # the course's parser, written out as the reference
    return [piece.strip() for piece in re.split(r"\n\s*\d+\s*\n", text)][1:]


def test_read_sonnets_matches_the_course_split(tmp_path):
    path = write(tmp_path, "s.txt", SONNETS)
    assert read_sonnets(path) == course_split(SONNETS) == ["Line one,\nLine two.\n  Couplet.", "Second one", "Tenth"]
    assert sonnet_numbers(path) == [1, 2, 10]
    assert read_sonnets(write(tmp_path, "crlf.txt", SONNETS, newline="\r\n")) == read_sonnets(path)


@pytest.mark.parametrize("start", ["", "\n\n", "  \n"])
def test_a_sonnet_file_without_a_header_is_read_whole(tmp_path, start):
    """The course's split drops the piece before the first number: without a header that is sonnet 1."""
    path = write(tmp_path, "s.txt", start + SONNETS[SONNETS.index("1\n"):])
    assert read_sonnets(path) == course_split(SONNETS) and sonnet_numbers(path) == [1, 2, 10]
    with pytest.raises(DataError, match=r"s\.txt:1: sonnet 1 has no text"):
        read_sonnets(write(tmp_path, "s.txt", "1\n\n"))


def test_bad_sonnet_files(tmp_path):
    with pytest.raises(DataError, match=r"none\.txt: no numbered sonnets"):
        read_sonnets(write(tmp_path, "none.txt", "Title\n\nJust some prose without numbers.\n"))
    with pytest.raises(DataError, match=r"empty\.txt:10: sonnet 2 has no text"):
        read_sonnets(write(tmp_path, "empty.txt", "Title\n\n\n\n\n1\n\nText\n\n2\n\n"))
    with pytest.raises(MissingDataError, match=r"absent\.txt: no such file"):
        sonnet_numbers(tmp_path / "absent.txt")


# ---------------------------------------------------------------------------------------------- writers

def test_prediction_files_round_trip(tmp_path):
    path = write_sentiment_predictions(tmp_path / "out" / "sst-dev-output.csv", ["a1", "a2"], [3, 0])
    assert path.read_text() == "id \t Predicted_Sentiment \na1, 3 \na2, 0 \n"  # the course's exact layout
    back = read_predictions(path)
    assert (back.column, back.ids, back.preds) == ("Predicted_Sentiment", ["a1", "a2"], [3, 0])
    ids = ["65977 641b-aa", "17 9f3c-bb"]
    path = write_paraphrase_predictions(tmp_path / "para.csv", ids, [1, 0])
    assert path.read_text().splitlines()[0] == "id \t Predicted_Is_Paraphrase "
    back = read_predictions(path)
    assert (back.column, back.ids, back.preds) == ("Predicted_Is_Paraphrase", ids, [1, 0])
    assert not list(tmp_path.rglob(".*.tmp"))  # no temporary file left behind


def test_prediction_writer_and_reader_errors(tmp_path):
    with pytest.raises(ValueError, match="2 ids but 1 predictions"):
        write_sentiment_predictions(tmp_path / "p.csv", ["a", "b"], [1])
    with pytest.raises(ValueError, match="not an integer"):
        write_sentiment_predictions(tmp_path / "p.csv", ["a"], [0.5])
    with pytest.raises(ValueError, match="holds a comma"):
        write_sentiment_predictions(tmp_path / "p.csv", ["a,b"], [1])
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(DataError, match=r"bad\.csv:3: 'a2 3' is not"):
        read_predictions(write(tmp_path, "bad.csv", "id \t Predicted_Sentiment \na1, 3 \na2 3\n"))
    with pytest.raises(DataError, match=r"hdr\.csv:1: header"):
        read_predictions(write(tmp_path, "hdr.csv", "id,pred\na1, 3 \n"))


def test_sonnet_output_round_trip(tmp_path):
    sonnets = ["Shall I compare thee\nto a summer's day?\n  Couplet here.", "  Second\nsonnet  "]
    path = write_sonnets(tmp_path / "generated_sonnets.txt", sonnets, [132, 133])
    text = path.read_text()
    assert text.startswith("--Generated Sonnets-- \n\n\n132\n")
    assert read_sonnets(path) == course_split(text) == [s.strip() for s in sonnets]
    assert sonnet_numbers(path) == [132, 133]


def test_sonnet_that_would_not_parse_back_keeps_the_old_file(tmp_path):
    path = write_sonnets(tmp_path / "g.txt", ["Good sonnet"], [1])
    before = path.read_text()
    with pytest.raises(DataError, match=r"g\.txt: sonnet 2 would not parse back"):
        write_sonnets(path, ["Fine", "A line\n7\nthat is a number"], [1, 2])
    with pytest.raises(DataError, match="sonnet 1 has no text"):
        write_sonnets(path, ["   "], [1])
    assert path.read_text() == before and not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------- paths

def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIGPT_DATA", raising=False)
    assert resolve_data_dir(str(tmp_path)) == tmp_path
    assert resolve_data_dir(None, must_exist=False) == REPO_DATA_DIR
    monkeypatch.setenv("MINIGPT_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    with pytest.raises(MissingDataError,
                       match=r"absent \(from --data-dir\) does not exist.*--data-dir FOLDER.*python run\.py download"):
        resolve_data_dir(str(tmp_path / "absent"))
    assert resolve_data_dir(str(tmp_path / "absent"), must_exist=False) == tmp_path / "absent"
    (tmp_path / "file").write_text("x")
    with pytest.raises(MissingDataError, match="is a file, not a directory"):
        resolve_data_dir(str(tmp_path / "file"))


def test_data_file_says_what_and_where(tmp_path):
    (tmp_path / "sonnets.txt").write_text("x")
    assert data_file(tmp_path, "sonnets.txt") == tmp_path / "sonnets.txt"
    with pytest.raises(MissingDataError, match=r"(?s)ids-sst-dev\.csv is missing.*labels 0-4.*run\.py download.*"
                                               r"--data-dir FOLDER \(or \$MINIGPT_DATA\)"):
        data_file(tmp_path, "ids-sst-dev.csv")
    with pytest.raises(MissingDataError, match=r"(?s)ids-cfimdb-train\.csv is missing.*no public download.*cs224n"):
        data_file(tmp_path, "ids-cfimdb-train.csv")
    with pytest.raises(MissingDataError, match=r"(?s)quora-test-student\.csv is missing.*no label column"):
        data_file(tmp_path, course_file_name("quora", "test"))
    assert course_file_name("cfimdb", "dev") == "ids-cfimdb-dev.csv"


# ---------------------------------------------------------------------------------------------- real files

@pytest.mark.parametrize("dataset, sizes, counts", [
    ("sst", (8544, 1101, 2210), ({0: 1092, 1: 2218, 2: 1624, 3: 2322, 4: 1288},
                                 {0: 139, 1: 289, 2: 229, 3: 279, 4: 165})),
    ("cfimdb", (1707, 245, 488), ({0: 856, 1: 851}, {0: 123, 1: 122})),
])
def test_real_sentiment_files(dataset, sizes, counts):
    num_labels = {"sst": 5, "cfimdb": 2}[dataset]
    for split, size, count in zip(("train", "dev", "test"), sizes, counts + (None,)):
        path = shared_path("data", course_file_name(dataset, split))
        examples = read_sentiment(path, labeled=split != "test", num_labels=num_labels)
        assert len(examples) == size and len({e.id for e in examples}) == size
        if count is None:
            assert all(e.label is None for e in examples)
        else:
            assert Counter(e.label for e in examples) == count
        with open(path, encoding="utf-8") as fp:  # the course's loader: DictReader, lower() and strip()
            rows = csv.DictReader(fp, delimiter="\t")
            course = [(r["id"].lower().strip(), r["sentence"].lower().strip()) for r in rows]
        assert [(e.id, e.sentence) for e in examples] == course


def test_real_quora_30_files():
    train = read_quora(shared_path("data", "quora-train-30.csv"), labeled=True)
    dev = read_quora(shared_path("data", "quora-dev-30.csv"), labeled=True)
    test = read_quora(shared_path("data", "quora-test-student-30.csv"), labeled=False)
    assert (len(train), len(dev), len(test)) == (30, 30, 30)
    assert Counter(e.label for e in train) == {0: 19, 1: 11} and Counter(e.label for e in dev) == {0: 22, 1: 8}
    assert dev[0].id == "65977 641bc8de-b905-4ae4-a0ee-abea15fbc88e"
    with pytest.raises(DataError, match="no 'is_duplicate' column"):  # the test file is not a dev file
        read_quora(shared_path("data", "quora-test-student-30.csv"), labeled=True)


def test_real_minbert_quora_dev_broken_rows(caplog):
    path = shared_path("data", "minbert", "quora-dev.csv")
    with caplog.at_level(logging.WARNING, logger="minigpt.data"):
        examples = read_quora(path, labeled=True)
    assert len(examples) == 20214 - 2
    assert Counter(e.label for e in examples) == {0: 12627, 1: 7585}
    skipped = [r.getMessage() for r in caplog.records if "broken quoting" in r.getMessage()]
    assert [m.split(": skipped")[0].rsplit(":", 1)[1] for m in skipped] == ["2577", "14222"]
    with open(path, encoding="utf-8") as fp:  # the surviving rows keep their own labels, in order
        rows = [r for r in csv.DictReader(fp, delimiter="\t") if r["is_duplicate"]]
    assert [(e.id, e.label) for e in examples] == [(r["id"], int(float(r["is_duplicate"]))) for r in rows]


def test_real_sonnet_files():
    expected = {"sonnets.txt": range(1, 132), "sonnets_held_out_dev.txt": range(132, 144),
                "TRUE_sonnets_held_out_dev.txt": range(132, 144), "sonnets_held_out.txt": range(145, 157)}
    for name, numbers in expected.items():
        path = shared_path("data", name)
        assert read_sonnets(path) == course_split(path.read_text(encoding="utf-8"))
        assert sonnet_numbers(path) == list(numbers)
    prompts = read_sonnets(shared_path("data", "sonnets_held_out_dev.txt"))
    truth = read_sonnets(shared_path("data", "TRUE_sonnets_held_out_dev.txt"))
    assert all(t.startswith(p) and p.count("\n") == 2 for p, t in zip(prompts, truth))
