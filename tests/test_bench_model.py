"""`python run.py bench model` (bench/model.py) on a tiny config with one repeat, so the command cannot rot."""
import re

import pytest

pytest.importorskip("transformers")

import run  # noqa: E402
from bench.model import measure  # noqa: E402

TINY = "n_layer=2,n_head=2,n_embd=64,vocab_size=300,n_positions=128"
ARGS = ["bench", "model", "--config", TINY, "--repeats", "1", "--batch-size", "2", "--seq-len", "16", "--device", "cpu"]


def test_measure_times_both_sides_on_the_same_weights():
    result = measure(TINY, 2, 16, repeats=1)
    assert result["logit_difference"] < 1e-5
    for mode in ("train", "inference"):
        ours, reference = result[mode]
        assert ours > 0 and reference > 0


def table_rows(out: str) -> dict[str, list[str]]:
    return {m.group(1): m.group(2).split() for m in re.finditer(r"^  (train|inference) +(.*)$", out, re.M)}


def test_one_process_prints_tokens_per_second_ratio_and_memory(capsys):
    assert run.main(ARGS) == 0
    out = capsys.readouterr().out
    assert "max |logit difference|" in out and "peak MiB" in out
    rows = re.findall(r"^  (train|inference) +([\d.]+) +([\d.]+) +([\d.]+)x$", out, re.M)
    assert [r[0] for r in rows] == ["train", "inference"] * 2  # tokens/s rows, then peak-memory rows
    for _mode, ours, reference, ratio in rows[:2]:
        assert float(ratio) == pytest.approx(float(ours) / float(reference), abs=0.01)


def test_several_processes_give_the_median_ratio_and_its_range(capsys):
    assert run.main([*ARGS, "--processes", "2", "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert "ratio over 2 processes: min - max" in out and "peak MiB" not in out
    rows = table_rows(out)
    assert list(rows) == ["train", "inference"]
    for _mode, cells in rows.items():  # ours, reference, median ratio, min, "-", max
        low, high = float(cells[3]), float(cells[5])
        median = float(cells[2].rstrip("x"))
        assert low <= high and median == pytest.approx((low + high) / 2, abs=0.011)  # each printed to 2 decimals


def test_bf16_autocast_on_cpu_runs_and_a_torch_without_it_gets_one_line(capsys, monkeypatch):
    """--dtype bf16 on CPU: the table (every torch this project allows has CPU bf16 autocast); where autocast
    fails, one line naming --dtype."""
    assert run.main([*ARGS, "--dtype", "bf16", "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert "bf16 on cpu" in out and list(table_rows(out)) == ["train", "inference"]

    def no_bf16(*args, **kwargs):
        raise RuntimeError("CPU autocast does not support bfloat16 here")

    monkeypatch.setattr("torch.autocast", no_bf16)
    assert run.main([*ARGS, "--dtype", "bf16", "--no-memory"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --dtype bf16") and len(err.strip().splitlines()) == 1


def test_bad_arguments_are_clear_errors(capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert run.main([*ARGS[:-2], "--device", "cuda"]) == 1
    assert capsys.readouterr().err.strip() == \
        "error: --device cuda: no CUDA GPU is visible to this process (use --device cpu)"
    for flag, value, message in (("--processes", "0", "must be >= 1"), ("--config", "gpt3", "not a preset"),
                                 ("--seq-len", "1", "must be >= 2"), ("--threads", "-1", "must be >= 0")):
        with pytest.raises(SystemExit) as refused:  # when the command line is parsed, in one line
            run.main([*ARGS, flag, value])
        err = capsys.readouterr().err
        assert refused.value.code == 1 and f"argument {flag}: " in err and message in err, err


def test_explicit_math_measures_the_plain_equations_on_the_same_weights():
    """--explicit-math: our side runs the plain equations (and the one-parameter-at-a-time AdamW); the logits
    still match the reference's."""
    result = measure(TINY, 2, 16, repeats=1, explicit_math=True)
    assert result["logit_difference"] < 1e-4
    assert all(ours > 0 for ours, _ in (result["train"], result["inference"]))
    assert run.main([*ARGS, "--explicit-math", "--no-memory"]) == 0
