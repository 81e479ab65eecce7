"""--resume continues only the same run: every flag of every task is compared (the parsers are enumerated, so a
flag added later is covered without touching this file), and the data files' contents; one run per --out-dir
(the lock); a failed checkpoint write leaves no partial file; dev sonnets are paired with prompts by number."""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import run
from tasks.data import DataError
from tasks.sonnet import load_sonnet_data
from tests._fixtures import Affine, Scripted, affine_data, cfg_for, collate_xy, mse, sonnet_file, write_fixture
from tests._task_fixtures import SCRATCH, tokenizer_dir, write_sentiment_files
from training.checkpointing import CheckpointError, load_file
from training.config import parsed_settings
from training.out_dir import LOCK, OutDirLockedError, acquire, release
from training.run_settings import IGNORED, setting_differences
from training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("sonnet", "sentiment", "paraphrase", "multitask")
CANDIDATES = ("2", "0.5", "1", "0", "3", "7", "cpu", "n_layer=1", "sst=2")  # tried in order: the first the flag
# accepts and that differs


def task_parser(task: str) -> argparse.ArgumentParser:
    parser = run.build_parser([task])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[task]


def parses(parser, argv):
    try:
        return parser.parse_args(argv)
    except SystemExit:
        return None


def changed_argv(parser, action) -> list[str]:
    """A command line that sets `action`'s flag to a value other than its default."""
    flag = action.option_strings[-1]
    default = parser.parse_args([])
    if action.nargs == 0:  # store_true / store_false
        return [flag]
    if action.choices:
        return [flag, next(str(c) for c in action.choices if c != getattr(default, action.dest))]
    if action.type is None:  # free text: a path, a name, key=value pairs
        return [flag, "another-value"] if action.nargs is None else [flag, "another", "value"]
    for value in CANDIDATES:
        args = parses(parser, [flag, value])
        if args is not None and getattr(args, action.dest) != getattr(default, action.dest):
            return [flag, value]
    raise AssertionError(f"{flag}: found no other valid value to try")


def record(settings: dict) -> dict:
    return {"settings": settings, "files": {}, "n_train": 10}


def every_flag():
    for task in TASKS:
        parser = task_parser(task)
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                yield pytest.param(task, action.dest, id=f"{task}-{action.option_strings[-1]}")


@pytest.mark.parametrize("task, dest", list(every_flag()))
def test_resume_compares_every_flag_except_those_that_cannot_change_the_result(task, dest):
    parser = task_parser(task)
    action = next(a for a in parser._actions if a.dest == dest and a.option_strings)
    before = parsed_settings(parser.parse_args([]))
    after = parsed_settings(parser.parse_args(changed_argv(parser, action)))
    assert before[dest] != after[dest]
    differences = setting_differences(record(before), record(after))
    if dest in IGNORED:
        assert differences == []
    else:
        assert len(differences) == 1 and differences[0].startswith(f"{dest}: "), differences


# ---- through the command line --------------------------------------------------------------------------------
@pytest.fixture
def sst(tmp_path):
    data = write_sentiment_files(tmp_path / "data", sizes=(16, 8, 8))
    tok = tokenizer_dir(tmp_path / "tok")

    def argv(*extra):
        return ["sentiment", "--data-dir", str(data), "--out-dir", str(tmp_path / "out"), "--model", "scratch",
                "--scratch-config", SCRATCH, "--tokenizer", str(tok), "--device", "cpu", "--epochs", "2",
                "--batch-size", "8", "--eval-batch-size", "8", *extra]
    return argv, data


def test_sentiment_resume_refuses_changed_settings_listing_all_of_them(sst, capsys):
    argv, data = sst
    assert run.main(argv("--max-steps", "1")) == 0
    capsys.readouterr()
    assert run.main(argv("--resume", "--pooling", "mean", "--dropout", "0", "--max-length", "16",
                         "--rdrop", "1")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    for change in ("pooling: 'last' -> 'mean'", "dropout: None -> 0.0", "max_length: 512 -> 16",
                   "rdrop: 0.0 -> 1.0"):
        assert change in err, err
    # a changed data file (same size) is refused too, naming it
    dev = data / "ids-sst-dev.csv"
    dev.write_text(dev.read_text().replace(" the ", " teh "))
    assert run.main(argv("--resume")) == 1
    assert "file ids-sst-dev.csv: contents changed" in capsys.readouterr().err


def test_resume_accepts_what_cannot_change_the_result(sst, monkeypatch):
    argv, _ = sst
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # --device auto below means the CPU here too
    monkeypatch.setattr("torch.backends.mps.is_available", lambda: False)
    assert run.main(argv("--max-steps", "1", "--save-every", "1")) == 0
    assert run.main(argv("--resume", "--max-steps", "2", "--explicit-math")) == 0  # the equations written out
    assert run.main(argv("--resume", "--device", "auto")) == 0  # another device flag, no --max-steps


# ---- the lock on --out-dir -----------------------------------------------------------------------------------
def hold_lock(out_dir: Path) -> subprocess.Popen:
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from training.out_dir import acquire; "
            f"acquire({str(out_dir)!r}); print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_is_refused_naming_the_holder_then_a_killed_holder_is_taken_over(tmp_path, capsys):
    out = tmp_path / "out"
    holder = hold_lock(out)
    try:
        with pytest.raises(OutDirLockedError, match=f"in use by another run \\(pid {holder.pid}"):
            acquire(out)
        code = run.main(["sonnet", "--out-dir", str(out), "--data-dir", str(tmp_path / "nowhere")])
        assert code == 1 and f"pid {holder.pid}" in capsys.readouterr().err  # before the data is even looked at
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK).read_text().strip() == str(holder.pid)  # the stale file of the killed run
    acquire(out)  # the kernel released the killed process's lock: taken over
    try:
        assert (out / LOCK).read_text().strip() == str(__import__("os").getpid())
    finally:
        release(out)
    assert (out / LOCK).read_text() == ""


def test_a_run_takes_its_lock_once(tmp_path):
    """run.py locks --out-dir before the task starts and nothing below takes it again: a second acquire in the same
    process is a bug, refused, so every task run in these tests proves the lock is taken once."""
    acquire(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="already locked by this process"):
            acquire(tmp_path)
    finally:
        release(tmp_path)
    acquire(tmp_path)  # released: free again
    release(tmp_path)


def test_two_runs_at_once_one_is_refused(tmp_path, capsys):
    """The first run (a child process) trains for far longer than the test lasts (it is killed at the end), so it
    holds the lock while the second (in this process) starts, however slow the machine is."""
    data = write_fixture(tmp_path / "data")
    tok = tokenizer_dir(tmp_path / "tok")
    argv = ["sonnet", "--data-dir", str(data), "--out-dir", str(tmp_path / "out"), "--model", "scratch",
            "--scratch-config", "n_layer=1,n_head=1,n_embd=16", "--tokenizer", str(tok), "--epochs", "100000",
            "--skip-test", "--decoder", "greedy", "--max-new-tokens", "2", "--dev-limit", "1", "--device", "cpu"]
    first = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "out" / LOCK).is_file() or not (tmp_path / "out" / LOCK).read_text():
            assert time.time() < deadline and first.poll() is None, "the first run never took the lock"
            time.sleep(0.05)
        code = run.main(argv)
        assert first.poll() is None, "the first run ended before the second started: the test proves nothing"
    finally:
        first.kill()
        first.communicate()
    err = capsys.readouterr().err
    assert code == 1 and f"pid {first.pid}" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


# ---- a write that fails half-way -----------------------------------------------------------------------------
def test_a_writer_failing_mid_write_leaves_no_partial_file_and_the_last_checkpoint_loads(tmp_path, monkeypatch):
    train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path, epochs=2, max_steps=2),
          Scripted([0.1], tmp_path), "dev_acc")  # epoch 1 of 2 (2 steps), then stopped
    before = load_file(tmp_path / "last.pt")
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):  # as torch reports a full disk: RuntimeError after a partial write
        f.write(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5312 vs 5206")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError) as info:
        train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path, epochs=2, resume=True),
              Scripted([0.2], tmp_path), "dev_acc")
    monkeypatch.setattr(torch, "save", real_save)
    assert f"could not write {tmp_path}" in str(info.value) and "unexpected pos" in str(info.value)
    assert not list(tmp_path.glob("*.tmp"))
    after = load_file(tmp_path / "last.pt")
    assert after["progress"] == before["progress"]
    assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items())


# ---- sonnets: paired by number ---------------------------------------------------------------------------------
def test_true_dev_sonnets_are_paired_with_the_prompts_by_number(tmp_path):
    data = write_fixture(tmp_path / "data")
    true_path = data / "TRUE_sonnets_held_out_dev.txt"
    from tasks.data import read_sonnets, sonnet_numbers

    numbered = list(zip(sonnet_numbers(true_path), read_sonnets(true_path)))
    in_order = load_sonnet_data(data)
    sonnet_file(true_path, numbered[::-1])  # the same sonnets, listed in reverse
    reversed_order = load_sonnet_data(data)
    assert reversed_order[2] == in_order[2]
    for prompt, true in zip(in_order[1], in_order[2]):
        assert true.startswith(prompt)  # each prompt is the start of its own sonnet
    sonnet_file(true_path, numbered[:-1] + [(99, numbered[-1][1])])
    with pytest.raises(DataError, match=f"sonnet {numbered[-1][0]} has a prompt but no true sonnet"):
        load_sonnet_data(data)
    sonnet_file(true_path, numbered + [(99, numbered[-1][1])])
    with pytest.raises(DataError, match="sonnet 99 is in .* but has no prompt"):
        load_sonnet_data(data)
