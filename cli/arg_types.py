"""argparse types that refuse a bad value when the command line is parsed, naming the flag (argparse adds
"argument --lr:" to the message), so that no run starts, reads data or trains with a setting it will reject later.

    parser.add_argument("--batch-size", type=number(int, 1))              # an integer >= 1
    parser.add_argument("--dropout", type=number(float, 0, 1, high_open=True))  # a finite float in [0, 1)
    parser.add_argument("--device", type=device_name)                      # auto, cpu, cuda[:N], mps: available here
    parser.add_argument("--task-weights", type=checked_text(parse_task_weights))  # the text, once parsed without error
    parser.add_argument("--out-dir", type=directory)                        # a path, not empty; ~ is the home
"""
from __future__ import annotations

import argparse
import math
import os


def number(kind, low=None, high=None, low_open=False, high_open=False):
    """kind(text) (int or float), finite, within the bounds (open or closed); else an ArgumentTypeError."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    if low is not None and high is not None:
        what = f"in {left}{low}, {high}{right}"
    elif low is not None:
        what = f"{'>' if low_open else '>='} {low}"
    elif high is not None:
        what = f"{'<' if high_open else '<='} {high}"
    else:
        what = "a finite number"

    def parse(text: str):
        value = kind(text)  # a ValueError here: argparse says "invalid int value: 'x'"
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type: "invalid int value"
    return parse


def checked_text(check):
    """An argparse type that keeps the text as given once check(text) has accepted it; check's ValueError (which
    says what is wrong) becomes argparse's one-line error."""
    def parse(text: str) -> str:
        try:
            check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    parse.__name__ = check.__name__
    return parse


def directory(text: str) -> str:
    """A directory to write into: not empty (that would be the current directory), with ~ expanded here, so that
    every later use of the value (the lock, the run's files) means the same directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; name a directory (. for the current one, if it is empty)")
    return os.path.expanduser(text)


def device_name(text: str) -> str:
    """--device: auto, cpu, cuda, cuda:N or mps; cuda and mps only where this torch can use them."""
    import torch  # here, not at the top: `run.py --help` stays fast

    if text in ("auto", "cpu"):
        return text
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2]
        if index and not index.isdigit():
            raise argparse.ArgumentTypeError(f"expected cuda or cuda:N, got {text!r}")
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is visible to this torch "
                                             f"({torch.__version__}); use --device cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
        return text
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError("mps: the Apple MPS backend is not available here; use --device "
                                             "cpu or auto")
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
