"""`bench train --gradient-checkpointing / --compile` and `bench decoding --compile` on tiny configs: each flag's row
is printed beside the plain run's, and the switch was really on in the model that was timed.

The --compile tests are marked `compile` (inductor builds C++ kernels: tens of seconds on a cold cache)."""
import argparse
import re

import pytest
import torch

pytest.importorskip("peft")

import minigpt.model  # noqa: E402
import run  # noqa: E402
from bench import train as bench_train  # noqa: E402

TINY = "n_layer=2,n_head=2,n_embd=64,vocab_size=300,n_positions=128"
# activations dominate: 6 blocks of (8, 128, 64) activations against a 300-token vocabulary
DEEP = "n_layer=6,n_head=2,n_embd=64,vocab_size=300,n_positions=128"


def parse(*extra: str) -> bench_train.Settings:
    parser = argparse.ArgumentParser()
    bench_train.add_arguments(parser)
    args = parser.parse_args(["--config", TINY, "--repeats", "1", "--batch-size", "2", "--seq-len", "16",
                              "--matmul-size", "64", "--no-memory", "--device", "cpu", "--methods", "full", *extra])
    return bench_train.settings_from_args(args)


def check_switch_rows(results: dict, switch: str, out: str) -> dict:
    rows = results["full"]["switches"]
    assert list(rows) == ["plain", switch]
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["first_step_s"] > 0 and row["peak_mib"] is None  # --no-memory
    assert re.search(r"^  full +[\d.]+ +1\.00x", out, re.M)
    assert re.search(rf"^  full \+ {switch} +[\d.]+ +[\d.]+x +[\d.]+ +- +-$", out, re.M)
    return rows


def test_gradient_checkpointing_row_beside_the_plain_run(monkeypatch, capsys):
    calls = []
    recomputed = minigpt.model.recomputed

    def counting(block, *args):
        calls.append(block)
        return recomputed(block, *args)

    monkeypatch.setattr(minigpt.model, "recomputed", counting)  # run_blocks looks it up at each call
    results = bench_train.run_benchmark(parse("--gradient-checkpointing"))
    check_switch_rows(results, "checkpointing", capsys.readouterr().out)
    # only the checkpointing variant recomputes: its 2 blocks, in the first step and the warm-up and timed rounds
    assert len(calls) == 2 * 3


def test_checkpointing_halves_the_peak_memory_where_activations_dominate():
    settings = bench_train.Settings(config=DEEP, batch_size=8, seq_len=128)
    peaks = bench_train.switch_peaks(settings, "full", ["plain", "checkpointing"])
    assert peaks["plain"] > 20  # MiB of activations and gradients: a measurement, not noise
    assert peaks["checkpointing"] < 0.6 * peaks["plain"]


def test_the_flags_reach_the_settings():
    settings = parse("--gradient-checkpointing", "--compile")
    assert settings.gradient_checkpointing and settings.compile
    assert not parse().gradient_checkpointing and not parse().compile


@pytest.mark.compile
def test_compile_row_beside_the_plain_run(capsys):
    torch._dynamo.reset()
    results = bench_train.run_benchmark(parse("--compile"))
    check_switch_rows(results, "compile", capsys.readouterr().out)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the compiled variant really compiled


@pytest.mark.compile
@pytest.mark.usefixtures("one_thread")  # --threads 1 sets torch's count: restored after the test
def test_bench_decoding_compile_reports_compiled_greedy_and_the_compile_time(capsys):
    pytest.importorskip("sacrebleu")
    torch._dynamo.reset()
    code = run.main(["bench", "decoding", "--config", TINY, "--prompt-tokens", "6", "--max-new-tokens", "5",
                     "--repeats", "1", "--warmup-runs", "0", "--decoders", "greedy", "--only", "decoders",
                     "--batch-size", "0", "--threads", "1", "--device", "cpu", "--compile"])
    out = capsys.readouterr().out
    row = re.search(r"^  greedy \(compiled\) +([\d.]+) +([\d.]+) +([\d.]+)x  (yes|NO)$", out, re.M)
    assert row, out
    compiled, eager, ratio, same = row.groups()
    assert float(ratio) == pytest.approx(float(compiled) / float(eager), abs=0.01)
    assert re.search(r"^  compile time: -?[\d.]+ s \(first compiled call [\d.]+ s", out, re.M)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # the prefill and the one-token step
    assert (code == 1) == (" NO" in out)
