"""The trainer's command-line flags (--epochs, --lr, ...) and the TrainConfig they fill.

Each task adds them to its own parser with its own defaults, then builds the config from the parsed flags:

    add_training_arguments(parser, epochs=10, lr=1e-5, batch_size=8, out_dir="runs/sonnet")
    cfg = config_from_args(parser.parse_args())

A flag's value is refused when the command line is parsed (cli/arg_types.py), with the same bounds that
TrainConfig itself checks (training/config.py: AT_LEAST, CHOICES).
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from cli.arg_types import device_name, directory, number
from training.config import CHOICES, TrainConfig


def warmup(text: str) -> float:
    """--warmup: a fraction of the steps below 1, a whole number of steps from 1 on."""
    value = number(float, 0)(text)
    if value >= 1 and value != int(value):
        raise argparse.ArgumentTypeError(f"below 1 it is a fraction of the steps, from 1 on a whole number of "
                                         f"steps; got {text}")
    return value


def add_training_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """Add the trainer's flags to a task's parser; `defaults` (epochs=10, out_dir="runs/x", ...) override
    TrainConfig's."""
    d = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    unknown = set(defaults) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"add_training_arguments: unknown defaults {sorted(unknown)}")
    d |= defaults
    group = parser.add_argument_group("training (training/trainer.py)")
    group.add_argument("--out-dir", type=directory, required="out_dir" not in d, default=d.get("out_dir"),
                       help="directory for last.pt, best-epoch*.pt and metrics.jsonl (created if missing); it "
                            "must be empty or hold this run's files (training/out_dir.py)"
                       + (" (default: %(default)s)" if "out_dir" in d else ""))
    group.add_argument("--epochs", type=number(int, 0), default=d["epochs"],
                       help="passes over the training set (default: %(default)s)")
    group.add_argument("--batch-size", type=number(int, 1), default=d["batch_size"],
                       help="examples per micro-batch, in all processes together (torchrun splits it) "
                            "(default: %(default)s)")
    group.add_argument("--grad-accum", type=number(int, 1), default=d["grad_accum"],
                       help="micro-batches whose gradients add up before one optimizer step: the effective batch "
                            "is batch-size x grad-accum examples, with the memory of one micro-batch "
                            "(default: %(default)s)")
    group.add_argument("--lr", type=number(float, 0), default=d["lr"],
                       help="peak learning rate of AdamW: rises linearly from 0 during --warmup, then falls "
                            "linearly to 0 at the last step (--schedule constant: stays) (default: %(default)s)")
    group.add_argument("--weight-decay", type=number(float, 0), default=d["weight_decay"],
                       help="decoupled weight decay (Loshchilov & Hutter 2019): each step shrinks the weight "
                            "matrices by lr x weight-decay; biases, LayerNorm weights and embeddings are exempt "
                            "(default: %(default)s)")
    group.add_argument("--warmup", type=warmup, default=d["warmup"],
                       help="length of the linear warmup, which keeps Adam's first, noisy updates small: below 1 "
                            "a fraction of all optimizer steps, from 1 on a number of steps (default: %(default)s)")
    group.add_argument("--max-grad-norm", type=number(float, 0), default=d["max_grad_norm"],
                       help="rescale the gradient when its global L2 norm exceeds this, so one odd batch cannot "
                            "take a huge step (0: no clipping) (default: %(default)s)")
    group.add_argument("--seed", type=number(int, 0), default=d["seed"],
                       help="seeds the data order (with the epoch), dropout and initialisation "
                            "(default: %(default)s)")
    group.add_argument("--keep-best", type=number(int, 0), default=d["keep_best"],
                       help="keep this many best-epoch*.pt checkpoints, ranked by the dev metric (0: none) "
                            "(default: %(default)s)")
    group.add_argument("--patience", type=number(int, 0), default=d["patience"],
                       help="stop after this many evaluations without a better dev metric (0: never) "
                            "(default: %(default)s)")
    group.add_argument("--resume", action="store_true", default=d["resume"],
                       help="continue the run saved in --out-dir/last.pt exactly where it stopped (same settings "
                            "required)")
    group.add_argument("--device", type=device_name, default=d["device"],
                       help="auto picks cuda, then mps, then cpu (default: %(default)s)")
    group.add_argument("--no-amp", dest="amp", action="store_false", default=d["amp"],
                       help="turn off bf16 autocast, which is on by default on CUDA (matmuls in bfloat16; weights "
                            "and optimizer stay float32); has no effect on CPU (default: autocast "
                            + ("on)" if d["amp"] else "off)"))
    group.add_argument("--save-every", type=number(int, 0), default=d["save_every"],
                       help="also write last.pt every N optimizer steps, for --resume in the middle of an epoch "
                            "(0: only at epoch ends) (default: %(default)s)")
    group.add_argument("--max-steps", type=number(int, 0), default=d["max_steps"],
                       help="stop after N optimizer steps in all, for smoke runs (0: no limit; the schedule is "
                            "unchanged) (default: %(default)s)")
    group.add_argument("--eval-every-epochs", type=number(int, 1), default=d["eval_every_epochs"],
                       help="run the dev evaluation every N epochs (and always after the last) "
                            "(default: %(default)s)")
    group.add_argument("--schedule", choices=CHOICES["schedule"], default=d["schedule"],
                       help="linear: after --warmup the learning rate falls linearly to 0 at the last step; "
                            "constant: after --warmup it stays at --lr (--warmup 0: the same --lr at every step, "
                            "as the course trains) (default: %(default)s)")
    group.add_argument("--select", choices=CHOICES["select"], default=d["select"],
                       help="the weights the run ends with (and writes its predictions with, and exports): best = "
                            "the best dev epoch's (kept as best-epoch*.pt; with --keep-best 0 there is none, so "
                            "the last epoch's), last = the last epoch's (default: %(default)s)")
    group.add_argument("--optimizer", choices=CHOICES["optimizer"], default=d["optimizer"],
                       help="adamw: torch's AdamW equations (minigpt/optim.py, eps 1e-8, no decay on biases, "
                            "LayerNorm and embeddings); course: the course's optimizer.py (minigpt/course_adamw.py, "
                            "eps 1e-6) (default: %(default)s)")
    group.add_argument("--gradient-checkpointing", action="store_true", default=d["gradient_checkpointing"],
                       help="keep only each block's input for the backward pass and recompute the rest there: "
                            "far less activation memory (a bigger batch or model fits) for about a third more "
                            "compute per step; the same gradients")
    group.add_argument("--compile", action="store_true", default=d["compile"],
                       help="torch.compile the model for training and evaluation (inductor: the machine's C++ "
                            "compiler on a CPU, Triton on a GPU); the first steps pay for the compilation, the "
                            "numbers equal eager's within float rounding (dropout draws other masks)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed arguments: every field whose name is a parsed flag's dest (--explicit-math
    included, which the task's own flags add); the others keep their defaults. `settings` records every parsed
    flag of the task, so that --resume can compare all of them (training/run_settings.py)."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**values, settings=parsed_settings(args))


def parsed_settings(args: argparse.Namespace) -> dict:
    """{flag's dest: value} of every parsed flag, as plain JSON values (paths as strings, tuples as lists)."""
    def plain(value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value)
    return {k: plain(v) for k, v in sorted(vars(args).items()) if not k.startswith("_") and not callable(v)}
