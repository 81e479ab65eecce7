"""Paraphrase detection (tasks/paraphrase.py, tasks/cloze.py): the economical yes/no logits equal the full LM
head's, the cloze task learns a separable rule end to end through the CLI and writes predictions that parse back,
the classifier-head variant and the methods run, and LoRA changes only its adapters."""
from __future__ import annotations

import json
import logging
import re

import pytest
import torch

import run
from minigpt import GPT2, Tokenizer
from minigpt.tokenizer import write_vocab_files
from tasks.classify import accuracy, classification_loss, collate, evaluate
from tasks.cloze import GPT2Cloze, answer_token_ids, encode_pairs
from tasks.data import read_predictions, read_quora
from tasks.data.augment import make_back_translation_file, read_augment_pairs
from tasks.heads import last_token_index
from tasks.modeling import FinetuneConfig, apply_finetune
from tests._task_fixtures import SCRATCH, tokenizer_dir, write_quora_files
from tests.conftest import shared_path, tiny_config
from training.config import TrainConfig
from training.trainer import seed_everything, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("side", ["right", "left"])
def test_cloze_logits_equal_the_full_lm_head_at_the_last_real_token(side):
    torch.manual_seed(0)
    body = GPT2(tiny_config()).eval()
    answers = [17, 250]  # stand-ins for "no", "yes"
    model = GPT2Cloze(body, answers)
    rows = [(torch.randint(0, 300, (n,)).tolist(), 0) for n in (6, 3, 9)]
    batch = collate(rows, pad_id=299, padding_side=side)
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"])
        full = body(batch["input_ids"], attention_mask=batch["attention_mask"])  # (B, T, vocab) logits
    last = last_token_index(batch["attention_mask"])
    rows_index = torch.arange(3)
    torch.testing.assert_close(out.logits, full.logits[rows_index, last][:, answers], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled, full.hidden_states[rows_index, last])


def test_answer_ids_come_from_the_tokenizer(tmp_path):
    assert answer_token_ids(Tokenizer.from_dir(shared_path("gpt2"))) == [3919, 8505]  # GPT-2's "no", "yes"
    with pytest.raises(ValueError, match="'yes' and 'no' to be single tokens"):
        answer_token_ids(Tokenizer.from_dir(write_vocab_files(tmp_path)))  # bytes only: "yes" is 3 tokens


def test_long_prompts_lose_their_start_not_the_question(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    tok = Tokenizer.from_dir(tokenizer_dir(tmp_path))
    write_quora_files(tmp_path / "data", sizes=(4, 4, 4))
    pairs = read_quora(tmp_path / "data" / "quora-dev.csv", labeled=True)
    (ids, label), = encode_pairs(tok, pairs[:1], max_length=50, name="quora dev")
    assert len(ids) == 50 and tok.decode(ids).endswith("Are these questions asking the same thing?\n")
    assert "quora dev: 1 examples, 1 truncated to --max-length 50 tokens (cut at the start)" in caplog.text


def run_cli(tmp_path, *flags, out="run"):
    tok = tokenizer_dir(tmp_path / "tok")
    argv = ("--data-dir", tmp_path / "data", "--model", "scratch", "--tokenizer", tok,
            "--scratch-config", SCRATCH, "--dropout", "0", "--batch-size", "16", "--lr", "3e-3",
            "--out-dir", tmp_path / out, "--device", "cpu", *flags)
    return run.main(["paraphrase", *(str(a) for a in argv)]), tmp_path / out


def test_cloze_cli_learns_and_writes_predictions_that_parse_back(tmp_path):
    data = write_quora_files(tmp_path / "data")
    rc, out = run_cli(tmp_path, "--epochs", "6")
    assert rc == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(h["dev_accuracy"] for h in history) >= 0.95 and "dev_macro_f1" in history[-1]
    for split, labeled in (("dev", True), ("test", False)):
        gold = read_quora(data / f"quora-{split}{'' if labeled else '-student'}.csv", labeled=labeled)
        written = read_predictions(out / "predictions" / f"para-{split}-output.csv")
        assert written.column == "Predicted_Is_Paraphrase" and written.ids == [e.id for e in gold]
        assert set(written.preds) <= {0, 1}
        if labeled:
            assert accuracy(written.preds, [e.label for e in gold]) >= 0.95
    assert (out / "model" / "model.safetensors").is_file() and not list((out / "model").glob("head-*"))


def test_classifier_head_with_methods_runs(tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO)
    write_quora_files(tmp_path / "data", sizes=(40, 10, 10))
    rc, out = run_cli(tmp_path, "--head", "classifier", "--pooling", "mean", "--epochs", "1", "--dropout", "0.1",
                      "--rdrop", "1.0", "--simcse", "0.1", "--adversarial", "--adversarial-ratio", "0.5",
                      "--finetune", "lora")
    log = caplog.text
    assert rc == 0, log
    match = re.search(r"adversarial: (\d+) hard negatives added \(mined (\d+), number (\d+), negation (\d+), "
                      r"entity (\d+)\)", log)
    assert match and int(match[2]) == 10 and int(match[1]) == sum(map(int, match.groups()[1:]))
    assert f"quora train: {40 + int(match[1])} examples" in log
    assert (out / "model" / "head-quora.safetensors").is_file()
    assert len(read_predictions(out / "predictions" / "para-test-output.csv").ids) == 10
    rc, _ = run_cli(tmp_path, "--pooling", "mean", out="bad")  # the cloze answers at the last token only
    assert rc == 1 and "--pooling mean needs --head classifier" in capsys.readouterr().err


def test_lora_cloze_learns_with_only_its_adapters_changing(tmp_path):
    data = write_quora_files(tmp_path / "data", sizes=(200, 60, 0))
    tok = Tokenizer.from_dir(tokenizer_dir(tmp_path / "tok"))
    encoded = {split: encode_pairs(tok, read_quora(data / f"quora-{split}.csv", labeled=True), 256, split)
               for split in ("train", "dev")}
    seed_everything(0)
    body = GPT2(tiny_config(vocab_size=tok.vocab_size, n_positions=256))
    finetune = FinetuneConfig(method="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_targets=("attn.c_attn",))
    model = GPT2Cloze(apply_finetune(body, finetune), answer_token_ids(tok))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(out_dir=str(tmp_path / "lora"), epochs=6, batch_size=16, lr=1e-2, keep_best=1, device="cpu")
    result = train(model, encoded["train"], lambda b: collate(b, tok.pad_token_id), classification_loss, cfg,
                   evaluate=lambda m: evaluate(m, encoded["dev"], tok.pad_token_id), metric="dev_accuracy")
    assert result.best_metric >= 0.95
    for name, value in model.state_dict().items():
        is_adapter = name.rpartition(".")[2] in ("lora_A", "lora_B")
        assert torch.equal(before[name], value) != is_adapter, name


def test_back_translation_file_for_pairs(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data = write_quora_files(tmp_path / "data", sizes=(6, 2, 2))
    train_path = data / "quora-train.csv"

    def round_trip(texts):  # a stand-in for en -> X -> en that rewords every other question, quotes included
        return [f'"{t}" , really' if i % 2 else t for i, t in enumerate(texts)]
    path = make_back_translation_file(train_path, tmp_path / "bt.csv", round_trip, "paraphrase")
    train = read_quora(train_path, labeled=True)
    rows = read_augment_pairs(path, train)
    assert [e.id for e in rows] == [e.id + "-bt" for e in train]  # every pair's question 2 changed: all kept
    assert [e.label for e in rows] == [e.label for e in train]
    assert all(a.sentence1 == b.sentence1 and a.sentence2 != b.sentence2 for a, b in zip(rows, train))
    assert "augment: 6 back-translated pairs added" in caplog.text


# ---- --head vocab: the course's objective (--protocol course) ---------------------------------------------------
def course_batch(tok, examples, split="train"):
    """The course's prompts right-padded, and the answers' token ids looked up by encoding the words."""
    from tasks.cloze import course_prompt

    rows = [tok.encode(course_prompt(e.sentence1, e.sentence2, split)) for e in examples]
    T = max(len(r) for r in rows)
    ids = torch.tensor([r + [tok.pad_token_id] * (T - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    answer = {1: tok.encode("yes"), 0: tok.encode("no")}
    assert all(len(a) == 1 for a in answer.values())
    return ids, mask, torch.tensor([answer[e.label][0] for e in examples])


def test_vocab_head_step_one_loss_is_the_full_vocabulary_cross_entropy(tmp_path):
    from functools import partial

    from tasks.cloze import GPT2VocabCloze, course_prompt

    data = write_quora_files(tmp_path / "data", sizes=(12, 4, 0))
    tok = Tokenizer.from_dir(tokenizer_dir(tmp_path / "tok"))
    examples = read_quora(data / "quora-train.csv", labeled=True)
    encoded = encode_pairs(tok, examples, 256, "train", partial(course_prompt, split="train"), answer_token_ids(tok))
    seed_everything(0)
    body = GPT2(tiny_config(vocab_size=tok.vocab_size, n_positions=256))
    ids, mask, answers = course_batch(tok, examples)
    with torch.no_grad():  # the course's equation from the initial weights: full logits at the last real token
        logits = body(ids, attention_mask=mask).logits[torch.arange(len(examples)), mask.sum(dim=1) - 1]  # (B, V)
        expected = torch.nn.functional.cross_entropy(logits, answers).item()
        two_way = GPT2Cloze(body, answer_token_ids(tok))
        restricted = classification_loss(two_way, collate(encode_pairs(tok, examples, 256, "t",
                                                                       partial(course_prompt, split="train")),
                                                          tok.pad_token_id)).item()
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), epochs=1, batch_size=len(examples), lr=1e-3, keep_best=0,
                      device="cpu", max_steps=1)
    result = train(GPT2VocabCloze(body), encoded, lambda b: collate(b, tok.pad_token_id), classification_loss, cfg)
    assert result.step_log[0]["loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - restricted) > 1.0  # the two objectives: near log V against near log 2
    assert [label for _, label in encoded] == answers.tolist()  # the labels are the answers' token ids


def test_vocab_head_predicts_the_argmax_token_over_the_vocabulary(tmp_path):
    from functools import partial

    from tasks.classify import predict
    from tasks.cloze import GPT2VocabCloze, course_prompt

    data = write_quora_files(tmp_path / "data", sizes=(0, 10, 0))
    tok = Tokenizer.from_dir(tokenizer_dir(tmp_path / "tok"))
    examples = read_quora(data / "quora-dev.csv", labeled=True)
    seed_everything(3)
    body = GPT2(tiny_config(vocab_size=tok.vocab_size, n_positions=256)).eval()
    ids, mask, _ = course_batch(tok, examples, "dev")
    with torch.no_grad():
        logits = body(ids, attention_mask=mask).logits[torch.arange(len(examples)), mask.sum(dim=1) - 1]  # (B, V)
    top2 = logits.topk(2, dim=-1).values
    assert bool(((top2[:, 0] - top2[:, 1]) > 1e-4).all())  # no near-ties: argmax is well defined
    encoded = encode_pairs(tok, examples, 256, "dev", partial(course_prompt, split="dev"), answer_token_ids(tok))
    preds = predict(GPT2VocabCloze(body), encoded, tok.pad_token_id, batch_size=3)
    assert preds == logits.argmax(dim=-1).tolist()
    assert not set(preds) <= set(answer_token_ids(tok))  # an untrained model answers with other tokens too


def test_course_protocol_writes_token_ids_and_shuffles_the_test_rows(tmp_path):
    data = write_quora_files(tmp_path / "data", sizes=(16, 6, 8))
    tok = tokenizer_dir(tmp_path / "tok")
    out = tmp_path / "run"
    argv = ["paraphrase", "--data-dir", data, "--model", "scratch", "--tokenizer", tok, "--scratch-config", SCRATCH,
            "--dropout", "0", "--epochs", "1", "--out-dir", out, "--protocol", "course", "--device", "cpu",
            "--lr", "1e-3"]
    assert run.main([str(a) for a in argv]) == 0
    answers = answer_token_ids(Tokenizer.from_dir(tok))
    dev = read_predictions(out / "predictions" / "para-dev-output.csv")
    test = read_predictions(out / "predictions" / "para-test-output.csv")
    gold = read_quora(data / "quora-dev.csv", labeled=True)
    assert dev.ids == [e.id for e in gold]  # dev in file order, as the course's unshuffled dev loader
    test_ids = [e.id for e in read_quora(data / "quora-test-student.csv", labeled=False)]
    assert sorted(test.ids) == sorted(test_ids) and test.ids != test_ids  # test: shuffled, as the course's
    assert all(0 <= p < 300 for p in dev.preds + test.preds)  # token ids, not 0/1 labels
    accuracy = sum(p == answers[e.label] for p, e in zip(dev.preds, gold)) / len(gold)
    assert json.loads((out / "result.json").read_text())["dev_accuracy"] == pytest.approx(accuracy)
