"""`python run.py bench decoding` (bench/decoding.py) on a tiny config with one repeat, so the command cannot rot."""
import re

import pytest

pytest.importorskip("transformers")
pytest.importorskip("sacrebleu")

import run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # --threads 1 sets torch's count: restored after each test

TINY = "n_layer=2,n_head=2,n_embd=64,vocab_size=300,n_positions=128"
ARGS = ["bench", "decoding", "--config", TINY, "--prompt-tokens", "6", "--max-new-tokens", "5", "--repeats", "1",
        "--warmup-runs", "0", "--chrf-pairs", "20", "--mbr-candidates", "4", "--batch-size", "3", "--threads", "1",
        "--device", "cpu"]
ROW = r"^  {name} +([\d.]+) +([\d.]+) +([\d.]+)x  (yes|NO)"


def test_every_decoder_one_prompt_and_batched_then_chrf_and_mbr(capsys):
    code = run.main(ARGS)
    out = capsys.readouterr().out
    for name in ("greedy", r"top-p \(0\.9, T=1\.2\)", r"contrastive \(k=4\)", r"beam \(4 beams\)"):
        rows = re.findall(ROW.format(name=name), out, re.M)
        assert len(rows) == 2, name  # one prompt, then the batch of 3
        for ours, reference, ratio, _ in rows:
            assert float(ratio) == pytest.approx(float(ours) / float(reference), abs=0.01)
    assert "batched: 3 prompts of" in out and "memory bound:" in out
    assert re.search(r"^  corpus chrF x20 .* yes \(", out, re.M)  # chrF equals sacrebleu's: string arithmetic
    assert re.search(r"^  MBR x4 .* yes \(index", out, re.M)
    # the exit status says whether anything differed from the reference, and the table shows what
    assert (code == 1) == (" NO" in out) == ("MISMATCH" in out)


def test_only_a_chosen_decoder_runs(capsys):
    code = run.main([*ARGS, "--decoders", "greedy", "--only", "decoders", "--batch-size", "0"])
    out = capsys.readouterr().out
    assert re.search(ROW.format(name="greedy"), out, re.M) and "beam" not in out and "chrF" not in out
    assert (code == 1) == (" NO" in out)


@pytest.mark.parametrize("flag, value, message", [
    ("--decoders", "greedy,nucleus", "unknown decoder(s) 'nucleus'"),
    ("--repeats", "0", "must be >= 1"),
    ("--config", "gpt3", "not a preset"),
    ("--batch-size", "-1", "must be >= 0"),
])
def test_bad_flags_are_one_line_before_anything_runs(capsys, flag, value, message):
    with pytest.raises(SystemExit) as refused:
        run.main([*ARGS, flag, value])
    err = capsys.readouterr().err
    assert refused.value.code == 1 and f"argument {flag}: " in err and message in err
    assert len(err.strip().splitlines()) == 1
