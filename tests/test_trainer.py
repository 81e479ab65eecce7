"""The trainer (training/trainer.py): exact resume after SIGKILL, best-k retention, early stopping, DDP and
gradient accumulation equivalence, the learning-rate schedule. The NaN guard: test_nan_guard.py; write failures
and resume errors: test_checkpointing.py."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import _train_script as script
from tests._fixtures import (
    Affine,
    Scripted,
    affine_data,
    assert_same_weights,
    cfg_for,
    collate_xy,
    metrics_of,
    mse,
)
from training.trainer import train

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "_train_script.py"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---- helpers -----------------------------------------------------------------------------------------------
def _start(out_dir: Path, *flags: str, launcher: tuple = ()) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1")
    cmd = [sys.executable, *launcher, str(SCRIPT), "--out-dir", str(out_dir), *flags]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, returncode: int = 0) -> None:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == returncode, f"exit {proc.returncode}, wanted {returncode}\n{out[-2000:]}\n{err[-4000:]}"


def _top(scores, k):
    """Epochs (1-based) of the k highest scores, ties to the earlier epoch."""
    return sorted(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k])


# ---- resume after SIGKILL equals an uninterrupted run --------------------------------------------------------
# 24 examples, micro-batch 2, 2 micro-batches per step: 6 optimizer steps per epoch, 3 epochs, dropout 0.1.
COMMON = ("--batch-size", "2", "--grad-accum", "2", "--epochs", "3")


@pytest.fixture(scope="module")
def kill_runs(tmp_path_factory):
    """The two killed runs are child processes; the uninterrupted run and the two resumes run in this process
    (while the children start), so a resume must restore everything itself: it cannot count on a fresh process."""
    root = tmp_path_factory.mktemp("kill")
    # mid-epoch: last.pt every 4 steps; killed in step 10 (loss_fn call 19) -> resumes at epoch 2, step 2 of 6
    # epoch boundary: last.pt at epoch ends only; killed in step 9 (call 17) -> resumes at epoch 2, step 0
    runs = {"full": ("--save-every", "4"), "mid": ("--save-every", "4"), "boundary": ("--save-every", "0")}
    kills = {"mid": ("--kill-at-call", "19"), "boundary": ("--kill-at-call", "17")}
    procs = {name: _start(root / name, *COMMON, *runs[name], *kill) for name, kill in kills.items()}
    threads = torch.get_num_threads()
    try:
        script.main(["--out-dir", str(root / "full"), *COMMON, *runs["full"]])
        for name in kills:
            _finish(procs[name], returncode=-9)  # SIGKILL: no cleanup, no final save
        positions = {}
        for name in kills:
            progress = torch.load(root / name / "last.pt", weights_only=True)["progress"]
            positions[name] = (progress["epoch"], progress["step_in_epoch"])
            script.main(["--out-dir", str(root / name), *COMMON, *runs[name], "--resume"])
    finally:
        torch.set_num_threads(threads)  # script.main sets one thread
    return root, positions


@pytest.mark.parametrize("case, position", [("mid", (1, 2)), ("boundary", (1, 0))])
def test_resume_after_sigkill_equals_uninterrupted(kill_runs, case, position):
    root, positions = kill_runs
    assert positions[case] == position  # (0-based epoch, optimizer steps done in it) when the kill came
    full = torch.load(root / "full" / "result.pt", weights_only=True)
    resumed = torch.load(root / case / "result.pt", weights_only=True)
    assert_same_weights(resumed["model"], full["model"])  # bit for bit
    assert metrics_of(root / case) == metrics_of(root / "full")
    assert len(metrics_of(root / "full")) == 3
    assert sorted(p.name for p in (root / case).glob("best-epoch*.pt")) == \
        sorted(p.name for p in (root / "full").glob("best-epoch*.pt"))
    assert not list((root / case).glob("*.tmp"))


def test_max_steps_stop_then_resume_equals_uninterrupted(tmp_path):
    """A run cut by max_steps mid-epoch continues exactly (same process: the RNG state is restored too)."""
    data, dev = script.synthetic_data(24, 1), script.dev_evaluate(script.synthetic_data(8, 2))
    cfg = dict(epochs=2, batch_size=4, lr=3e-3, warmup=0.2)
    full_model = script.tiny_model(0, dropout=0.1)
    full = train(full_model, data, script.collate, script.lm_loss, cfg_for(tmp_path / "a", **cfg), dev, "dev_score")
    model = script.tiny_model(0, dropout=0.1)
    cut = train(model, data, script.collate, script.lm_loss, cfg_for(tmp_path / "b", max_steps=4, **cfg), dev,
                "dev_score")
    assert cut.stop_reason == "max_steps" and cut.global_step == 4 and cut.history[-1]["partial_epoch"]
    assert cut.describe() == "best epoch 1"
    cut_metrics = metrics_of(tmp_path / "b")
    # killed after train() returned (in the task's final decode, say): --resume with the same flags ends the same
    again = train(script.tiny_model(0, dropout=0.1), data, script.collate, script.lm_loss,
                  cfg_for(tmp_path / "b", max_steps=4, resume=True, **cfg), dev, "dev_score")
    assert again.global_step == 4 and again.best_epoch == 1 and again.describe() == "best epoch 1"
    assert again.best_metric == cut.best_metric and metrics_of(tmp_path / "b") == cut_metrics
    model = script.tiny_model(0, dropout=0.1)  # a fresh process would rebuild the model like this
    rest = train(model, data, script.collate, script.lm_loss, cfg_for(tmp_path / "b", resume=True, **cfg), dev,
                 "dev_score")
    assert rest.stop_reason == "completed" and rest.global_step == full.global_step == 12
    assert_same_weights(model.state_dict(), full_model.state_dict())
    assert metrics_of(tmp_path / "b") == metrics_of(tmp_path / "a")
    line = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"epoch", "step", "train_loss", "dev_loss", "dev_score", "lr", "seconds", "tokens_per_s"} <= line.keys()
    assert line["tokens_per_s"] > 0 and line["step"] == 6
    assert full.history[-1]["train_loss"] < full.history[0]["train_loss"]  # it learns


def test_a_max_steps_evaluation_never_deletes_a_best_file_the_continued_run_needs(tmp_path):
    """--keep-best 1: the evaluation where max_steps stopped (mid epoch 2) beats epoch 1; resumed without the
    limit, epoch 2 ends worse, so epoch 1's file, which that evaluation had pushed out of the list, is the best."""
    dev = Scripted([0.5, 0.9, 0.1], tmp_path)  # epoch 1, the stop in epoch 2, epoch 2's end
    data, cfg = affine_data(8), dict(epochs=2, keep_best=1)  # 4 steps per epoch
    cut = train(Affine(), data, collate_xy, mse, cfg_for(tmp_path, max_steps=6, **cfg), dev, "dev_acc")
    assert cut.best_epoch == 2 and cut.stop_reason == "max_steps"
    model = Affine()
    rest = train(model, data, collate_xy, mse, cfg_for(tmp_path, resume=True, **cfg), dev, "dev_acc")
    assert rest.best_epoch == 1 and rest.best_checkpoint.endswith("best-epoch001.pt")
    assert_same_weights(model.state_dict(), dev.weights[0])


def test_evaluate_random_draws_do_not_change_training(tmp_path):
    data = script.synthetic_data(12, 1)
    runs = []
    for draws in (0, 1000):
        def evaluate(model):
            torch.rand(draws)  # e.g. a sampling decoder
            return {"dev": 0.0}
        model = script.tiny_model(0, dropout=0.1)
        result = train(model, data, script.collate, script.lm_loss,
                       cfg_for(tmp_path / str(draws), batch_size=4, keep_best=0), evaluate, "dev")
        runs.append(([s["loss"] for s in result.step_log], model.state_dict()))  # keep_best=0: the final weights
    assert runs[0][0] == runs[1][0]
    assert_same_weights(runs[0][1], runs[1][1])


# ---- best-k retention, early stopping, best weights loaded back ------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_keeps_exactly_the_k_best_and_loads_the_best(tmp_path, k):
    scores = [0.1, 0.5, 0.3, 0.7, 0.2, 0.6]
    evaluate = Scripted(scores, tmp_path)
    model = Affine()
    result = train(model, affine_data(8), collate_xy, mse, cfg_for(tmp_path, epochs=6, keep_best=k), evaluate,
                   "dev_acc")
    for epoch, seen in enumerate(evaluate.files_seen):  # what the directory held before each evaluation
        assert seen == [f"best-epoch{e + 1:03d}.pt" for e in _top(scores[:epoch], k)]
    kept = sorted(p.name for p in tmp_path.glob("best-epoch*.pt"))
    assert kept == [f"best-epoch{e + 1:03d}.pt" for e in _top(scores, k)]
    assert (result.best_epoch, result.best_metric) == (4, 0.7)
    assert result.best_checkpoint == str(tmp_path / "best-epoch004.pt")
    assert_same_weights(model.state_dict(), evaluate.weights[3])  # the weights after epoch 4, not the last
    assert not torch.equal(model.proj.weight, evaluate.weights[5]["proj.weight"])
    assert torch.load(result.best_checkpoint, weights_only=True)["metrics"] == {"dev_acc": 0.7, "dev_other": 1.0}
    assert [h["dev_acc"] for h in result.history] == scores


def test_early_stopping_after_patience(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="minigpt.trainer")
    evaluate = Scripted([0.5, 0.6, 0.4, 0.55, 0.3, 0.9], tmp_path)
    result = train(Affine(), affine_data(8), collate_xy, mse, cfg_for(tmp_path, epochs=6, patience=2), evaluate,
                   "dev_acc")
    assert result.stop_reason == "early stopping"
    said = [(r.name, r.getMessage()) for r in caplog.records]  # the trainer speaks through logging, nothing else
    assert ("minigpt.trainer", "early stopping: no dev improvement in 2 evaluations (best: epoch 2, dev_acc = "
            "0.6000)") in said
    assert [json.loads(m)["epoch"] for n, m in said if m.startswith("{")] == [1, 2, 3, 4]  # one line per epoch
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]  # epochs 3 and 4 did not beat epoch 2
    assert result.best_epoch == 2 and len(metrics_of(tmp_path)) == 4
    # resuming a stopped run stops again at once
    again = train(Affine(), affine_data(8), collate_xy, mse, cfg_for(tmp_path, epochs=6, patience=2, resume=True),
                  Scripted([0.0] * 6, tmp_path), "dev_acc")
    assert again.stop_reason == "early stopping" and again.step_log == [] and len(again.history) == 4


def test_without_evaluate_the_last_epochs_are_best(tmp_path):
    model = Affine()
    result = train(model, affine_data(8), collate_xy, mse, cfg_for(tmp_path, epochs=4, keep_best=2))
    assert sorted(p.name for p in tmp_path.glob("best-epoch*.pt")) == ["best-epoch003.pt", "best-epoch004.pt"]
    assert result.best_epoch == 4 and result.best_metric is None and not model.training
    last = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert_same_weights(model.state_dict(), last)


# ---- DDP and gradient accumulation equal one big batch -----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one_process(tmp_path):
    # 26 examples, global batch 8: steps of 8, 8, 8, 2 (the last split 1 + 1 over the two ranks)
    flags = ("--dropout", "0", "--batch-size", "8", "--n-train", "26", "--epochs", "2")
    launcher = ("-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={_free_port()}")
    ddp = _start(tmp_path / "ddp", *flags, launcher=launcher)
    script.main(["--out-dir", str(tmp_path / "one"), *flags])  # one process: this one, while DDP runs
    _finish(ddp)
    one = torch.load(tmp_path / "one" / "result.pt", weights_only=True)
    two = torch.load(tmp_path / "ddp" / "result.pt", weights_only=True)
    losses_one = torch.tensor([s["loss"] for s in one["result"]["step_log"]], dtype=torch.float64)
    losses_two = torch.tensor([s["loss"] for s in two["result"]["step_log"]], dtype=torch.float64)
    assert len(losses_one) == 8
    torch.testing.assert_close(losses_two, losses_one, atol=1e-6, rtol=0)
    assert_same_weights(two["model"], one["model"], atol=1e-5)
    assert [h["epoch"] for h in metrics_of(tmp_path / "ddp")] == [1, 2]  # rank 0 alone wrote the file


@pytest.mark.parametrize("n_train", [24, 30])  # 30: the last step has micro-batches of 4 and 2
def test_grad_accumulation_equals_one_big_batch(tmp_path, n_train):
    data = script.synthetic_data(n_train, 1)
    results = {}
    for batch_size, accum in [(4, 2), (8, 1)]:
        model = script.tiny_model(0, dropout=0.0)
        cfg = cfg_for(tmp_path / f"{batch_size}x{accum}", epochs=2, batch_size=batch_size, grad_accum=accum, lr=3e-3)
        result = train(model, data, script.collate, script.lm_loss, cfg)
        results[accum] = ([s["loss"] for s in result.step_log], model.state_dict())
    assert len(results[1][0]) == 2 * -(-n_train // 8)
    torch.testing.assert_close(torch.tensor(results[2][0]), torch.tensor(results[1][0]), atol=1e-6, rtol=0)
    assert_same_weights(results[2][1], results[1][1], atol=1e-5)


# ---- schedule, contract checks ------------------------------------------------------------------------------
@pytest.mark.parametrize("warmup, warmup_steps", [(0.25, 3), (5, 5), (0.0, 0)])
def test_learning_rate_is_linear_warmup_then_linear_decay(tmp_path, warmup, warmup_steps):
    total, peak = 12, 1e-2  # 8 examples, batch 2: 4 steps per epoch, 3 epochs
    result = train(Affine(), affine_data(8), collate_xy, mse, cfg_for(tmp_path, warmup=warmup, lr=peak))
    for s, entry in enumerate(result.step_log):  # s = optimizer steps taken before this one
        expected = peak * (s / warmup_steps if s < warmup_steps else (total - s) / (total - warmup_steps))
        assert entry["lr"] == pytest.approx(expected, abs=1e-12), s
    assert len(result.step_log) == total
    assert [h["lr"] for h in result.history] == [result.step_log[i]["lr"] for i in (3, 7, 11)]


def test_evaluate_needs_a_metric_it_returns(tmp_path):
    with pytest.raises(ValueError, match="metric="):
        train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path), Scripted([0.1] * 3, tmp_path))
    with pytest.raises(ValueError, match="'dev_f1'.*dev_acc"):
        train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path), Scripted([0.1] * 3, tmp_path), "dev_f1")
    with pytest.raises(TypeError, match="must return numbers.*'dev_acc': 'high'"):
        train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path / "c"), lambda m: {"dev_acc": "high"},
              "dev_acc")


def test_frozen_parameters_stay_fixed(tmp_path):
    model = Affine()
    model.proj.bias.requires_grad_(False)  # as LoRA and prefix-tuning freeze the base model
    bias = model.proj.bias.clone()
    weight = model.proj.weight.clone()
    train(model, affine_data(8), collate_xy, mse, cfg_for(tmp_path))
    assert torch.equal(model.proj.bias, bias) and not torch.equal(model.proj.weight, weight)
    model.proj.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad"):
        train(model, affine_data(8), collate_xy, mse, cfg_for(tmp_path / "b"))
