"""Sentiment classification (tasks/sentiment.py, tasks/classify.py): metrics against direct formulas, the
loss with R-Drop / SimCSE views, learning a separable task end to end through the CLI (course-format files in,
predictions that parse back out, an exported model that chains), and LoRA / DoRA / last-linear-layer changing
only their own parameters."""
from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import run
from minigpt import GPT2, Tokenizer, load_pretrained
from minigpt.safetensors import save_safetensors
from tasks.classify import accuracy, classification_loss, collate, encode_examples, evaluate, load_head, macro_f1
from tasks.data import read_predictions, read_sentiment
from tasks.data.augment import make_back_translation_file, read_augment_sentiment
from tasks.heads import ClassificationHead, GPT2Classifier
from tasks.modeling import FinetuneConfig, apply_finetune
from tests._task_fixtures import SCRATCH, tokenizer_dir, write_sentiment_files
from tests.conftest import tiny_config
from training.config import TrainConfig
from training.trainer import seed_everything, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---- metrics -----------------------------------------------------------------------------------------------
def test_metrics_on_a_hand_computed_example():
    labels, preds = [0, 0, 1, 1, 2], [0, 1, 1, 1, 0]
    assert accuracy(preds, labels) == 3 / 5
    # F1: class 0: 2*1/(2+1+1) = 0.5; class 1: 2*2/(4+1+0) = 0.8; class 2: 0 (never predicted)
    assert macro_f1(preds, labels) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert macro_f1([3, 3], [0, 0]) == 0.0  # a predicted class that never occurs counts too (as sklearn)


def test_macro_f1_equals_the_confusion_matrix_formula():
    rng = random.Random(0)
    labels = [rng.randrange(5) for _ in range(300)]
    preds = [y if rng.random() < 0.6 else rng.randrange(5) for y in labels]
    cm = torch.zeros(5, 5)
    for y, p in zip(labels, preds):
        cm[y, p] += 1
    precision, recall = cm.diag() / cm.sum(0), cm.diag() / cm.sum(1)
    expected = (2 * precision * recall / (precision + recall)).mean().item()
    assert macro_f1(preds, labels) == pytest.approx(expected, rel=1e-6)
    assert accuracy(preds, labels) == pytest.approx((cm.diag().sum() / cm.sum()).item())


# ---- encoding and the loss ---------------------------------------------------------------------------------
def test_encode_logs_truncation_and_keeps_the_chosen_end(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    tok = Tokenizer.from_dir(tokenizer_dir(tmp_path))
    encoded = encode_examples(tok, ["abcdef", "ab"], [1, None], max_length=4, name="sst train")
    assert encoded == [(tok.encode("abcd"), 1), (tok.encode("ab"), -1)]
    assert "sst train: 2 examples, 1 truncated to --max-length 4 tokens" in caplog.text
    assert encode_examples(tok, ["abcdef"], [0], 4, "left")[0][0] == tok.encode("cdef")


def test_loss_views_rdrop_and_simcse():
    torch.manual_seed(0)
    model = GPT2Classifier(GPT2(tiny_config(dropout=0.0)), num_labels=3).train()
    batch = collate([([1, 2, 3], 0), ([4, 5], 2)], pad_id=0)
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    plain = classification_loss(model, batch)
    out = model(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(plain, F.cross_entropy(out.logits, batch["labels"]))
    # no dropout: both views agree, so R-Drop = 2 CE (the KL is 0)
    torch.testing.assert_close(classification_loss(model, batch, rdrop=1.0), 2 * plain)
    simcse = classification_loss(model, batch, simcse=0.5, simcse_temp=0.1)
    pooled = F.normalize(out.pooled, dim=-1)
    expected = plain + 0.5 * F.cross_entropy(pooled @ pooled.T / 0.1, torch.arange(2))
    torch.testing.assert_close(simcse, expected)
    assert calls == [(2, 3), (2, 3), (4, 3), (4, 3)]  # each loss called the model once (the views stacked)
    # with dropout the two stacked views differ, so the KL term is positive
    model_dropout = GPT2Classifier(GPT2(tiny_config(dropout=0.3)), num_labels=3).train()
    logits = model_dropout(torch.cat([batch["input_ids"]] * 2), torch.cat([batch["attention_mask"]] * 2)).logits
    assert not torch.allclose(*logits.chunk(2))


# ---- end to end through the command line -------------------------------------------------------------------
def run_cli(tmp_path: Path, *flags, out="run") -> tuple[int, Path]:
    tok = tokenizer_dir(tmp_path / "tok")
    out_dir = tmp_path / out
    argv = ("--data-dir", tmp_path / "data", "--model", "scratch", "--tokenizer", tok,
            "--scratch-config", SCRATCH, "--dropout", "0", "--batch-size", "16", "--lr", "3e-3", "--out-dir", out_dir,
            "--device", "cpu", *flags)
    return run.main(["sentiment", *(str(a) for a in argv)]), out_dir


def test_sentiment_cli_learns_and_writes_predictions_that_parse_back(tmp_path, capsys):
    data = write_sentiment_files(tmp_path / "data", "sst")
    rc, out = run_cli(tmp_path, "--dataset", "sst", "--epochs", "6")
    assert rc == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 6 and all({"dev_accuracy", "dev_macro_f1"} <= h.keys() for h in history)
    assert max(h["dev_accuracy"] for h in history) >= 0.95  # 5 classes, each decided by a keyword
    for split, file in (("dev", "ids-sst-dev.csv"), ("test", "ids-sst-test-student.csv")):
        written = read_predictions(out / "predictions" / f"full-model-sst-{split}-out.csv")
        gold = read_sentiment(data / file, labeled=split == "dev")
        assert written.column == "Predicted_Sentiment" and written.ids == [e.id for e in gold]
        assert set(written.preds) <= set(range(5))
        if split == "dev":
            assert accuracy(written.preds, [e.label for e in gold]) >= 0.95
            dev_accuracy = accuracy(written.preds, [e.label for e in gold])
    result = json.loads((out / "result.json").read_text())  # the final numbers: the best epoch's weights
    best = max(range(6), key=lambda e: history[e]["dev_accuracy"])  # the first epoch with the highest accuracy
    assert result["best_epoch"] == best + 1 and result["dev_accuracy"] == history[best]["dev_accuracy"] == dev_accuracy
    assert result["dev_macro_f1"] == history[best]["dev_macro_f1"] and result["epochs"] == 6
    # the export chains: the body as a model directory, the head beside it; 0 more epochs = the same predictions
    assert isinstance(load_pretrained(out / "model"), GPT2)
    rc, again = run_cli(tmp_path, "--model", out / "model", "--load-head", out / "model" / "head-sst.safetensors",
                        "--epochs", "0", out="chained")
    assert rc == 0
    assert (read_predictions(again / "predictions" / "full-model-sst-dev-out.csv").preds
            == read_predictions(out / "predictions" / "full-model-sst-dev-out.csv").preds)


def test_sentiment_cli_methods_and_augmentation(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data = write_sentiment_files(tmp_path / "data", "cfimdb", sizes=(40, 20, 10))

    def round_trip(texts):  # a stand-in for en -> X -> en: reword half of the texts, keep the others
        return [" ".join(reversed(t.split())) if i % 2 else t for i, t in enumerate(texts)]
    augment = make_back_translation_file(data / "ids-cfimdb-train.csv", tmp_path / "bt.csv", round_trip, "sentiment")
    train_rows = read_sentiment(data / "ids-cfimdb-train.csv", labeled=True)
    assert len(read_augment_sentiment(augment, 2, train_rows)) == 20  # the 20 unchanged rows are dropped
    caplog.clear()
    rc, out = run_cli(tmp_path, "--dataset", "cfimdb", "--epochs", "1", "--pooling", "mean", "--dropout", "0.1",
                      "--rdrop", "0.5", "--simcse", "0.1", "--augment", augment, "--finetune", "dora")
    log = caplog.text
    assert rc == 0
    assert "augment: 20 back-translated rows added" in log and "cfimdb train: 60 examples" in log
    assert read_predictions(out / "predictions" / "dora-cfimdb-test-out.csv").ids == [f"test-student{i:04d}"
                                                                                   for i in range(10)]


def test_missing_data_file_is_named_with_how_to_get_it(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    rc, _ = run_cli(tmp_path, "--dataset", "sst")
    log = capsys.readouterr().err
    assert rc == 1 and "ids-sst-train.csv is missing" in log and "python run.py download data" in log


# ---- parameter-efficient methods: learn, and change only what they own -------------------------------------
@pytest.mark.parametrize("finetune, min_accuracy", [("lora", 0.95), ("dora", 0.95),
                                                   ("last-linear-layer", None)])  # a random frozen body: no bar
def test_only_adapter_and_head_parameters_change(tmp_path, finetune, min_accuracy):
    data = write_sentiment_files(tmp_path / "data", "cfimdb", sizes=(200, 60, 0))
    tok = Tokenizer.from_dir(tokenizer_dir(tmp_path / "tok"))
    encoded = {split: encode_examples(tok, [e.sentence for e in rows], [e.label for e in rows], 64)
               for split in ("train", "dev")
               for rows in [read_sentiment(data / f"ids-cfimdb-{split}.csv", labeled=True)]}
    seed_everything(0)
    body = GPT2(tiny_config(vocab_size=tok.vocab_size))
    method = FinetuneConfig(method=finetune, lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_targets=("attn.c_attn",))
    model = GPT2Classifier(apply_finetune(body, method), num_labels=2, pooling="last")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    own = ("lora_A", "lora_B", "magnitude") if finetune != "last-linear-layer" else ()
    assert trainable == {n for n in before if n.startswith("head.") or n.rpartition(".")[2] in own}

    cfg = TrainConfig(out_dir=str(tmp_path / finetune), epochs=6, batch_size=16, lr=1e-2, keep_best=1, device="cpu")
    result = train(model, encoded["train"], lambda b: collate(b, tok.pad_token_id), classification_loss, cfg,
                   evaluate=lambda m: evaluate(m, encoded["dev"], tok.pad_token_id), metric="dev_accuracy")
    if min_accuracy is not None:
        assert result.best_metric >= min_accuracy
    after = model.state_dict()
    for name in before:
        if name in trainable:
            assert not torch.equal(before[name], after[name]), f"{name} did not train"
        else:
            assert torch.equal(before[name], after[name]), f"frozen {name} changed"


def test_load_head_checks_the_file_and_the_shapes(tmp_path):
    five = ClassificationHead(8, 5)
    save_safetensors(five.state_dict(), tmp_path / "head-sst.safetensors")
    other = ClassificationHead(8, 5)
    load_head(other, tmp_path / "head-sst.safetensors")
    assert torch.equal(other.proj.weight, five.proj.weight)
    with pytest.raises(ValueError, match="another task or label count"):
        load_head(ClassificationHead(8, 2), tmp_path / "head-sst.safetensors")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_head(other, tmp_path / "missing.safetensors")
