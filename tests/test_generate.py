"""`python run.py generate` (cli/generate.py) on a tiny saved model: the text is greedy's, and --explicit-math (the
plain equations, model.set_fused(False)) writes the same text."""
from __future__ import annotations

import pytest
import torch

import run
from decoding import greedy
from minigpt import GPT2, GPT2Config, Tokenizer, save_pretrained
from minigpt.tokenizer import write_vocab_files

from ._margins import MIN_MARGIN, greedy_margin

PROMPT = "the day"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    tok = write_vocab_files(root / "tok", [("t", "h"), ("th", "e")])
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=Tokenizer.from_dir(tok).vocab_size, n_layer=2, n_head=2, n_embd=64,
                            n_positions=128))
    return save_pretrained(model, root / "model", tokenizer_dir=tok)


def test_generate_writes_greedy_text_with_and_without_explicit_math(model_dir, capsys):
    from minigpt import load_pretrained

    tokenizer = Tokenizer.from_dir(model_dir)
    model = load_pretrained(str(model_dir)).eval()
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    expected = greedy(model, ids, 12)
    assert greedy_margin(model, expected, ids.size(1)) > MIN_MARGIN  # no near-tie a kernel change could flip
    texts = []
    for extra in ([], ["--explicit-math"]):
        assert run.main(["generate", "--model", str(model_dir), "--prompt", PROMPT, "--decoder", "greedy",
                         "--max-new-tokens", "12", "--device", "cpu", *extra]) == 0
        texts.append(capsys.readouterr().out.rstrip("\n"))
    assert texts[0] == tokenizer.decode(expected[0].tolist())
    assert texts[1] == texts[0]


def test_contrastive_k_reaches_the_decoder(model_dir, capsys):
    from minigpt import load_pretrained

    model = load_pretrained(str(model_dir)).eval()
    ids = torch.tensor([Tokenizer.from_dir(model_dir).encode(PROMPT)])
    assert greedy_margin(model, greedy(model, ids, 6), ids.size(1)) > MIN_MARGIN  # the two paths cannot split on a tie
    argv = ["generate", "--model", str(model_dir), "--prompt", PROMPT, "--decoder", "contrastive",
            "--max-new-tokens", "6", "--device", "cpu"]
    assert run.main([*argv, "--contrastive-k", "1"]) == 0  # one candidate: contrastive search is greedy
    one = capsys.readouterr().out
    assert run.main([*argv, "--decoder", "greedy"]) == 0
    assert one == capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        run.main([*argv, "--contrastive-k", "0"])
    assert refused.value.code == 1 and "--contrastive-k: must be >= 1" in capsys.readouterr().err


def test_several_prompts_decode_as_one_batch_each_as_it_would_alone(model_dir, capsys):
    """--prompt given twice: one left-padded batch, each continuation under its '--- prompt N' line, equal to the
    text that prompt gets alone (greedy, prompts of different lengths, so the shorter one is padded)."""
    from minigpt import load_pretrained

    model = load_pretrained(str(model_dir)).eval()
    tokenizer = Tokenizer.from_dir(model_dir)
    prompts = [PROMPT, "the day the"]
    argv = ["generate", "--model", str(model_dir), "--decoder", "greedy", "--max-new-tokens", "8", "--device", "cpu"]
    alone = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer.encode(prompt)])
        assert greedy_margin(model, greedy(model, ids, 8), ids.size(1)) > MIN_MARGIN  # no near-tie to flip
        assert run.main([*argv, "--prompt", prompt]) == 0
        alone.append(capsys.readouterr().out.rstrip("\n"))
    assert len(tokenizer.encode(prompts[0])) < len(tokenizer.encode(prompts[1]))
    assert run.main([*argv, "--prompt", prompts[0], "--prompt", prompts[1]]) == 0
    assert capsys.readouterr().out.rstrip("\n") == f"--- prompt 1\n{alone[0]}\n--- prompt 2\n{alone[1]}"
    assert run.main([*argv, "--prompt", prompts[0], "--prompt", ""]) == 1
    assert "--prompt 2 is empty" in capsys.readouterr().err
