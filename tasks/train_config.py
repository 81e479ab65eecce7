"""What a training run is: TrainConfig, and the command-line flags that fill it (`add_training_arguments`).

Tasks add these flags to their own parser with their own defaults, e.g.

    add_training_arguments(parser, epochs=10, lr=1e-5, batch_size=8, out_dir="runs/sonnet")
    cfg = config_from_args(parser.parse_args())
"""
from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, dataclass, fields

from tasks.arg_types import device_name, number

# The smallest value of each numeric setting: refused when the command line is parsed and in TrainConfig itself.
AT_LEAST = dict(epochs=0, batch_size=1, grad_accum=1, lr=0, weight_decay=0, warmup=0, max_grad_norm=0, seed=0,
                keep_best=0, patience=0, save_every=0, max_steps=0, eval_every_epochs=1)


@dataclass
class TrainConfig:
    out_dir: str
    epochs: int = 1
    batch_size: int = 8  # GLOBAL examples per micro-batch (split over the processes) ...
    grad_accum: int = 1  # ... times grad_accum micro-batches per optimizer step
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup: float = 0.0  # < 1: fraction of all optimizer steps; >= 1: a number of steps
    max_grad_norm: float = 1.0  # 0 = no clipping
    seed: int = 11711
    keep_best: int = 3  # best-epoch*.pt files kept by the dev metric; 0 = none
    patience: int = 0  # evaluations without improvement before stopping; 0 = never stop early
    resume: bool = False
    device: str = "auto"  # auto -> cuda, mps, cpu
    amp: bool = True  # bf16 autocast, on CUDA only
    save_every: int = 0  # also write last.pt every N optimizer steps (0 = at epoch ends only)
    max_steps: int = 0  # stop after N optimizer steps in all (0 = no limit); does not change the schedule
    eval_every_epochs: int = 1
    find_unused_parameters: bool = False  # DDP: set when some trainable parameters skip some forward passes
    schedule: str = "linear"  # linear: warmup then decay to 0; constant: warmup then --lr (tasks/optimization.py)
    select: str = "best"  # the weights the run ends with: the best dev epoch's, or the last epoch's
    optimizer: str = "adamw"  # adamw: minigpt/optim.py; course: minigpt/course_adamw.py
    # every parsed flag of the task (config_from_args fills it): --resume refuses a run whose settings differ
    settings: dict | None = None

    def __post_init__(self):
        for name, low in AT_LEAST.items():
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < low:
                raise ValueError(f"TrainConfig.{name} (--{name.replace('_', '-')}) must be >= {low}, "
                                 f"got {getattr(self, name)}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} {getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        if self.warmup >= 1 and self.warmup != int(self.warmup):
            raise ValueError(f"--warmup {self.warmup}: below 1 it is a fraction of the steps, from 1 on a "
                             "whole number of steps")


CHOICES = {"schedule": ("linear", "constant"), "select": ("best", "last"), "optimizer": ("adamw", "course")}

_HELP = {
    "out_dir": "directory for last.pt, best-epoch*.pt and metrics.jsonl (created if missing)",
    "epochs": "passes over the training set",
    "batch_size": "examples per micro-batch, in all processes together (torchrun splits it)",
    "grad_accum": "micro-batches whose gradients add up before one optimizer step: the effective batch is "
                  "batch-size x grad-accum examples, with the memory of one micro-batch",
    "lr": "peak learning rate of AdamW: rises linearly from 0 during --warmup, then falls linearly to 0 at the "
          "last step (--schedule constant: stays)",
    "weight_decay": "decoupled weight decay (Loshchilov & Hutter 2019): each step shrinks the weight matrices by "
                    "lr x weight-decay; biases, LayerNorm weights and embeddings are exempt",
    "warmup": "length of the linear warmup, which keeps Adam's first, noisy updates small: below 1 a fraction "
              "of all optimizer steps, from 1 on a number of steps",
    "max_grad_norm": "rescale the gradient when its global L2 norm exceeds this, so one odd batch cannot take a "
                     "huge step (0: no clipping)",
    "seed": "seeds the data order (with the epoch), dropout and initialisation",
    "keep_best": "keep this many best-epoch*.pt checkpoints, ranked by the dev metric (0: none)",
    "patience": "stop after this many evaluations without a better dev metric (0: never)",
    "resume": "continue the run saved in --out-dir/last.pt exactly where it stopped (same settings required)",
    "device": "auto picks cuda, then mps, then cpu",
    "amp": "turn off bf16 autocast, which is on by default on CUDA (matmuls in bfloat16; weights and optimizer "
           "stay float32); has no effect on CPU",
    "save_every": "also write last.pt every N optimizer steps, for --resume in the middle of an epoch (0: "
                  "only at epoch ends)",
    "max_steps": "stop after N optimizer steps in all, for smoke runs (0: no limit; the schedule is unchanged)",
    "eval_every_epochs": "run the dev evaluation every N epochs (and always after the last)",
    "schedule": "linear: after --warmup the learning rate falls linearly to 0 at the last step; constant: after "
                "--warmup it stays at --lr (--warmup 0: the same --lr at every step, as the course trains)",
    "select": "the weights the run ends with (and writes its predictions with, and exports): best = the best "
              "dev epoch's (kept as best-epoch*.pt; with --keep-best 0 there is none, so the last epoch's), "
              "last = the last epoch's",
    "optimizer": "adamw: torch's AdamW equations (minigpt/optim.py, eps 1e-8, no decay on biases, LayerNorm and "
                 "embeddings); course: the course's optimizer.py (minigpt/course_adamw.py, eps 1e-6)",
}


def warmup(text: str) -> float:
    """--warmup: a fraction of the steps below 1, a whole number of steps from 1 on."""
    value = number(float, 0)(text)
    if value >= 1 and value != int(value):
        raise argparse.ArgumentTypeError(f"below 1 it is a fraction of the steps, from 1 on a whole number of "
                                         f"steps; got {text}")
    return value


def add_training_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """Add the trainer's flags (--epochs, --lr, ...) to a task's parser; `defaults` overrides TrainConfig's."""
    names = {f.name for f in fields(TrainConfig)}
    if set(defaults) - names:
        raise TypeError(f"add_training_arguments: unknown defaults {sorted(set(defaults) - names)}")
    d = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING} | defaults
    group = parser.add_argument_group("training (tasks/train.py)")
    types = {f.name: f.type for f in fields(TrainConfig)}
    for name, help_text in _HELP.items():
        flag = "--" + name.replace("_", "-")
        if name == "resume":
            group.add_argument(flag, action="store_true", default=d["resume"], help=help_text)
        elif name == "amp":
            group.add_argument("--no-amp", dest="amp", action="store_false", default=d["amp"],
                               help=help_text + " (default: autocast " + ("on" if d["amp"] else "off") + ")")
        elif name == "out_dir":
            group.add_argument(flag, required="out_dir" not in d, default=d.get("out_dir"),
                               help=help_text + (" (default: %(default)s)" if "out_dir" in d else ""))
        elif name in CHOICES:
            group.add_argument(flag, choices=CHOICES[name], default=d[name], help=f"{help_text} (default: %(default)s)")
        elif name == "device":
            group.add_argument(flag, type=device_name, default=d["device"],
                               help=f"{help_text} (default: %(default)s)")
        else:
            kind = {"int": int, "float": float}[types[name]]
            parse = warmup if name == "warmup" else number(kind, AT_LEAST[name])
            group.add_argument(flag, type=parse, default=d[name], help=f"{help_text} (default: %(default)s)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed arguments (fields without a flag keep their defaults); `settings` records every
    parsed flag of the task, so that --resume can compare all of them (tasks/run_settings.py)."""
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
