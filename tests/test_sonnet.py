"""`run.py sonnet` end to end on tiny models: fixture files the test writes, and the real data when available."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import run
from decoding.config import DecodeConfig
from tasks.data import read_sonnets
from tests._fixtures import TINY, sonnet_args, sonnet_file, write_fixture
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models train fastest on one thread (tests/conftest.py)
def sacrebleu_chrf(generated: Path, true: Path) -> float:
    from sacrebleu.metrics import CHRF

    hyp, ref = read_sonnets(generated), read_sonnets(true)
    n = min(len(hyp), len(ref))
    return CHRF().corpus_score(hyp[:n], [ref[:n]]).score


def test_sonnet_end_to_end_on_fixtures(tmp_path, tiny_tok):
    data = write_fixture(tmp_path / "data")
    out = tmp_path / "out"
    assert run.main(sonnet_args(data, out, tiny_tok, "--epochs", "2")) == 0
    dev = read_sonnets(out / "generated_sonnets_dev.txt")
    test = read_sonnets(out / "generated_sonnets.txt")
    assert len(dev) == 4 and len(test) == 3
    prompts = read_sonnets(data / "sonnets_held_out_dev.txt")
    assert all(g.startswith(p) for g, p in zip(dev, prompts))  # generations keep their 3 prompt lines
    assert all(len(g.split("\n")) <= 14 for g in dev)
    result = json.loads((out / "result.json").read_text())
    assert result["dev_chrf"] == pytest.approx(sacrebleu_chrf(out / "generated_sonnets_dev.txt",
                                                              data / "TRUE_sonnets_held_out_dev.txt"), abs=1e-9)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and all("dev_chrf" in x for x in lines)
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "vocab.json").is_file()
    # the exported model is a model directory: decoding it with --epochs 0 reproduces the dev chrF
    again = tmp_path / "again"
    assert run.main(["sonnet", "--data-dir", str(data), "--out-dir", str(again), "--model", str(out / "model"),
                     "--decoder", "greedy", "--max-new-tokens", "24", "--epochs", "0", "--device", "cpu"]) == 0
    assert json.loads((again / "result.json").read_text())["dev_chrf"] == pytest.approx(result["dev_chrf"])


def test_sonnet_on_the_real_files_with_the_real_tokenizer(tmp_path):
    data, gpt2 = shared_path("data"), shared_path("gpt2")
    out = tmp_path / "out"
    args = sonnet_args(data, out, gpt2, "--epochs", "1", "--max-steps", "3", "--max-new-tokens", "8")
    assert run.main(args) == 0
    assert len(read_sonnets(out / "generated_sonnets_dev.txt")) == 12
    assert len(read_sonnets(out / "generated_sonnets.txt")) == 12
    result = json.loads((out / "result.json").read_text())
    assert result["dev_chrf"] == pytest.approx(
        sacrebleu_chrf(out / "generated_sonnets_dev.txt", data / "TRUE_sonnets_held_out_dev.txt"), abs=1e-9)


def test_training_loss_falls(tmp_path, tiny_tok):
    """Learning, not just running: 40 steps on the fixture sonnets take the loss down by more than 2 nats."""
    from minigpt import GPT2, GPT2Config, Tokenizer
    from tasks import sonnet
    from training.trainer import TrainConfig, seed_everything, train

    data = write_fixture(tmp_path / "data", n_train=32)
    tok = Tokenizer.from_dir(tiny_tok)
    seed_everything(0)
    model = GPT2(GPT2Config(vocab_size=tok.vocab_size, n_positions=256, n_embd=64, n_layer=2, n_head=2))
    texts = read_sonnets(data / "sonnets.txt")
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), epochs=5, batch_size=4, lr=3e-3, warmup=0.1, keep_best=0,
                      device="cpu")
    result = train(model, texts, sonnet.make_collate(tok, 256), sonnet.lm_loss, cfg)
    losses = [s["loss"] for s in result.step_log]
    assert len(losses) == 40
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert first - last > 2.0, (first, last)


@pytest.mark.parametrize("method", ["lora", "dora", "prefix"])
def test_parameter_efficient_methods_run_and_export(tmp_path, tiny_tok, method):
    data = write_fixture(tmp_path / "data")
    out = tmp_path / "out"
    assert run.main(sonnet_args(data, out, tiny_tok, "--finetune", method, "--epochs", "1", "--max-steps", "2",
                                "--lora-r", "4", "--prefix-length", "3", "--prefix-hidden", "16",
                                "--skip-test")) == 0
    exported = out / "model"
    if method == "prefix":
        assert (exported / "prefix.safetensors").is_file()
    else:
        assert (exported / "adapter.safetensors").is_file() and (exported / "model.safetensors").is_file()


def test_explicit_math_scores_the_same_as_the_fused_path(tmp_path, tiny_tok):
    """--explicit-math runs the plain equations (model.set_fused(False)) through training and greedy decoding:
    the dev chrF matches the fused run's within a small tolerance (the sums run in another order)."""
    data = write_fixture(tmp_path / "data", n_dev=2, n_test=1)
    results, weights = [], []
    for extra in ([], ["--explicit-math"]):
        out = tmp_path / ("explicit" if extra else "fused")
        assert run.main(sonnet_args(data, out, tiny_tok, "--epochs", "1", "--max-steps", "3", "--lr", "1e-4",
                                    "--skip-test", "--max-new-tokens", "16", "--seed", "1", *extra)) == 0
        results.append(json.loads((out / "result.json").read_text()))
        weights.append(torch.load(out / "last.pt", weights_only=True)["model"])
    for name, fused in weights[0].items():  # the same training, to float rounding
        torch.testing.assert_close(weights[1][name], fused, atol=1e-5, rtol=0, msg=name)
    scores = [r["dev_chrf"] for r in results]
    assert scores[0] != results[0]["floor_prompts"]  # the model wrote more than the prompts: decoding ran
    assert scores[1] == pytest.approx(scores[0], abs=0.5), scores


@pytest.mark.parametrize("decoder", ["top-p", "contrastive", "beam", "mbr", "ensemble"])
def test_every_decoder_runs_through_the_task(tmp_path, tiny_tok, decoder):
    data = write_fixture(tmp_path / "data", n_dev=2, n_test=1)
    out = tmp_path / "out"
    own = {"mbr": ["--num-candidates", "3", "--num-beams", "3"], "ensemble": ["--num-candidates", "3", "--num-beams",
           "3"], "beam": ["--num-beams", "3"]}.get(decoder, [])  # each decoder takes only its own settings
    assert run.main(sonnet_args(data, out, tiny_tok, "--epochs", "0", "--decoder", decoder,
                                "--max-new-tokens", "8", *own)) == 0
    assert len(read_sonnets(out / "generated_sonnets_dev.txt")) == 2


def test_each_prompt_draws_its_own_reproducible_sample(tmp_path, tiny_tok):
    from minigpt.config import GPT2Config
    from minigpt.model import GPT2
    from minigpt.tokenizer import Tokenizer
    from tasks.sonnet import generate_sonnets

    tokenizer = Tokenizer.from_dir(tiny_tok)
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32, n_positions=256)).eval()
    cfg = DecodeConfig(decoder="top-p", max_new_tokens=20)
    prompt = "Shall I compare thee\nto a summer day\nthou art more lovely"
    first, second = generate_sonnets(model, tokenizer, [prompt, prompt], cfg, 0, "test")
    assert first != second  # the same prompt twice: two different samples (seeds 11711 and 11712)
    assert generate_sonnets(model, tokenizer, [prompt, prompt], cfg, 0, "test") == [first, second]
    # prompt k's sample depends on seed + k only, not on the prompts before it
    assert generate_sonnets(model, tokenizer, [prompt], replace(cfg, seed=cfg.seed + 1), 0, "test") == [second]


@pytest.mark.parametrize("decoder", ["greedy", "contrastive", "beam", "top-p"])
def test_decoding_in_batches_gives_the_texts_of_one_prompt_at_a_time(tmp_path, tiny_tok, decoder):
    """The fixture's dev prompts (different lengths, so left padding) in one batch, in batches of 2 and one at a
    time. The one-at-a-time path is first checked for clear margins (a 1e-4 jitter of the final hidden states
    changes nothing), so a different batch shape cannot flip a near-tie."""
    from minigpt.config import GPT2Config
    from minigpt.model import GPT2
    from minigpt.tokenizer import Tokenizer
    from tasks.data import read_sonnets
    from tasks.sonnet import generate_sonnets

    from ._margins import jitter

    data = write_fixture(tmp_path / "data", n_dev=4)
    prompts = read_sonnets(data / "sonnets_held_out_dev.txt")
    tokenizer = Tokenizer.from_dir(tiny_tok)
    assert len({len(tokenizer.encode(p)) for p in prompts}) > 1, "the prompts need different lengths"
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32, n_positions=512)).eval()
    beams = {"num_beams": 3} if decoder == "beam" else {}  # a decoder takes only its own settings
    cfg = DecodeConfig(decoder=decoder, max_new_tokens=16, batch_size=1, **beams)
    one_at_a_time = generate_sonnets(model, tokenizer, prompts, cfg, 0, "test")
    for seed in (0, 1):
        with jitter(model, 1e-4, seed):
            assert generate_sonnets(model, tokenizer, prompts, cfg, 0, "test") == one_at_a_time, "a near-tie"
    for size in (2, 0):  # 0 = all at once
        assert generate_sonnets(model, tokenizer, prompts, replace(cfg, batch_size=size), 0, "test") == one_at_a_time


# ----- bad input -----------------------------------------------------------------------------------------------
def run_error(capsys, argv) -> str:
    assert run.main(argv) == 1
    return capsys.readouterr().err


def test_bad_inputs_give_clear_errors(tmp_path, tiny_tok, capsys):
    data = write_fixture(tmp_path / "data")
    out = tmp_path / "out"
    err = run_error(capsys, sonnet_args(tmp_path / "nowhere", out, tiny_tok))
    assert "nowhere" in err and "download data" in err

    (data / "sonnets.txt").write_text("just a header\nand no numbered sonnets at all\n")
    err = run_error(capsys, sonnet_args(data, out, tiny_tok))
    assert "sonnets.txt" in err and "no numbered sonnets" in err

    write_fixture(data)
    true = read_sonnets(data / "TRUE_sonnets_held_out_dev.txt")
    sonnet_file(data / "TRUE_sonnets_held_out_dev.txt", [(25 + i, t) for i, t in enumerate(true[:3])])
    err = run_error(capsys, sonnet_args(data, out, tiny_tok))
    assert "holds 4 prompts" in err and "holds 3 sonnets" in err

    write_fixture(data)
    prompts = read_sonnets(data / "sonnets_held_out_dev.txt")
    broken = prompts[1].split("\n")
    broken[1] = "   "
    sonnet_file(data / "sonnets_held_out_dev.txt",
                [(25 + i, "\n".join(broken) if i == 1 else p) for i, p in enumerate(prompts)])
    err = run_error(capsys, sonnet_args(data, out, tiny_tok))
    assert "sonnet 26" in err and "prompt line 2 is empty" in err

    write_fixture(data)
    err = run_error(capsys, sonnet_args(data, out, tiny_tok, "--resume"))
    assert "last.pt" in err

    assert run.main(sonnet_args(data, out, tiny_tok, "--epochs", "1", "--max-steps", "1", "--skip-test")) == 0
    other = sonnet_args(data, out, tiny_tok, "--epochs", "1", "--resume", "--skip-test")
    other[other.index(TINY)] = "n_layer=2,n_head=2,n_embd=64,n_positions=256"
    err = run_error(capsys, other)
    assert "wte.weight" in err  # a checkpoint of another model size lists what does not fit


def test_disk_full_is_a_clear_error_and_keeps_the_checkpoint(tmp_path, tiny_tok, capsys, monkeypatch):
    """A write failure (disk full) names the path; the checkpoint of the earlier epoch stays loadable."""
    data = write_fixture(tmp_path / "data")
    out = tmp_path / "out"
    assert run.main(sonnet_args(data, out, tiny_tok, "--epochs", "2", "--max-steps", "6", "--skip-test")) == 0
    before = torch.load(out / "last.pt", weights_only=True)
    real_save = torch.save

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    err = run_error(capsys, sonnet_args(data, out, tiny_tok, "--epochs", "2", "--resume", "--skip-test"))
    assert "No space left on device" in err and "could not write " + str(out) in err
    monkeypatch.setattr(torch, "save", real_save)
    after = torch.load(out / "last.pt", weights_only=True)
    assert after["progress"] == before["progress"]
    assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items())


def test_kill_during_an_epoch_then_resume_equals_uninterrupted(tmp_path, tiny_tok):
    """SIGKILL in the middle of an epoch, --resume, same final weights and metrics as a run never killed.
    The killed run is a child process; the uninterrupted run and the resume run in this process."""
    data = write_fixture(tmp_path / "data", n_train=32)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # one thread, like this process (one_thread)

    def args(out, *extra):
        return sonnet_args(data, out, tiny_tok, "--epochs", "2", "--save-every", "1", "--skip-test",
                           "--max-new-tokens", "8", *extra)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, mid_epoch = time.time() + 120, False
    while time.time() < deadline and not mid_epoch:  # a mid-epoch checkpoint of epoch 2 (steps 9-16), then kill
        state = killed / "last.pt"
        if state.exists():
            try:
                progress = torch.load(state, weights_only=True)["progress"]
                mid_epoch = progress["epoch"] == 1 and 0 < progress["step_in_epoch"] < 8
            except Exception:
                pass
        time.sleep(0.01)  # a fast machine spends well under a second in that epoch
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL and mid_epoch  # really killed, in the middle of epoch 2
    assert run.main(args(killed, "--resume")) == 0
    whole = tmp_path / "whole"
    assert run.main(args(whole)) == 0
    a = torch.load(whole / "last.pt", weights_only=True)["model"]
    b = torch.load(killed / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = ("seconds", "eval_seconds", "tokens_per_s")
    metrics = lambda d: [{k: v for k, v in json.loads(x).items() if k not in drop}  # noqa: E731
                         for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert metrics(whole) == metrics(killed)
    assert json.loads((whole / "result.json").read_text()) == json.loads((killed / "result.json").read_text())


def test_trim_lines_counts_text_lines_and_drops_bare_numbers():
    from tasks.sonnet import trim_lines

    text = "a\nb\n\n  c\n42\nd\ne"
    assert trim_lines(text, 3) == "a\nb\n\n  c"
    assert trim_lines(text, 0) == "a\nb\n\n  c\nd\ne"
    assert trim_lines("x\n 7 \ny", 2) == "x\ny"
