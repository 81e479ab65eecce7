"""`python run.py bench train` (bench/train.py) on a tiny config with one repeat, so the command cannot rot."""
import argparse

import pytest

pytest.importorskip("peft")

from bench import train as bench_train  # noqa: E402
from minigpt import GPT2  # noqa: E402
from minigpt.lora import inject_adapters  # noqa: E402

TINY = "n_layer=2,n_head=2,n_embd=64,vocab_size=300,n_positions=128"


def parse(*extra: str) -> bench_train.Settings:
    parser = argparse.ArgumentParser()
    bench_train.add_arguments(parser)
    args = parser.parse_args(["--config", TINY, "--repeats", "1", "--batch-size", "2", "--seq-len", "16",
                              "--matmul-size", "64", "--no-memory", "--device", "cpu", *extra])
    return bench_train.settings_from_args(args)


def check_rows(results: dict, methods) -> None:
    adamw = results.pop("adamw_step_s")
    assert {"ours", "torch fused", "torch foreach"} <= set(adamw) and min(adamw.values()) > 0
    assert list(results) == list(methods)
    for method, row in results.items():
        for side in ("ours", "transformers"):
            assert row["tokens_per_s"][side] > 0 and row["mfu"][side] > 0
        assert row["ratio"] == pytest.approx(row["tokens_per_s"]["ours"] / row["tokens_per_s"]["transformers"])
        if method != "prefix":  # both sides really start from the same weights (fresh adapters change nothing)
            assert row["max_logit_difference"] < 1e-5, method


def test_lm_benchmark_runs_every_method(capsys):
    results = bench_train.run_benchmark(parse())
    check_rows(results, bench_train.METHODS)
    out = capsys.readouterr().out
    assert "fp32 matmul peak" in out and all(f"  {m} " in out for m in bench_train.METHODS)


def test_sentiment_benchmark_runs_in_bf16(capsys):
    results = bench_train.run_benchmark(parse("--task", "sentiment", "--dtype", "bf16"))  # CPU bf16 autocast
    check_rows(results, ["full"])
    out = capsys.readouterr().out
    assert "bf16 on cpu" in out and "AdamW step over" in out and "torch foreach" in out


def test_cuda_without_a_gpu_is_one_line(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(RuntimeError, match="^--device cuda: no CUDA GPU is visible"):
        bench_train.run_benchmark(parse("--device", "cuda"))


def test_peak_memory_children_report_a_number_for_each_side():
    mem = bench_train.peak_memory("lm", "lora", TINY, 2, 16)
    assert list(mem) == ["ours", "transformers"]
    assert all(m["peak"] > 0 and m["above_model"] >= 0 for m in mem.values())
    assert mem["ours"]["peak"] < 4096  # MiB: a tiny model in a process with torch imported, not a huge number


def test_flops_per_token_counts_the_real_models_parameters():
    """The formula's N and N_ad equal the matmul weights of a real GPT2 and of the injected adapters."""
    cfg = bench_train.parse_config(TINY)
    T = 16
    model = GPT2(cfg)
    # every 2-D weight except the position table is a matmul weight; wte is the tied LM head
    n = sum(p.numel() for name, p in model.named_parameters() if p.ndim == 2 and name != "wpe.weight")
    inject_adapters(model, "lora", targets=bench_train.TARGETS, **bench_train.LORA)
    n_adapter = sum(p.numel() for p in model.parameters() if p.requires_grad)
    attention = 12 * cfg.n_layer * T * cfg.n_embd
    assert bench_train.flops_per_token("full", cfg, T) == 6 * n + attention
    assert bench_train.flops_per_token("lora", cfg, T) == 4 * n + 6 * n_adapter + attention
    prefix_attention = 12 * cfg.n_layer * (T + bench_train.PREFIX["n_prefix"]) * cfg.n_embd
    assert bench_train.flops_per_token("prefix", cfg, T) == 4 * n + prefix_attention


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="not a preset"):
        bench_train.parse_config("gpt3")
    with pytest.raises(ValueError, match="n_embd"):
        bench_train.parse_config("n_layer=2,n_head=3,n_embd=64")
    with pytest.raises(ValueError, match="'n_layer=two'"):
        bench_train.parse_config("n_layer=two")
    with pytest.raises(ValueError, match="unexpected keyword"):
        bench_train.parse_config("n_layers=2")
    with pytest.raises(SystemExit, match="full fine-tuning only"):
        bench_train.run_benchmark(parse("--task", "sentiment", "--methods", "lora"))


def test_explicit_math_runs_the_full_method():
    results = bench_train.run_benchmark(parse("--methods", "full", "--explicit-math"))
    check_rows(results, ["full"])
