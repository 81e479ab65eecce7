"""Bad command lines and bad files, as a user would give them: each is one line of error (exit status 1, no
traceback) naming the flag or file at fault, raised before any training step (a step here fails the test)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

import run
import training.trainer
from minigpt import GPT2, GPT2Config, save_pretrained
from minigpt.safetensors import load_safetensors, save_safetensors
from minigpt.tokenizer import write_vocab_files
from tests._fixtures import sonnet_file, write_fixture
from tests._task_fixtures import SCRATCH, tokenizer_dir, write_quora_files, write_sentiment_files

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the error is about a machine without CUDA")


class StepTaken(BaseException):
    """Raised by a training step: nothing catches it, so the test sees that training started."""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every input a case may point at, written once: data sets, a tokenizer, a tiny model directory."""
    root = tmp_path_factory.mktemp("inputs")
    tok = write_vocab_files(root / "tok", [("t", "h"), ("th", "e"), ("Ġ", "th"), ("o", "u")])
    model = GPT2(GPT2Config(vocab_size=300, n_positions=256, n_embd=32, n_layer=2, n_head=2))
    save_pretrained(model, root / "model", tokenizer_dir=tok)
    write_sentiment_files(root / "data", sizes=(20, 10, 10))
    write_quora_files(root / "data", sizes=(20, 10, 10))
    write_fixture(root / "data")
    tokenizer_dir(root / "cls_tok")
    (root / "a_file").write_text("not a directory")
    return root


def model_variant(root: Path, name: str, config: dict | None = None, weights=None) -> Path:
    """A copy of the tiny model directory with config.json fields replaced and/or the weights changed."""
    src, dst = root / "model", root / name
    dst.mkdir(exist_ok=True)
    for f in ("vocab.json", "merges.txt", "config.json", "model.safetensors"):
        (dst / f).write_bytes((src / f).read_bytes())
    if config:
        d = json.loads((src / "config.json").read_text()) | config
        (dst / "config.json").write_text(json.dumps(d))
    if weights:
        state = {k: v.clone() for k, v in load_safetensors(src / "model.safetensors").items()}
        weights(state)
        save_safetensors(state, dst / "model.safetensors")
    return dst


def as_int32(state):
    state["transformer.ln_f.weight"] = state["transformer.ln_f.weight"].to(torch.int32)


def with_nan(state):
    state["transformer.h.1.mlp.c_fc.weight"][0, 0] = float("nan")


def sonnet(r, *extra):
    return ["sonnet", "--data-dir", str(r / "data"), "--out-dir", str(r / "out-sonnet"), "--model", "scratch",
            "--scratch-config", "n_layer=2,n_head=2,n_embd=32,n_positions=256", "--tokenizer", str(r / "tok"),
            "--decoder", "greedy", "--max-new-tokens", "8", "--device", "cpu", *extra]


def sentiment(r, *extra):
    return ["sentiment", "--data-dir", str(r / "data"), "--out-dir", str(r / "out-sst"), "--model", "scratch",
            "--scratch-config", SCRATCH, "--tokenizer", str(r / "cls_tok"), "--device", "cpu", *extra]


def paraphrase(r, *extra):
    return ["paraphrase", "--data-dir", str(r / "data"), "--out-dir", str(r / "out-para"), "--model", "scratch",
            "--scratch-config", SCRATCH, "--tokenizer", str(r / "cls_tok"), "--device", "cpu", *extra]


def multitask(r, *extra):
    return ["multitask", "--data-dir", str(r / "data"), "--out-dir", str(r / "out-multi"), "--model", "scratch",
            "--scratch-config", SCRATCH, "--tokenizer", str(r / "cls_tok"), "--device", "cpu", *extra]


def generate(r, *extra, model=None):
    return ["generate", "--model", str(model or r / "model"), "--prompt", "the", "--decoder", "greedy",
            "--device", "cpu", *extra]  # (a case's own --device comes later and wins)


def malicious_last_pt(r):
    out = r / "out-evil"
    out.mkdir(exist_ok=True)

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())  # harmless here; any callable would run on an unsafe load

    torch.save({"format": "x", "payload": Payload()}, out / "last.pt")
    return sonnet(r, "--out-dir", str(out), "--resume")


def random_bytes_last_pt(r):
    out = r / "out-random"
    out.mkdir(exist_ok=True)
    (out / "last.pt").write_bytes(bytes(range(256)) * 16)  # no pickle, no zip: damaged, not dangerous
    return sonnet(r, "--out-dir", str(out), "--resume")


def bad_merges_model(r):
    model = model_variant(r, "m-merges")
    (model / "merges.txt").write_text("#version: 0.2\nt h\nth e x\n")
    return generate(r, model=model)


def weights_a_directory(r):
    model = model_variant(r, "m-weights-dir")
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").mkdir()
    return generate(r, model=model)


def true_sonnets_missing_one(r):
    data = r / "data-missing"
    write_fixture(data)
    # the fixture's dev sonnets are 25-28: the true file lacks 28 and has a 99 instead
    sonnet_file(data / "TRUE_sonnets_held_out_dev.txt", [(n, "a line\n" * 14) for n in (25, 26, 27, 99)])
    return sonnet(r, "--data-dir", str(data))


# (case id, argv built from the inputs' root, text the one error line must hold)
CASES = [
    # flags refused when the command line is parsed
    ("sonnet-max-new-tokens-0", lambda r: sonnet(r, "--max-new-tokens", "0"), "--max-new-tokens"),
    ("sonnet-max-new-tokens-negative", lambda r: sonnet(r, "--max-new-tokens", "-1"), "--max-new-tokens"),
    ("sonnet-max-lines-negative", lambda r: sonnet(r, "--max-lines", "-1"), "--max-lines"),
    ("sonnet-dev-limit-negative", lambda r: sonnet(r, "--dev-limit", "-1"), "--dev-limit"),
    ("sonnet-lr-negative", lambda r: sonnet(r, "--lr", "-1"), "--lr"),
    ("sonnet-lr-nan", lambda r: sonnet(r, "--lr", "nan"), "--lr"),
    ("sonnet-epochs-negative", lambda r: sonnet(r, "--epochs", "-2"), "--epochs"),
    ("sonnet-grad-accum-0", lambda r: sonnet(r, "--grad-accum", "0"), "--grad-accum"),
    ("sonnet-warmup-inf", lambda r: sonnet(r, "--warmup", "inf"), "--warmup"),
    ("sonnet-seed-text", lambda r: sonnet(r, "--seed", "abc"), "--seed"),
    ("sonnet-length-penalty-nan", lambda r: sonnet(r, "--length-penalty", "nan"), "--length-penalty"),
    ("sonnet-dropout-1.5", lambda r: sonnet(r, "--dropout", "1.5"), "--dropout"),
    ("sonnet-lora-r-0", lambda r: sonnet(r, "--lora-r", "0"), "--lora-r"),
    ("sonnet-prefix-length-0", lambda r: sonnet(r, "--prefix-length", "0"), "--prefix-length"),
    ("sonnet-device-unknown", lambda r: sonnet(r, "--device", "tpu"), "--device"),
    ("sentiment-batch-size-0", lambda r: sentiment(r, "--batch-size", "0"), "--batch-size"),
    ("sentiment-eval-batch-size-0", lambda r: sentiment(r, "--eval-batch-size", "0"), "--eval-batch-size"),
    ("sentiment-limit-negative", lambda r: sentiment(r, "--limit", "-3"), "--limit"),
    ("sentiment-max-length-0", lambda r: sentiment(r, "--max-length", "0"), "--max-length"),
    ("sentiment-rdrop-negative", lambda r: sentiment(r, "--rdrop", "-1"), "--rdrop"),
    ("sentiment-simcse-temp-0", lambda r: sentiment(r, "--simcse-temp", "0"), "--simcse-temp"),
    ("sentiment-weight-decay-negative", lambda r: sentiment(r, "--weight-decay", "-0.1"), "--weight-decay"),
    ("paraphrase-adversarial-ratio-negative", lambda r: paraphrase(r, "--adversarial-ratio", "-0.5"),
     "--adversarial-ratio"),
    ("paraphrase-lora-dropout-1", lambda r: paraphrase(r, "--lora-dropout", "1"), "--lora-dropout"),
    ("multitask-keep-best-negative", lambda r: multitask(r, "--keep-best", "-1"), "--keep-best"),
    ("multitask-task-weights-nan", lambda r: multitask(r, "--task-weights", "sst=nan"), "--task-weights"),
    ("sentiment-head-dropout-1", lambda r: sentiment(r, "--head-dropout", "1"), "--head-dropout"),
    ("generate-seed-negative", lambda r: generate(r, "--seed", "-1"), "--seed"),
    ("generate-max-new-tokens-0", lambda r: generate(r, "--max-new-tokens", "0"), "--max-new-tokens"),
    ("generate-temperature-inf", lambda r: generate(r, "--temperature", "inf"), "--temperature"),
    pytest.param("generate-device-cuda", lambda r: generate(r, "--device", "cuda"), "--device", marks=NO_CUDA,
                 id="generate-device-cuda"),
    pytest.param("sonnet-device-cuda", lambda r: sonnet(r, "--device", "cuda"), "--device", marks=NO_CUDA,
                 id="sonnet-device-cuda"),
    # settings that depend on the model, refused once its config is read
    ("sonnet-max-new-tokens-beyond-context", lambda r: sonnet(r, "--max-new-tokens", "600"), "--max-new-tokens"),
    ("generate-max-new-tokens-beyond-context", lambda r: generate(r, "--max-new-tokens", "300"),
     "--max-new-tokens 300: --prompt (1 tokens) plus these exceed the model's context of 256 positions (at most "
     "255)"),
    ("generate-prompt-fills-the-context", lambda r: [a if a != "the" else "the " * 300 for a in generate(r)],
     "--prompt has 600 tokens, which leaves none of the model's 256 positions"),  # not --max-new-tokens' fault
    ("sentiment-warmup-fraction-above-1", lambda r: sentiment(r, "--warmup", "2.5"), "--warmup"),
    ("sonnet-scratch-config-unknown-key", lambda r: sonnet(r, "--scratch-config", "n_layers=2"), "--scratch-config"),
    ("sonnet-scratch-config-not-a-number", lambda r: sonnet(r, "--scratch-config", "n_embd=big"), "--scratch-config"),
    ("sonnet-scratch-config-heads", lambda r: sonnet(r, "--scratch-config", "n_embd=30,n_head=4"), "--scratch-config"),
    ("sonnet-scratch-config-huge-context", lambda r: sonnet(r, "--scratch-config", "n_positions=100000000000"),
     "--scratch-config"),  # refused from the shapes, before torch tries to allocate 300 GB
    ("config-huge-context", lambda r: generate(r, model=model_variant(r, "m-huge", {"n_positions": 10**11})),
     "n_positions=100000000000"),
    ("merges-line-malformed", bad_merges_model, "m-merges/merges.txt:3:"),
    ("weights-a-directory", weights_a_directory, "model.safetensors: not a regular file (a directory)"),
    # bad files
    ("config-epsilon-string", lambda r: generate(r, model=model_variant(r, "m-eps", {"layer_norm_epsilon": "1e-5"})),
     "layer_norm_epsilon"),
    ("config-dropout-string", lambda r: generate(r, model=model_variant(r, "m-drop", {"resid_pdrop": "0.1"})),
     "resid_pdrop"),
    ("config-layers-float", lambda r: generate(r, model=model_variant(r, "m-layers", {"n_layer": 2.0})), "n_layer"),
    ("weight-stored-as-int32", lambda r: generate(r, model=model_variant(r, "m-int", weights=as_int32)),
     "ln_f.weight"),
    ("generate-from-nan-weights", lambda r: generate(r, model=model_variant(r, "m-nan", weights=with_nan)),
     "refusing to decode with them"),  # the fused and explicit paths would write different garbage
    ("generate-explicit-from-nan-weights", lambda r: generate(r, "--explicit-math",
                                                              model=model_variant(r, "m-nan", weights=with_nan)),
     "refusing to decode with them"),
    ("sonnet-epochs-0-from-nan-weights",
     lambda r: sonnet(r, "--epochs", "0", "--out-dir", str(r / "out-nan"), "--model",
                      str(model_variant(r, "m-nan", weights=with_nan)), "--tokenizer", str(r / "model")),
     "refusing to decode with them"),
    ("train-from-nan-weights", lambda r: sonnet(r, "--model", str(model_variant(r, "m-nan", weights=with_nan)),
                                                "--tokenizer", str(r / "model")), "h.1.mlp.c_fc.weight"),
    ("out-dir-is-a-file", lambda r: sonnet(r, "--out-dir", str(r / "a_file")), "is a file"),
    ("resume-without-checkpoint", lambda r: sonnet(r, "--out-dir", str(r / "out-none"), "--resume"),
     "no checkpoint"),
    ("malicious-last-pt", malicious_last_pt, "is not a minigpt checkpoint"),
    ("random-bytes-last-pt", random_bytes_last_pt, "last.pt: it is damaged or not a torch file"),
    ("true-sonnets-missing-a-number", true_sonnets_missing_one, "sonnet 28"),
]


@pytest.mark.parametrize("case, argv, names", [pytest.param(*c, id=c[0]) if type(c) is tuple else c
                                               for c in CASES])
def test_one_line_error_before_any_training_step(files, case, argv, names, capsys, monkeypatch):
    def step(*args, **kwargs):
        raise StepTaken(case)

    monkeypatch.setattr(training.trainer._Trainer, "_run_epoch", step)
    monkeypatch.delenv("MINIGPT_DEBUG", raising=False)
    try:
        code = run.main(argv(files))
    except SystemExit as e:  # argparse's errors
        code = e.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 1, err
    assert "Traceback" not in err and len(errors) == 1, err
    assert names in errors[0], errors[0]


def test_unsafe_advice_is_never_given(files, capsys):
    run.main(malicious_last_pt(files))
    err = capsys.readouterr().err
    assert "Do not load it with weights_only=False" in err and "re-running" not in err.lower()


def test_failed_write_without_checkpoint_does_not_suggest_resume(tmp_path, monkeypatch):
    from training.checkpointing import CheckpointError, write_run_file

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(CheckpointError) as info:
        write_run_file(tmp_path / "metrics.jsonl", "x")
    assert "--resume" not in str(info.value) and "run again" in str(info.value)
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="then --resume"):
        write_run_file(tmp_path / "metrics.jsonl", "x")


def test_nan_weights_warn_at_load_naming_the_tensor(files):
    from minigpt import load_pretrained

    with pytest.warns(UserWarning, match=r"h\.1\.mlp\.c_fc\.weight"):
        load_pretrained(model_variant(files, "m-nan2", weights=with_nan))


def test_no_amp_help_reads_the_right_way_round(capsys):
    with pytest.raises(SystemExit):
        run.main(["sonnet", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "turn off bf16 autocast, which is on by default on CUDA" in text and "(default: True)" not in text


def test_epochs_0_does_not_say_parameters_train(files, caplog):
    import logging

    caplog.set_level(logging.INFO)
    assert run.main(sonnet(files, "--epochs", "0", "--out-dir", str(files / "out-e0"), "--skip-test",
                           "--max-new-tokens", "4")) == 0
    assert "parameters train" not in caplog.text and "--epochs 0: no training" in caplog.text


def test_ctrl_c_suggests_resume_only_when_a_checkpoint_exists(tmp_path, monkeypatch, capsys):
    import tasks.sonnet

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tasks.sonnet, "main", interrupted)
    assert run.main(["sonnet", "--out-dir", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "--resume" not in err and "run again" in err
    (tmp_path / "last.pt").write_bytes(b"")
    assert run.main(["sonnet", "--out-dir", str(tmp_path)]) == 130
    assert "add --resume" in capsys.readouterr().err


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path, monkeypatch, capsys):
    """`kill PID` (or a cluster's time limit) while the task runs: the same stop and message, exit 143."""
    import signal

    import tasks.sonnet

    def killed(args):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to this process's main thread, inside the task
        raise AssertionError("SIGTERM did not stop the task")

    monkeypatch.setattr(tasks.sonnet, "main", killed)
    before = signal.getsignal(signal.SIGTERM)
    (tmp_path / "last.pt").write_bytes(b"")
    assert run.main(["sonnet", "--out-dir", str(tmp_path)]) == 143
    assert "terminated (SIGTERM); " in capsys.readouterr().err and signal.getsignal(signal.SIGTERM) is before


def test_a_random_model_at_a_fine_tuning_rate_gets_a_warning(caplog):
    """--model scratch keeps the task's fine-tuning lr unless told: one line says it cannot train a random model."""
    import argparse

    from tasks.model_flags import model_spec_from_args

    def spec(**flags):
        args = dict(model="scratch", tokenizer=None, scratch_config="", dropout=0.1, explicit_math=False,
                    lr=1e-5, epochs=3) | flags
        caplog.clear()
        model_spec_from_args(argparse.Namespace(**args))
        return caplog.text

    assert "--lr 1e-05 is a fine-tuning rate" in spec() and "try --lr 1e-3" in spec()
    assert spec(lr=1e-3) == "" and spec(epochs=0) == "" and spec(model="gpt2") == ""


def test_each_sentiment_dataset_has_its_own_default_out_dir(tmp_path, monkeypatch, capsys):
    """sentiment --dataset cfimdb after --dataset sst does not meet the sst run: runs/sentiment-{dataset}, named
    (and locked) before any data is read."""
    monkeypatch.chdir(tmp_path)
    for dataset in ("sst", "cfimdb"):
        assert run.main(["sentiment", "--dataset", dataset, "--data-dir", str(tmp_path / "nowhere")]) == 1
        assert (tmp_path / "runs" / f"sentiment-{dataset}" / ".lock").is_file()
    with pytest.raises(SystemExit):
        run.main(["sentiment", "--help"])
    assert "(default: runs/sentiment-{dataset})" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("task", ["sonnet", "sentiment", "paraphrase"])
def test_each_help_line_gives_one_default(task, capsys):
    """A flag --protocol course sets prints its two values in one note, not a second '(default: None)'."""
    with pytest.raises(SystemExit):
        run.main([task, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "%(default)s" not in text
    assert not re.search(r"\(default: [^()]*\) \(default:", text)  # two default notes in a row
    assert "(default: 10; --protocol course: 10)" in text


def test_sonnet_takes_the_classifiers_limit_flag_as_its_dev_limit():
    """--limit, the classifiers' smoke-run flag, is --dev-limit on sonnet (it was an unrecognized argument)."""
    for flag in ("--limit", "--dev-limit"):
        argv = ["sonnet", flag, "2"]
        assert run.build_parser(argv).parse_args(argv).dev_limit == 2
    argv = ["sentiment", "--limit", "2"]
    assert run.build_parser(argv).parse_args(argv).limit == 2
