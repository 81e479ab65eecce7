"""`--protocol minigpt|course`: train with minigpt's defaults, or exactly as the course's starter code does.

The course is the CS224N GPT-2 default final project (2025 release): sonnet_generation.py, classifier.py,
paraphrase_detection.py and optimizer.py. `--protocol course` sets what those scripts do:

    every task   --optimizer course (optimizer.py's AdamW, eps 1e-6), --weight-decay 0, --schedule constant
                 --warmup 0 (one learning rate throughout), --max-grad-norm 0 (no clipping), --no-amp (fp32),
                 --epochs 10; and the course's model: the erf GELU and padding_idx 0 on the token embedding
                 (GPT2Config.gelu, .padding_idx; minigpt/config.py says why), whatever the checkpoint says
    sonnet       --lr 1e-5, --batch-size 8, --select last (the course generates with the last epoch's model),
                 --max-lines 0 (no line trim); and, without flags of their own: no <|endoftext|> after each
                 sonnet, padding with eos that stays IN the loss (sonnet.py: course_collate, course_lm_loss);
                 its generate: no newline appended to the prompt, top-p drawing from the sorted probabilities
                 with the run's global generator, one prompt at a time, the sonnets numbered 0, 1, ... in the
                 output files (sonnet.py: generate_sonnets, output_numbers)
    sentiment    --finetune last-linear-layer, --lr 1e-3, --batch-size 8, --head-dropout 0.3, --max-length 1024,
                 --select best (the course keeps the best dev accuracy); and its loss, the cross-entropy summed
                 over the batch and divided by --batch-size (classify.course_summed_loss)
    paraphrase   --head vocab (the cross-entropy over the whole vocabulary on the answer's token id, the
                 argmax token id as the prediction), --lr 1e-5, --batch-size 8, --max-length 1024, --select best;
                 and the course's prompts (cloze.py: course_prompt), the test predictions written in a shuffled
                 order (paraphrase.py: course_order)

What it does not reproduce: the draws of the course's global generator, i.e. the random order of the training
examples (the course's DataLoader draws its own; ours comes from --seed, training/loop.py:epoch_plan) and the
dropout masks (ours are drawn from another state of the generator).

Flags given on the command line win over the protocol: `--protocol course --lr 2e-5` is the course's recipe
with another learning rate. To tell a flag given from one left out, each flag the protocol sets defaults to
None in the parser; `resolve_protocol(args)` (first thing in a task's main) fills the Nones in with the chosen
protocol's values. The minigpt values are the task's usual defaults, kept as they were.
"""
from __future__ import annotations

import argparse
import re

PROTOCOLS = ("minigpt", "course")

_EVERY_TASK = dict(optimizer="course", weight_decay=0.0, schedule="constant", warmup=0.0, max_grad_norm=0.0,
                   amp=False, epochs=10)
COURSE = {
    "sonnet": _EVERY_TASK | dict(lr=1e-5, batch_size=8, select="last", max_lines=0),
    "sentiment": _EVERY_TASK | dict(finetune="last-linear-layer", lr=1e-3, batch_size=8, head_dropout=0.3,
                                    max_length=1024, select="best"),
    "paraphrase": _EVERY_TASK | dict(head="vocab", lr=1e-5, batch_size=8, max_length=1024, select="best"),
}
BEHAVIOUR = {  # what the course protocol changes beyond flags, for --help
    "sonnet": "no <|endoftext|> after each sonnet; padding (eos) counted in the loss; prompts decoded without an "
              "appended newline, top-p drawing from the sorted probabilities with the run's global generator, "
              "the output sonnets numbered 0, 1, ...; ",
    "sentiment": "the loss summed over the batch and divided by --batch-size (a short last batch weighs less); ",
    "paraphrase": "the course's prompts (test: 'Is \"s1\" a paraphrase of \"s2\"? Answer \"yes\" or \"no\": ', "
                  "train/dev: question 2's closing quote left out); the test predictions in a shuffled order; ",
}


def _flag(dest: str) -> str:
    return "--no-amp" if dest == "amp" else "--" + dest.replace("_", "-")


def _show(dest: str, value) -> str:
    """A value as --help shows it."""
    if dest == "amp":
        return "bf16 on CUDA" if value else "fp32"
    return str(value)


def add_protocol_argument(parser: argparse.ArgumentParser, task: str) -> None:
    """Add --protocol; call it last in the task's add_arguments, after every flag it sets exists."""
    course = COURSE[task]
    actions = {a.dest: a for a in parser._actions}  # argparse has no public way to look a flag up
    missing = sorted(set(course) - set(actions))
    if missing:
        raise TypeError(f"add_protocol_argument({task!r}): the parser lacks {missing}")
    minigpt = {}
    for dest, value in course.items():
        action = actions[dest]
        minigpt[dest] = action.default
        base = re.sub(r" \(default: (%\(default\)s|[^)]*)\)$", "", action.help or "")  # its note, replaced
        action.help = (f"{base} (default: {_show(dest, action.default)}; "
                       f"--protocol course: {_show(dest, value)})")
        action.default = None  # None = not given on the command line: resolve_protocol fills it in
    parser.set_defaults(_protocol_task=task, _protocol_minigpt=minigpt)
    settings = ", ".join(f"{_flag(d)} {v}" if d != "amp" else "--no-amp" for d, v in course.items())
    parser.add_argument(
        "--protocol", choices=PROTOCOLS, default="minigpt",
        help=f"minigpt: this project's defaults; course: train as the CS224N GPT-2 starter code does: its model "
             f"(erf GELU, padding_idx 0); {BEHAVIOUR[task]}{settings}. Flags given on the command line win over "
             "the protocol's values (default: %(default)s)")


def resolve_protocol(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in every protocol flag left out on the command line (None) with the chosen protocol's value."""
    if not hasattr(args, "_protocol_minigpt"):
        return args  # a parser without --protocol
    table = COURSE[args._protocol_task] if args.protocol == "course" else args._protocol_minigpt
    for dest in args._protocol_minigpt:
        if getattr(args, dest) is None:
            setattr(args, dest, table[dest])
    return args
