"""minigpt/settings.py: one declaration gives the flag, its default, its help and its range check."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from minigpt.settings import add_settings, check_settings, setting, settings_from_args


def even(text: str) -> None:
    if int(text) % 2:
        raise ValueError(f"an even number, got {text}")


@dataclass(frozen=True)
class Example:
    top_p: float = setting(0.9, "probability mass kept", low=0, high=1, low_open=True)
    beams: int = setting(5, "beams", low=1)
    mode: str = setting("fast", "how", choices=("fast", "slow"))
    batch_size: int = setting(0, "prompts per batch (0: all)", low=0, flag="--decode-batch-size")
    amp: bool = setting(True, "turn bf16 off", negate=True)
    mean: bool = setting(False, "use the mean")
    dropout: float | None = setting(None, "override", low=0, high=1, high_open=True, kind=float)
    pairs: str = setting("2", "an even count, kept as text", parse=even)
    targets: tuple = setting(("a", "b"), "names", nargs="+")
    internal: int = setting(3, "set by code", cli=False)

    def __post_init__(self):
        check_settings(self)


class Refused(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise Refused(message)


def parse(*argv):
    parser = Parser()
    add_settings(parser, Example, defaults=dict(beams=4))
    return parser, parser.parse_args(list(argv))


def test_flags_come_from_the_declarations_with_their_defaults():
    parser, args = parse()
    cfg = settings_from_args(Example, args)
    assert cfg == Example(beams=4)  # the command's own default replaces the declared one
    flags = {o for a in parser._actions for o in a.option_strings}
    assert {"--top-p", "--beams", "--mode", "--decode-batch-size", "--no-amp", "--mean", "--dropout", "--pairs",
            "--targets"} <= flags
    assert "--internal" not in flags


def test_values_from_the_command_line():
    _, args = parse("--top-p", "0.5", "--decode-batch-size", "2", "--no-amp", "--mean", "--dropout", "0.1",
                    "--targets", "x", "y", "z", "--pairs", "4")
    cfg = settings_from_args(Example, args)
    assert (cfg.top_p, cfg.batch_size, cfg.amp, cfg.mean, cfg.dropout, cfg.targets, cfg.pairs) == \
        (0.5, 2, False, True, 0.1, ("x", "y", "z"), "4")


@pytest.mark.parametrize("argv, message", [
    (["--top-p", "0"], "argument --top-p: must be in (0, 1], got 0"),
    (["--top-p", "nan"], "must be a finite number"),
    (["--beams", "0"], "argument --beams: must be >= 1, got 0"),
    (["--beams", "x"], "invalid int value"),
    (["--mode", "medium"], "invalid choice"),
    (["--decode-batch-size", "-1"], "argument --decode-batch-size: must be >= 0"),
    (["--dropout", "1"], "must be in [0, 1)"),
    (["--pairs", "3"], "an even number, got 3"),
])
def test_the_command_line_refuses_what_the_declaration_forbids(argv, message):
    with pytest.raises(Refused) as refused:
        parse(*argv)
    assert message in str(refused.value)


@pytest.mark.parametrize("values, message", [
    (dict(top_p=1.5), "--top-p must be in (0, 1], got 1.5"),
    (dict(beams=float("nan")), "--beams must be a finite number"),
    (dict(mode="medium"), "--mode must be one of fast, slow"),
    (dict(batch_size=-1), "--decode-batch-size must be >= 0"),
    (dict(pairs="5"), "--pairs: an even number, got 5"),
])
def test_code_is_refused_with_the_same_words(values, message):
    with pytest.raises(ValueError) as refused:
        Example(**values)
    assert message in str(refused.value)


def test_an_unknown_default_is_a_programming_error():
    with pytest.raises(TypeError, match="unknown defaults"):
        add_settings(Parser(), Example, defaults=dict(bogus=1))
