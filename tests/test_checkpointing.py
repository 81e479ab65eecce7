"""The run's files (training/checkpointing.py) under a training run: write failures leave the earlier
checkpoints intact with one clear error; --resume refuses a missing, damaged or foreign checkpoint and tidies
files written after the last one."""
from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from tests import _train_script as script
from tests._fixtures import Affine, Scripted, affine_data, cfg_for, collate_xy, metrics_of, mse
from training.checkpointing import CheckpointError
from training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---- write failures --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("failing_call, name", [(3, "best-epoch002.pt"), (4, "last.pt")])
def test_disk_full_gives_clear_error_and_keeps_earlier_checkpoints(tmp_path, monkeypatch, failing_call, name):
    real_save, calls = torch.save, 0

    def save(obj, f, *args, **kwargs):  # saves per epoch: best-epochE.pt, then last.pt
        nonlocal calls
        calls += 1
        if calls == failing_call:
            f.write(b"partial")  # a half-written file, as a full disk leaves it
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(CheckpointError) as info:
        train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path), Scripted([0.1, 0.2, 0.3], tmp_path),
              "dev_acc")
    assert str(tmp_path / name) in str(info.value) and "No space left on device" in str(info.value)
    monkeypatch.setattr(torch, "save", real_save)
    last = torch.load(tmp_path / "last.pt", weights_only=True)  # the epoch-1 checkpoint, complete
    assert last["progress"]["epoch"] == 1
    torch.load(tmp_path / "best-epoch001.pt", weights_only=True)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_directory(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match="metrics.jsonl.*Permission denied"):
            train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path))
    finally:
        tmp_path.chmod(0o755)


# ---- resume errors ---------------------------------------------------------------------------------------------
def test_resume_without_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=f"--resume: no checkpoint at {tmp_path / 'last.pt'}"):
        train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path, resume=True))


def test_resume_refuses_another_model_size_and_changed_settings(tmp_path):
    data = script.synthetic_data(8, 1)
    train(script.tiny_model(0), data, script.collate, script.lm_loss, cfg_for(tmp_path, epochs=2, max_steps=1))
    smaller = script.tiny_model(0, n_embd=32)
    with pytest.raises(CheckpointError, match=r"different model[\s\S]*wte.weight: checkpoint \[300, 64\] vs model "
                                              r"\[300, 32\]"):
        train(smaller, data, script.collate, script.lm_loss, cfg_for(tmp_path, epochs=2, resume=True))
    with pytest.raises(CheckpointError, match="other settings.*seed: 3 -> 4; batch_size: 2 -> 4"):
        train(script.tiny_model(0), data, script.collate, script.lm_loss,
              cfg_for(tmp_path, epochs=2, resume=True, batch_size=4, seed=4))
    with pytest.raises(CheckpointError, match="exists: pass --resume"):  # a fresh run never overwrites a run
        train(script.tiny_model(0), data, script.collate, script.lm_loss, cfg_for(tmp_path, epochs=2))


def test_resume_from_a_damaged_or_foreign_file(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 cut short")  # a truncated zip, as a crash mid-copy leaves
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {tmp_path / 'last.pt'}"):
        train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path, resume=True))
    torch.save({"model": Affine().state_dict()}, tmp_path / "last.pt")  # e.g. a best-epoch file renamed
    with pytest.raises(CheckpointError, match="not a trainer checkpoint"):
        train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path, resume=True))


def test_resume_tidies_files_written_after_the_last_checkpoint(tmp_path):
    """A crash between writing metrics.jsonl / best files and last.pt leaves extras; resume removes them."""
    train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path, max_steps=4))  # 2 epochs of 2 steps
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 3, "train_loss": 0.0}) + "\n")
    (tmp_path / "best-epoch007.pt").write_bytes(b"stale")
    result = train(Affine(), affine_data(4), collate_xy, mse, cfg_for(tmp_path, resume=True))
    assert [h["epoch"] for h in metrics_of(tmp_path)] == [1, 2, 3] and result.global_step == 6
    assert sorted(p.name for p in tmp_path.glob("best-epoch*.pt")) == [f"best-epoch00{e}.pt" for e in (1, 2, 3)]
