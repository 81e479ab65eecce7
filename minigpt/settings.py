"""A setting is declared once: a dataclass field that carries its default, its help and its range.

    @dataclass(frozen=True)
    class DecodeConfig:
        top_p: float = setting(0.9, "sample from the smallest set of tokens holding this mass", low=0, high=1,
                               low_open=True)

        def __post_init__(self):
            check_settings(self)            # the range, checked where a value enters in code ...

    add_settings(parser, DecodeConfig)       # ... and the flag --top-p, derived from the same declaration:
                                             #     its type refuses 0 or 1.5 when the command line is parsed
    cfg = settings_from_args(DecodeConfig, args)

The command line and the code thus share one default, one help text and one range per setting, and a bad value
is refused with the same words wherever it enters ("--top-p must be in (0, 1], got 1.5"). Like minGPT's
`merge_from_args` or litgpt's jsonargparse, the flags are made from the config, never written a second time.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import MISSING, Field, field, fields


def setting(default=MISSING, help: str = "", *, low=None, high=None, low_open: bool = False,
            high_open: bool = False, choices=None, flag: str | None = None, kind=None, parse=None, check=None,
            negate: bool = False, nargs=None, metavar: str | None = None, cli: bool = True,
            used_by: tuple[str, ...] | None = None) -> Field:
    """A dataclass field declared with everything its command-line flag needs.

    low/high (open or closed) bound a number; choices lists the allowed values; flag names the option when it
    is not --field-name; kind turns the flag's text into the value: int, float, str (when the default does not
    show it, e.g. None) or a function such as directory or device_name below; parse(text) checks a setting kept
    as text (raising ValueError saying what is wrong); check(value) is a rule beyond a range, raising
    ValueError; a bool setting is an on/off switch (negate=True: a --no-... switch that turns a True default
    off); cli=False keeps the field out of the command line (set by code only); used_by names the choices of
    the config's selector that read this setting (DecodeConfig: the decoders), and its help starts with them.
    No default: a required flag.
    """
    meta = dict(help=help, low=low, high=high, low_open=low_open, high_open=high_open, choices=choices,
                flag=flag, kind=kind, parse=parse, check=check, negate=negate, nargs=nargs, metavar=metavar,
                cli=cli, used_by=used_by)
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"setting": meta})
    return field(default=default, metadata={"setting": meta})


def declared(cls_or_obj) -> list[Field]:
    """The fields of a config dataclass that were declared with setting()."""
    return [f for f in fields(cls_or_obj) if "setting" in f.metadata]


def flag_of(f: Field) -> str:
    meta = f.metadata["setting"]
    if meta["flag"]:
        return meta["flag"]
    return ("--no-" if meta["negate"] else "--") + f.name.replace("_", "-")


def default_of(f: Field):
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def wanted(meta: dict) -> str | None:
    """The range in words: "in (0, 1]", ">= 1", "< 5"; None where the setting has no bounds."""
    low, high = meta["low"], meta["high"]
    if low is not None and high is not None:
        return f"in {'(' if meta['low_open'] else '['}{low}, {high}{')' if meta['high_open'] else ']'}"
    if low is not None:
        return f"{'>' if meta['low_open'] else '>='} {low}"
    if high is not None:
        return f"{'<' if meta['high_open'] else '<='} {high}"
    return None


def problem(meta: dict, value) -> str | None:
    """What is wrong with a value of this setting ("must be >= 1, got 0"), or None when it is allowed."""
    if value is None or isinstance(value, bool):
        return None
    if meta["choices"] is not None and value not in meta["choices"]:
        return f"must be one of {', '.join(map(str, meta['choices']))}, got {value!r}"
    if isinstance(value, (int, float)) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if meta.get("check") is not None:
        try:
            meta["check"](value)
        except ValueError as e:
            return str(e)
    if not isinstance(value, (int, float)):
        return None
    low, high = meta["low"], meta["high"]
    too_low = low is not None and (value <= low if meta["low_open"] else value < low)
    too_high = high is not None and (value >= high if meta["high_open"] else value > high)
    return f"must be {wanted(meta)}, got {value}" if too_low or too_high else None


def check_settings(config) -> None:
    """Refuse a config whose declared settings are out of range: a ValueError naming the flag. Call it in the
    dataclass's __post_init__, so a value set in code is checked like one given on the command line."""
    for f in declared(config):
        meta, value = f.metadata["setting"], getattr(config, f.name)
        values = value if isinstance(value, (list, tuple)) and meta["nargs"] else [value]
        for v in values:
            if meta["parse"] is not None and isinstance(v, str):
                try:
                    meta["parse"](v)
                except ValueError as e:
                    raise ValueError(f"{flag_of(f)}: {e}") from None
            why = problem(meta, v)
            if why:
                raise ValueError(f"{flag_of(f)} {why}" if why.startswith("must") else f"{flag_of(f)} {v}: {why}")


def argument_type(meta: dict, kind):
    """The argparse type of a setting: text -> value, refused with argparse's one line when out of range."""
    def parse(text: str):
        if meta["parse"] is not None:
            try:
                meta["parse"](text)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
            return text
        if kind in (int, float, str):
            value = kind(text)  # a ValueError here: argparse says "invalid int value: 'x'"
        else:
            try:
                value = kind(text)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        why = problem(meta, value)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    parse.__name__ = kind.__name__ if meta["parse"] is None else meta["parse"].__name__
    return parse


def number(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse type for a flag declared without setting(): kind(text) (int or float), finite, within the
    bounds (open or closed); else argparse's one line ("argument --lr: must be >= 0, got -1")."""
    meta = dict(low=low, high=high, low_open=low_open, high_open=high_open, choices=None, parse=None, check=None)
    return argument_type(meta, kind)


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
    if not str(text).strip():
        raise ValueError("is empty; name a directory (. for the current one, if it is empty)")
    return os.path.expanduser(text)


def device_name(text: str) -> str:
    """--device: auto, cpu, cuda, cuda:N or mps; cuda and mps only where this torch can use them."""
    import torch  # here, not at the top: `run.py --help` stays fast

    if text in ("auto", "cpu"):
        return text
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2]
        if index and not index.isdigit():
            raise ValueError(f"expected cuda or cuda:N, got {text!r}")
        if not torch.cuda.is_available():
            raise ValueError(f"{text}: no CUDA GPU is visible to this torch ({torch.__version__}); use --device "
                             "cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"{text}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
        return text
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("mps: the Apple MPS backend is not available here; use --device cpu or auto")
        return text
    raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")


def device_type(text: str) -> str:
    """device_name as an argparse type for a flag declared without setting()."""
    try:
        return device_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_settings(parser, cls, defaults: dict | None = None, skip=(), title: str | None = None):
    """Add a flag for every declared setting of `cls` to the parser (in an argument group titled `title`);
    `defaults` replaces some defaults for this command (a task's own epochs or lr); `skip` leaves fields out."""
    defaults = dict(defaults or {})
    names = {f.name for f in declared(cls)}
    unknown = set(defaults) - names
    if unknown:
        raise TypeError(f"add_settings({cls.__name__}): unknown defaults {sorted(unknown)}")
    group = parser.add_argument_group(title) if title else parser
    for f in declared(cls):
        meta = f.metadata["setting"]
        if not meta["cli"] or f.name in skip:
            continue
        default = defaults.get(f.name, default_of(f))
        help = ("/".join(meta["used_by"]) + ": " if meta["used_by"] else "") + meta["help"]
        common = dict(dest=f.name, default=default, help=help)
        if isinstance(default_of(f), bool) and meta["kind"] is None:
            group.add_argument(flag_of(f), action="store_false" if meta["negate"] else "store_true", **common)
            continue
        if default is MISSING:
            common |= dict(required=True, default=None)
        elif default is not None and default != "":
            common["help"] += " (default: %(default)s)"
        kind = meta["kind"] or (type(default_of(f)) if default_of(f) not in (None, MISSING) else str)
        if isinstance(default, (list, tuple)):
            kind = type(default[0]) if default else str
        extra = {} if meta["choices"] is None else dict(choices=meta["choices"])
        extra |= {k: meta[k] for k in ("nargs", "metavar") if meta[k] is not None}
        if meta["choices"] is None:
            extra["type"] = argument_type(meta, kind)
        group.add_argument(flag_of(f), **common, **extra)
    return group


def settings_from_args(cls, args: argparse.Namespace, **values):
    """cls built from the parsed flags of its declared settings (those the parser has), plus `values`."""
    for f in declared(cls):
        if f.name not in values and hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(default_of(f), tuple) and value is not None else value
    return cls(**values)
