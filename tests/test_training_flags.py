"""The trainer's flags (training/config.py): made from TrainConfig's declarations, filling TrainConfig, refusing at
parse time exactly the values TrainConfig refuses, carrying the task's --explicit-math."""
from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from training.config import TrainConfig, add_training_arguments, config_from_args

# set by code, or by the task's own flags
NOT_FLAGS = {"settings", "find_unused_parameters", "explicit_math", "data_files"}
DECLARED = {f.name: f.metadata["setting"] for f in fields(TrainConfig) if "setting" in f.metadata}
AT_LEAST = {name: meta["low"] for name, meta in DECLARED.items() if meta["low"] is not None}
CHOICES = {name: meta["choices"] for name, meta in DECLARED.items() if meta["choices"]}


class Refused(Exception):
    pass


class Strict(argparse.ArgumentParser):
    def error(self, message):
        raise Refused(message)


def parser(**defaults) -> argparse.ArgumentParser:
    p = Strict()
    add_training_arguments(p, **(dict(out_dir="runs/x") | defaults))
    return p


def test_flags_fill_the_config():
    p = argparse.ArgumentParser()
    add_training_arguments(p, epochs=7, out_dir="runs/x", lr=1e-4)
    cfg = config_from_args(p.parse_args(["--grad-accum", "2", "--no-amp", "--resume", "--warmup", "0.1"]))
    assert (cfg.epochs, cfg.out_dir, cfg.lr, cfg.grad_accum, cfg.amp, cfg.resume, cfg.warmup) == \
        (7, "runs/x", 1e-4, 2, False, True, 0.1)
    assert "--max-steps" in p.format_help() and "micro-batches" in p.format_help()
    with pytest.raises(TypeError, match="unknown defaults"):
        add_training_arguments(argparse.ArgumentParser(), epoch=3)
    with pytest.raises(ValueError, match="--batch-size"):
        TrainConfig(out_dir="x", batch_size=0)
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(out_dir="x", warmup=1.5)


def test_every_setting_is_declared_once_and_is_a_flag_with_its_help():
    help_text = parser().format_help()
    assert set(DECLARED) == {f.name for f in fields(TrainConfig)} - {"settings"}
    assert len(AT_LEAST) == 13 and set(CHOICES) == {"schedule", "select", "optimizer"}
    for name, meta in DECLARED.items():
        flag = "--no-amp" if name == "amp" else "--" + name.replace("_", "-")
        assert (flag in help_text) == (name not in NOT_FLAGS), flag
        if name not in NOT_FLAGS:
            words = " ".join(meta["help"].split()[:4])
            assert words in " ".join(help_text.split()), (flag, words)


def test_a_flag_refuses_what_the_config_refuses():
    """Every bounded setting: its lowest value parses, and (integers) one below is refused by the parser with a
    message naming the bound, as TrainConfig refuses it."""
    for name, low in AT_LEAST.items():
        flag = "--" + name.replace("_", "-")
        assert getattr(config_from_args(parser().parse_args([flag, str(low)])), name) == low
        if isinstance(getattr(TrainConfig(out_dir="x"), name), int):
            with pytest.raises(Refused, match=f"must be >= {low}"):
                parser().parse_args([flag, str(low - 1)])
            with pytest.raises(ValueError, match=f"^{flag} must be >= {low}, got {low - 1}$"):  # the same words
                TrainConfig(out_dir="x", **{name: low - 1})
    for name, allowed in CHOICES.items():
        with pytest.raises(Refused, match="invalid choice"):
            parser().parse_args([f"--{name}", "nonsense"])
        assert getattr(config_from_args(parser().parse_args([f"--{name}", allowed[-1]])), name) == allowed[-1]


def test_config_carries_the_tasks_explicit_math_and_records_every_flag():
    p = parser()
    p.add_argument("--explicit-math", action="store_true")  # the task's flag (cli/)
    p.add_argument("--pooling", default="last")
    cfg = config_from_args(p.parse_args(["--explicit-math"]))
    assert cfg.explicit_math is True and config_from_args(p.parse_args([])).explicit_math is False
    assert cfg.settings["pooling"] == "last" and cfg.settings["explicit_math"] is True
    assert config_from_args(parser().parse_args([])).explicit_math is False  # a task without the flag


def test_out_dir_is_required_without_a_task_default():
    p = Strict()
    add_training_arguments(p)
    with pytest.raises(Refused, match="--out-dir"):
        p.parse_args([])
