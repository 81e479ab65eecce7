#!/usr/bin/env python
"""minigpt's command line. Every subcommand has its own --help:

  python run.py download gpt2            fetch a public GPT-2 checkpoint (gpt2, gpt2-medium, gpt2-large, gpt2-xl)
  python run.py download data            fetch the public data sets into --data-dir
  python run.py generate --prompt "..."  continue a prompt with any decoder
  python run.py sonnet --decoder contrastive
                                         fine-tune on Shakespeare's sonnets, write and score held-out sonnets
  python run.py sentiment --dataset sst  sentiment classification (SST 5-class, CFIMDB binary)
  python run.py paraphrase               Quora paraphrase detection as a yes/no cloze task
  python run.py multitask                sentiment + paraphrase in one model
  python run.py sweep --grid lr=1e-5,5e-5 --out-dir runs/lr sonnet ...
                                         a hyperparameter search: one run per setting, ranked
  python run.py bench model|decoding|train
                                         speed against the reference implementations
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading


# Each subcommand is a module with add_arguments(parser) and main(args). They are imported here, by name, inside
# small functions: only the chosen one is imported, because the tasks import torch (seconds) and `run.py --help`
# should answer at once.
def download_command():
    from cli import download
    return download


def generate_command():
    from cli import generate
    return generate


def sonnet_command():
    from tasks import sonnet
    return sonnet


def sentiment_command():
    from tasks import sentiment
    return sentiment


def paraphrase_command():
    from tasks import paraphrase
    return paraphrase


def multitask_command():
    from tasks import multitask
    return multitask


def compare_command():
    from cli import compare
    return compare


def sweep_command():
    from cli import sweep
    return sweep


def bench_model():
    from bench import model  # training and inference tokens/s vs transformers
    return model


def bench_decoding():
    from bench import decoding  # every decoder vs transformers' generate; chrF and MBR vs sacrebleu
    return decoding


def bench_train():
    from bench import train  # full fine-tuning, LoRA, DoRA, prefix vs transformers + peft
    return train


# subcommand -> (the function importing its module, one-line help)
COMMANDS = {
    "download": (download_command, "fetch GPT-2 checkpoints or the public data sets"),
    "generate": (generate_command, "continue a prompt with greedy, sampling, contrastive, beam, MBR or ensemble "
                                   "decoding"),
    "sonnet": (sonnet_command, "fine-tune on sonnets, generate held-out sonnets, score chrF"),
    "sentiment": (sentiment_command, "sentiment classification on SST or CFIMDB"),
    "paraphrase": (paraphrase_command, "paraphrase detection on Quora (cloze yes/no)"),
    "multitask": (multitask_command, "train sentiment and paraphrase together, then optionally re-fine-tune"),
    "compare": (compare_command, "is a gap real? scores with 95% intervals and paired p-values (chrF, accuracy, "
                                 "F1)"),
    "sweep": (sweep_command, "hyperparameter search: one resumable run of a task per setting, ranked by dev metric"),
}
BENCHMARKS = {
    "model": (bench_model, "benchmark: training and inference tokens/s vs transformers"),
    "decoding": (bench_decoding, "benchmark: every decoder vs transformers' generate; chrF and MBR vs sacrebleu"),
    "train": (bench_train, "benchmark: full fine-tuning, LoRA, DoRA, prefix vs transformers + peft"),
}

# tasks that write into --out-dir: one run per directory at a time (training/out_dir.py)
LOCKS_OUT_DIR = ("sonnet", "sentiment", "paraphrase", "multitask")


class OneLineErrors(argparse.ArgumentParser):
    """A mistake on the command line is one line naming the flag, and exit status 1 like every other user error:
    `run.py sonnet: error: argument --lr: must be >= 0, got -1 (see run.py sonnet --help)`."""

    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to a flag's help, except where X is None, an on/off flag's False, or the help
    already names its default."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_subcommand(sub, name: str, import_command, help_text: str, load: bool):
    # argparse %-formats a help text (for %(default)s): a literal % is written %%
    p = sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text,
                       formatter_class=DefaultsFormatter)
    if load:  # import only what the chosen subcommand needs (torch imports are slow)
        module = import_command()
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return p


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    positional = [a for a in argv if not a.startswith("-")]
    chosen = positional[0] if positional else None
    chosen_benchmark = positional[1] if len(positional) > 1 and chosen == "bench" else None
    for name, (import_command, help_text) in COMMANDS.items():
        add_subcommand(sub, name, import_command, help_text, load=chosen == name)
    bench = sub.add_parser("bench", help="speed against the reference implementations (ratios)")
    bench_sub = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (import_command, help_text) in BENCHMARKS.items():
        add_subcommand(bench_sub, name, import_command, help_text, load=chosen_benchmark == name)
    return parser


def out_dir_lock(command: str, out_dir: str | None):
    """The lock on a task's --out-dir, taken before the task reads anything (on rank 0 under torchrun)."""
    if command not in LOCKS_OUT_DIR or int(os.environ.get("RANK", 0)) != 0:
        return contextlib.nullcontext()
    from training.out_dir import locked
    return locked(out_dir)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`, a cluster's time limit), raised where the run stands so that it stops as Ctrl-C
    stops it: what is written stays written, temporary files are removed, and the message says what to do."""


def raise_terminated(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. Errors about the user's input (bad files, flags, data) print one clear line, not a
    traceback; set MINIGPT_DEBUG=1 to see the traceback too."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    # progress: one way, the logging module; under torchrun only rank 0 reports (the others warn and err only)
    main_process = int(os.environ.get("RANK", 0)) == 0
    logging.basicConfig(level=logging.INFO if main_process else logging.WARNING, format="%(message)s")
    on_main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers live
    previous = signal.signal(signal.SIGTERM, raise_terminated) if on_main_thread else None
    if getattr(args, "dataset", None) and getattr(args, "out_dir", None):  # one default out-dir per dataset:
        args.out_dir = args.out_dir.replace("{dataset}", args.dataset)  # runs/sentiment-{dataset} -> ...-sst
    try:
        with out_dir_lock(args.command, getattr(args, "out_dir", None)):
            result = args._main(args)
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        out_dir = getattr(args, "out_dir", None)
        if out_dir and os.path.isfile(os.path.join(out_dir, "last.pt")):
            print(f"\n{how}; {out_dir}/last.pt is kept: add --resume to continue", file=sys.stderr)
        else:
            print(f"\n{how} before any checkpoint was written: run again to start", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130  # 128 + the signal's number, as a shell reports it
    except (ValueError, OSError, RuntimeError) as e:  # our errors name the file, line or flag at fault
        if os.environ.get("MINIGPT_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
