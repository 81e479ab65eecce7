"""tasks/data/fetch_data.py: the Gutenberg, PTB-tree and Quora converters, served by a local HTTP server, and
offline."""
import functools
import http.server
import re
import socket
import threading
import zipfile
from collections import Counter

import pytest

from tasks.data import DataError, read_quora, read_sentiment, read_sonnets, sonnet_numbers
from tasks.data.fetch_data import OFFLINE, OUTPUTS, FetchError, fetch_data, parse_tree
from tasks.data.gutenberg import parse_gutenberg_sonnets, to_roman

# ---------------------------------------------------------------------------------------------- fixtures


def sonnet_lines(n: int) -> list[str]:
    """Made-up verse: 14 lines (99: 15, 126: 12, as in the real sequence), the last two the couplet."""
    size = {99: 15, 126: 12}.get(n, 14)
    return [f"Line {i} of sonnet {n}, \u2018thy\u2019 love\u2014mine" for i in range(1, size + 1)]


def gutenberg_text(count: int = 154) -> str:
    """A fake Project Gutenberg file in #1041's layout: numerals and verse indented by 2, the couplet by 4."""
    parts = ["The Project Gutenberg eBook of The Sonnets\n\nTitle: The Sonnets\n\n",
             "*** START OF THE PROJECT GUTENBERG EBOOK THE SONNETS ***\n\n\n\n\nTHE SONNETS\n\n"
             "by William Shakespeare\n\n\n\n"]
    for n in range(1, count + 1):
        lines = sonnet_lines(n)
        body = "\n".join("  " + line for line in lines[:-2]) + "\n" + "\n".join("    " + line for line in lines[-2:])
        parts.append(f"\n  {to_roman(n)}\n\n{body}\n")
    parts.append("\n\n\n  THE END\n\n\n\n*** END OF THE PROJECT GUTENBERG EBOOK THE SONNETS ***\n\nSection 1. I\n")
    return "".join(parts).replace("\n", "\r\n")  # Gutenberg files have CRLF line ends


def expected_sonnet(n: int) -> str:
    lines = [line.replace("\u2018", "'").replace("\u2019", "'").replace("\u2014", "--") for line in sonnet_lines(n)]
    return "\n".join(lines[:-2] + ["  " + line for line in lines[-2:]])


TREES = {  # split -> PTB trees, one per line
    "train": ["(3 (2 (2 The) (2 Rock)) (4 (3 (2 is) (4 great)) (2 .)))",
              "(1 (2 -LRB-) (1 (1 Singer\\/composer) (2 -RRB-)))",
              "(0 (0 (0 Bad) (2 ``)) (2 ''))"],
    "dev": ["(4 (4 Lovely) (2 .))", "(2 (2 It) (2 is))"],
    "test": ["(3 (2 Effective) (1 (1 but) (2 too-tepid)))"],
}
QUORA_TSV = (
    "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    + "".join(f"{i}\t{2 * i}\t{2 * i + 1}\tQuestion {i} A?\tQuestion {i} B?\t{i % 3 == 0:d}\n" for i in range(20))
    + '20\t40\t41\t"A ""quoted""\nquestion on two lines?"\tPlain?\t1\n'
    + "21\t42\t43\tHas an empty partner?\t\t0\n"  # skipped: empty question
    + "22\t44\t45\tBad label?\tBad label!\t2\n"  # skipped: label not 0/1
)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over tmp_path/www holding the three source files; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "pg1041.txt").write_bytes(gutenberg_text().encode("utf-8"))
    with zipfile.ZipFile(www / "trees.zip", "w") as archive:
        for split, trees in TREES.items():
            archive.writestr(f"trees/{split}.txt", "\n".join(trees) + "\n")
    (www / "quora.tsv").write_text(QUORA_TSV, encoding="utf-8")
    (www / "not-a-zip.zip").write_text("<html>moved</html>")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def urls_at(base: str) -> dict[str, str]:
    return {"sonnets": f"{base}/pg1041.txt", "sst": f"{base}/trees.zip", "quora": f"{base}/quora.tsv"}


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/pg1041.txt"  # nothing listens there any more: connection refused


# ---------------------------------------------------------------------------------------------- parsers

def roman_value(text: str) -> int:
    """Independent reference: add each letter, subtract it when a larger one follows."""
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}
    return sum(-values[a] if values[a] < values[b] else values[a] for a, b in zip(text, text[1:] + "I")) \
        if text else 0


def test_to_roman():
    numerals = [to_roman(n) for n in range(1, 155)]
    assert [roman_value(r) for r in numerals] == list(range(1, 155))
    assert numerals[:4] == ["I", "II", "III", "IV"] and numerals[98] == "XCIX" and numerals[153] == "CLIV"
    assert all(re.fullmatch(r"C{0,3}(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})", r) for r in numerals)  # canonical form


def test_parse_tree():
    tree = parse_tree(TREES["train"][0])
    assert tree.label == 3 and [c.label for c in tree.children] == [2, 4]
    assert tree.leaves() == ["The", "Rock", "is", "great", "."]
    assert parse_tree("(1 (2 -LRB-) (1 (1 Singer\\/composer) (2 -RRB-)))").leaves() == \
        ["-LRB-", "Singer\\/composer", "-RRB-"]
    assert parse_tree("(4 word)").word == "word"
    for bad in ["(3 (2 a)", "(3 (2 a)))", "(x a)", "(3 )", "3 a", ""]:
        with pytest.raises(ValueError):
            parse_tree(bad)


def test_parse_gutenberg_sonnets():
    sonnets = parse_gutenberg_sonnets(gutenberg_text())
    assert len(sonnets) == 154
    assert sonnets == [expected_sonnet(n) for n in range(1, 155)]  # dedented, couplet indented by 2, ASCII
    assert "END" not in sonnets[-1]  # sonnet 154 stops at two blank lines; the license is after the END marker
    assert parse_gutenberg_sonnets(gutenberg_text(3), count=3) == sonnets[:3]
    with pytest.raises(DataError, match="START OF"):
        parse_gutenberg_sonnets("no markers here")
    with pytest.raises(DataError, match=r"found numerals I\.\.II only; expected 3"):
        parse_gutenberg_sonnets(gutenberg_text(2), count=3)
    short = re.sub(r"  Line [123] of sonnet 2,[^\r]*\r\n", "", gutenberg_text(3))  # sonnet 2 loses 3 lines
    with pytest.raises(DataError, match=r"sonnet II \(2\) has 11 lines; expected 12 to 15"):
        parse_gutenberg_sonnets(short, count=3)


# ---------------------------------------------------------------------------------------------- fetch_data

def test_fetch_all_sources(tmp_path, server):
    data = tmp_path / "data"
    written = fetch_data(data, urls=urls_at(server))
    assert sorted(p.name for p in written) == sorted(OUTPUTS["sonnets"] + OUTPUTS["sst"] + OUTPUTS["quora"])
    assert sorted(p.name for p in (data / "raw").iterdir()) == ["pg1041.txt", "quora_duplicate_questions.tsv",
                                                                "trainDevTestTrees_PTB.zip"]  # no .part left

    # sonnets: 1-131 train, 132-143 dev (prompts = first 3 lines), 144-154 test prompts
    assert read_sonnets(data / "sonnets.txt") == [expected_sonnet(n) for n in range(1, 132)]
    assert sonnet_numbers(data / "TRUE_sonnets_held_out_dev.txt") == list(range(132, 144))
    assert read_sonnets(data / "TRUE_sonnets_held_out_dev.txt") == [expected_sonnet(n) for n in range(132, 144)]
    assert read_sonnets(data / "sonnets_held_out_dev.txt") == \
        ["\n".join(expected_sonnet(n).split("\n")[:3]) for n in range(132, 144)]
    assert sonnet_numbers(data / "sonnets_held_out.txt") == list(range(144, 155))

    # SST: leaves joined after one leading space, root label, course layouts, 25-hex ids
    train = read_sentiment(data / "ids-sst-train.csv", labeled=True, num_labels=5, lowercase=False)
    assert [(e.sentence, e.label) for e in train] == [("The Rock is great .", 3),
                                                      ("-LRB- Singer\\/composer -RRB-", 1), ("Bad `` ''", 0)]
    lines = (data / "ids-sst-train.csv").read_text().split("\n")
    assert lines[0] == "\tid\tsentence\tsentiment" and lines[1].startswith("0\t") and "\t The Rock" in lines[1]
    assert all(re.fullmatch(r"[0-9a-f]{25}", e.id) for e in train)
    assert len(read_sentiment(data / "ids-sst-dev.csv", labeled=True, num_labels=5)) == 2
    test = read_sentiment(data / "ids-sst-test-student.csv", labeled=False)
    assert [e.sentence for e in test] == ["effective but too-tepid"]
    assert (data / "ids-sst-test-student.csv").read_text().split("\n")[:2] == \
        ["0\t\tid\tsentence", f"1\t0.0\t{test[0].id}\t Effective but too-tepid"]
    ids = [e.id for name in ("train", "dev") for e in read_sentiment(data / f"ids-sst-{name}.csv", True)] + [test[0].id]
    assert len(set(ids)) == 6

    # Quora: 21 good pairs of 23, split 70/10/20 (15 / 2 / 4), labels 0.0/1.0, GPT-project layout
    splits = {s: read_quora(data / f"quora-{s}.csv", labeled=s != "test-student", preprocess=False)
              for s in ("train", "dev", "test-student")}
    assert [len(v) for v in splits.values()] == [15, 2, 4]
    pair_ids = [e.id.split(" ")[0] for v in splits.values() for e in v]
    assert sorted(pair_ids, key=int) == [str(i) for i in range(21)]
    assert all(re.fullmatch(r"\d+ [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", e.id)
               for v in splits.values() for e in v)
    labeled = {e.id.split(" ")[0]: e for s in ("train", "dev") for e in splits[s]}
    assert all(e.label == (int(i) % 3 == 0 or i == "20") for i, e in labeled.items())
    everything = {e.id.split(" ")[0]: e for v in splits.values() for e in v}
    assert everything["20"].sentence1 == 'A "quoted" question on two lines?'  # line break -> one space
    header, first = (data / "quora-train.csv").read_text().split("\n")[:2]
    assert header == "id\tsentence1\tsentence2\tis_duplicate" and first.rsplit("\t", 1)[1] in ("0.0", "1.0")
    assert (data / "quora-test-student.csv").read_text().split("\n")[0] == "id\tsentence1\tsentence2"
    assert Counter(e.label for e in splits["train"]) == Counter(labeled[e.id.split(" ")[0]].label
                                                                for e in splits["train"])


def test_fetch_is_deterministic_and_reuses_the_raw_files(tmp_path, server):
    first, second = tmp_path / "a", tmp_path / "b"
    fetch_data(first, urls=urls_at(server))
    fetch_data(second, urls=urls_at(server))
    for name in OUTPUTS["sonnets"] + OUTPUTS["sst"] + OUTPUTS["quora"]:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    offline = {k: closed_port_url() for k in ("sonnets", "sst", "quora")}
    assert fetch_data(first, urls=offline) == []  # every file present: nothing to do, no network
    (first / "quora-dev.csv").unlink()
    rebuilt = fetch_data(first, what=("quora",), urls=offline)  # rebuilt from raw/, still no network
    assert (first / "quora-dev.csv").read_bytes() == (second / "quora-dev.csv").read_bytes()
    assert sorted(p.name for p in rebuilt) == sorted(OUTPUTS["quora"])


def test_offline_message_names_url_files_format_and_place(tmp_path):
    url = closed_port_url()
    with pytest.raises(FetchError) as info:
        fetch_data(tmp_path / "data", what=("sonnets", "cfimdb"), urls={"sonnets": url}, timeout=5)
    message = str(info.value)
    assert f"sonnets: could not download {url}" in message
    assert str(tmp_path / "data" / "raw" / "pg1041.txt") in message  # where to put a hand download
    for name in OUTPUTS["sonnets"] + OUTPUTS["cfimdb"]:
        assert str(tmp_path / "data" / name) in message
    assert "its number alone on a line" in message  # the expected format
    assert "cfimdb: there is no public download" in message and "cs224n_gpt" in message
    # the re-run hint keeps this run's data directory, and the way out offline is named
    assert f"python run.py download data --data-dir {tmp_path / 'data'} --only sonnets" in message
    assert message.endswith(OFFLINE) and "--data-dir FOLDER (or set $MINIGPT_DATA=FOLDER)" in OFFLINE
    assert not list((tmp_path / "data").rglob("*.part"))
    assert not (tmp_path / "data" / "sonnets.txt").exists()


def test_a_wrong_download_is_reported(tmp_path, server):
    with pytest.raises(FetchError, match=r"(?s)sst: .*trainDevTestTrees_PTB\.zip is not in the expected form.*Delete"):
        fetch_data(tmp_path, what=("sst",), urls={"sst": f"{server}/not-a-zip.zip"})
    with pytest.raises(FetchError, match=r"(?s)could not download .*/missing\.txt \(HTTP Error 404"):
        fetch_data(tmp_path, what=("sonnets",), urls={"sonnets": f"{server}/missing.txt"})
    with pytest.raises(ValueError, match="unknown data source 'imdb'"):
        fetch_data(tmp_path, what=("imdb",))
