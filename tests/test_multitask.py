"""Multitask training (tasks/multitask.py): the weighted loss against its formula, task-tagged batches, an end to
end run on course-format fixtures reporting each task's dev metric, and re-fine-tuning the exported model."""
from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F

import run
from minigpt import GPT2
from tasks import multitask, paraphrase
from tasks.data import read_predictions
from tasks.multitask import MultitaskModel, TaskView, collate_tagged, multitask_loss, parse_task_weights
from tests._task_fixtures import SCRATCH, parse, tokenizer_dir, write_quora_files, write_sentiment_files
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_task_weights_parse_with_clear_errors():
    assert parse_task_weights("sst=2,quora=0.5") == [2.0, 0.5]
    assert parse_task_weights("quora=3") == [1.0, 3.0]
    for bad, message in (("imdb=1", "name in"), ("sst=x", "not a number"), ("sst=-1", ">= 0"), ("sst=nan", "finite"),
                         ("sst", "name=")):
        with pytest.raises(ValueError, match=message):
            parse_task_weights(bad)
    assert parse_task_weights("sst=0") == [0.0, 1.0]  # one task alone trains


@pytest.mark.parametrize("bad, message", [("sst=0,quora=0", "every weight is 0"),  # trained nothing, reported a best
                                          ("sst=1,quora=2,sst=3", "sst is named twice")])  # the last value won
def test_task_weights_that_train_nothing_or_name_a_task_twice_are_refused(bad, message, capsys):
    with pytest.raises(ValueError, match=message):
        parse_task_weights(bad)
    with pytest.raises(SystemExit):  # when the command line is parsed, before any data is read
        run.main(["multitask", "--task-weights", bad])
    err = capsys.readouterr().err
    assert "argument --task-weights: " + message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("head", ["cloze", "classifier"])
def test_weighted_loss_and_per_task_outputs(head):
    torch.manual_seed(0)
    model = MultitaskModel(GPT2(tiny_config()), "last", head, answer_ids=[5, 9]).eval()
    examples = [([1, 2, 3], 4, 0), ([4, 5], 1, 1), ([6], 0, 1), ([7, 8, 9, 10], 2, 0), ([11, 12], 0, 1)]
    batch = collate_tagged(examples, pad_id=0)
    assert batch["task"].tolist() == [0, 1, 1, 0, 1]
    weights = [0.3, 2.0]
    expected = 0.0
    for ids, label, task in examples:  # each row alone through the task's own view
        logits = TaskView(model, task)(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).logits
        expected = expected + weights[task] * F.cross_entropy(logits, torch.tensor([label]))
    torch.testing.assert_close(multitask_loss(model, batch, weights), expected / len(examples), atol=1e-5, rtol=1e-5)
    # a micro-batch with one task only still runs (and back-propagates through) every head
    only_sst = collate_tagged([e for e in examples if e[2] == 0], pad_id=0)
    multitask_loss(model, only_sst, weights).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_multitask_runs_end_to_end_and_the_export_re_fine_tunes(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data = tmp_path / "data"
    write_sentiment_files(data, "sst", sizes=(100, 30, 10))
    write_quora_files(data, sizes=(100, 30, 10))
    tok = tokenizer_dir(tmp_path / "tok")
    common = ["--data-dir", data, "--dropout", "0", "--batch-size", "16", "--lr", "3e-3", "--device", "cpu"]
    args = parse(multitask, *common, "--model", "scratch", "--tokenizer", tok, "--scratch-config", SCRATCH,
                 "--epochs", "3", "--task-weights", "sst=2,quora=1", "--out-dir", tmp_path / "mt")
    assert multitask.main(args) == 0
    history = [json.loads(line) for line in (tmp_path / "mt" / "metrics.jsonl").read_text().splitlines()]
    for key in ("sst_dev_accuracy", "sst_dev_macro_f1", "quora_dev_accuracy", "quora_dev_macro_f1"):
        assert all(key in h for h in history), key
    assert all(h["dev_mean_accuracy"] == pytest.approx((h["sst_dev_accuracy"] + h["quora_dev_accuracy"]) / 2)
               for h in history)
    result = json.loads((tmp_path / "mt" / "result.json").read_text())  # the best epoch's numbers
    best = max(history, key=lambda h: h["dev_mean_accuracy"])
    assert result["best_epoch"] == best["epoch"] and result["dev_mean_accuracy"] == best["dev_mean_accuracy"]
    log = caplog.text
    assert "sst train: 100 examples" in log and "quora train: 100 examples" in log
    for name, column in (("sst", "Predicted_Sentiment"), ("para", "Predicted_Is_Paraphrase")):
        written = read_predictions(tmp_path / "mt" / "predictions" / f"{name}-test-output.csv")
        assert written.column == column and len(written.ids) == 10
    export = tmp_path / "mt" / "model"
    assert (export / "head-sst.safetensors").is_file() and (export / "config.json").is_file()

    # the export is the multitask body: with 0 epochs the cloze paraphrase task predicts exactly as it did
    args = parse(paraphrase, *common, "--model", export, "--epochs", "0", "--out-dir", tmp_path / "same")
    assert paraphrase.main(args) == 0
    assert json.loads((tmp_path / "same" / "result.json").read_text())["best_epoch"] is None  # untrained
    assert (read_predictions(tmp_path / "same" / "predictions" / "para-dev-output.csv")
            == read_predictions(tmp_path / "mt" / "predictions" / "para-dev-output.csv"))
    args = parse(paraphrase, *common, "--model", export, "--epochs", "1", "--out-dir", tmp_path / "then-para")
    assert paraphrase.main(args) == 0
    assert json.loads((tmp_path / "then-para" / "metrics.jsonl").read_text())["epoch"] == 1
