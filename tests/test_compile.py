"""--compile (minigpt/compiling.py): compiled training gives eager's losses, compiled decoding eager's tokens, and a
machine where inductor cannot build says so in one line.

The tests that compile are marked `compile` (inductor builds C++ kernels: tens of seconds on a cold cache, a few
once torch's compile cache in /tmp is warm); `-m 'not compile'` leaves them out."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import run
from decoding import beam_search, contrastive_search, greedy
from minigpt import GPT2, GPT2Config, Tokenizer, compiling, save_pretrained
from minigpt.compiling import compile_model
from minigpt.tokenizer import write_vocab_files
from tests._margins import MIN_MARGIN, assert_stable, greedy_margin
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def lm_loss(model, batch):
    ids = batch["input_ids"]
    logits = model(ids).logits  # (B, T, V)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def train_losses(tmp_path, name: str, compile: bool) -> list[float]:
    """Three trainer steps of a tiny GPT-2 without dropout (compiled dropout draws other masks than eager's)."""
    from training.trainer import TrainConfig, seed_everything, train

    seed_everything(0)
    model = GPT2(tiny_config(dropout=0.0))
    data = [torch.randint(0, 300, (16,), generator=torch.Generator().manual_seed(i)) for i in range(12)]
    cfg = TrainConfig(out_dir=str(tmp_path / name), epochs=1, batch_size=4, lr=1e-3, keep_best=0, device="cpu",
                      compile=compile)
    result = train(model, data, lambda rows: {"input_ids": torch.stack(rows)}, lm_loss, cfg)
    assert list(model.state_dict()) == list(GPT2(tiny_config()).state_dict())  # compiled in place: the same keys
    return [s["loss"] for s in result.step_log]


@pytest.mark.compile
def test_compiled_training_gives_eager_losses(tmp_path):
    eager = train_losses(tmp_path, "eager", compile=False)
    compiled = train_losses(tmp_path, "compiled", compile=True)
    assert len(eager) == 3 and eager[0] != eager[-1]  # the weights moved: later losses test the compiled backward
    assert compiled == pytest.approx(eager, rel=0, abs=1e-4)


@pytest.mark.compile
def test_compiled_decoders_give_eager_tokens():
    torch.manual_seed(0)
    model = GPT2(tiny_config(n_positions=64)).to(CPU).eval()
    ids = torch.randint(0, 300, (1, 6), generator=torch.Generator().manual_seed(3))
    runs = {"greedy": lambda: greedy(model, ids, 12),
            "beam": lambda: beam_search(model, ids, 12, num_beams=3),
            "contrastive": lambda: contrastive_search(model, ids, 12, top_k=3, alpha=0.6)}
    expected = {name: assert_stable(fn, model) for name, fn in runs.items()}  # no near-tie on eager's paths
    assert greedy_margin(model, expected["greedy"], ids.size(1)) > MIN_MARGIN
    compile_model(model, CPU, dynamic=True)
    for name, fn in runs.items():
        assert torch.equal(fn(), expected[name]), name


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("compile")
    tok = write_vocab_files(root / "tok", [("t", "h"), ("th", "e")])
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=Tokenizer.from_dir(tok).vocab_size, n_layer=2, n_head=2, n_embd=64,
                            n_positions=64))
    return save_pretrained(model, root / "model", tokenizer_dir=tok)


@pytest.mark.compile
def test_generate_compile_writes_eager_text(model_dir, capsys):
    command = ["generate", "--model", str(model_dir), "--prompt", "the day", "--decoder", "greedy",
               "--max-new-tokens", "10", "--device", "cpu"]
    texts = []
    for extra in ([], ["--compile"]):
        assert run.main(command + extra) == 0
        texts.append(capsys.readouterr().out)
    assert texts[1] == texts[0] and len(texts[0]) > len("the day")


def test_no_compiler_is_one_line_naming_the_cause(monkeypatch, model_dir, capsys, tmp_path):
    monkeypatch.setattr(compiling, "cpp_compiler", lambda: None)
    message = "--compile: inductor needs a C++ compiler on a CPU and found none (install g++ or set CXX)"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        compile_model(GPT2(tiny_config()), CPU)
    assert run.main(["generate", "--model", str(model_dir), "--prompt", "the day", "--device", "cpu",
                     "--compile"]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_the_compiler_is_found_as_inductor_finds_it(monkeypatch, tmp_path):
    fake = tmp_path / "my-c++"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    assert compiling.cpp_compiler() == str(fake)
    monkeypatch.setenv("CXX", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++ either
    assert compiling.cpp_compiler() is None
