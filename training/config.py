"""What a training run is: TrainConfig, every setting of the trainer declared once, and the flags made from it.

Each setting is one line below: its default, its help and its range (minigpt/settings.py). A task builds a config
directly, TrainConfig(out_dir="runs/x", epochs=3, lr=1e-5), or from its command line:

    add_training_arguments(parser, epochs=10, lr=1e-5, batch_size=8, out_dir="runs/sonnet")  # the task's defaults
    cfg = config_from_args(parser.parse_args())

A value out of range is refused with the same words when the command line is parsed and when a TrainConfig is
built in code ("--batch-size must be >= 1, got 0").
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from minigpt.settings import add_settings, check_settings, device_name, directory, setting, settings_from_args


def whole_steps_from_one(warmup: float) -> None:
    """--warmup: a fraction of the steps below 1, a whole number of steps from 1 on."""
    if warmup >= 1 and warmup != int(warmup):
        raise ValueError("below 1 it is a fraction of the steps, from 1 on a whole number of steps")


@dataclass
class TrainConfig:
    out_dir: str = setting(
        help="directory for last.pt, best-epoch*.pt and metrics.jsonl (created if missing); it must be empty or "
             "hold this run's files (training/out_dir.py)", kind=directory)
    epochs: int = setting(1, "passes over the training set", low=0)
    batch_size: int = setting(8, "examples per micro-batch, in all processes together (torchrun splits it)", low=1)
    grad_accum: int = setting(
        1, "micro-batches whose gradients add up before one optimizer step: the effective batch is batch-size x "
           "grad-accum examples, with the memory of one micro-batch", low=1)
    lr: float = setting(
        2e-5, "peak learning rate of AdamW: rises linearly from 0 during --warmup, then falls linearly to 0 at the "
              "last step (--schedule constant: stays)", low=0)
    weight_decay: float = setting(
        0.0, "decoupled weight decay (Loshchilov & Hutter 2019): each step shrinks the weight matrices by lr x "
             "weight-decay; biases, LayerNorm weights and embeddings are exempt", low=0)
    warmup: float = setting(
        0.0, "length of the linear warmup, which keeps Adam's first, noisy updates small: below 1 a fraction of all "
             "optimizer steps, from 1 on a number of steps", low=0, check=whole_steps_from_one)
    max_grad_norm: float = setting(
        1.0, "rescale the gradient when its global L2 norm exceeds this, so one odd batch cannot take a huge step "
             "(0: no clipping)", low=0)
    seed: int = setting(11711, "seeds the data order (with the epoch), dropout and initialisation", low=0)
    keep_best: int = setting(3, "keep this many best-epoch*.pt checkpoints, ranked by the dev metric (0: none)",
                             low=0)
    patience: int = setting(0, "stop after this many evaluations without a better dev metric (0: never)", low=0)
    resume: bool = setting(False, "continue the run saved in --out-dir/last.pt exactly where it stopped (same "
                                  "settings required)")
    device: str = setting("auto", "auto picks cuda, then mps, then cpu; or cpu, cuda, cuda:N, mps",
                          kind=device_name)
    amp: bool = setting(True, "turn off bf16 autocast, which is on by default on CUDA (matmuls in bfloat16; weights "
                              "and optimizer stay float32); has no effect on CPU", negate=True)
    save_every: int = setting(0, "also write last.pt every N optimizer steps, for --resume in the middle of an "
                                 "epoch (0: only at epoch ends)", low=0)
    max_steps: int = setting(0, "stop after N optimizer steps in all, for smoke runs (0: no limit; the schedule is "
                                "unchanged)", low=0)
    eval_every_epochs: int = setting(1, "run the dev evaluation every N epochs (and always after the last)", low=1)
    schedule: str = setting(
        "linear", "linear: after --warmup the learning rate falls linearly to 0 at the last step; constant: after "
                  "--warmup it stays at --lr (--warmup 0: the same --lr at every step, as the course trains)",
        choices=("linear", "constant"))
    select: str = setting(
        "best", "the weights the run ends with (and writes its predictions with, and exports): best = the best dev "
                "epoch's (kept as best-epoch*.pt; with --keep-best 0 there is none, so the last epoch's), last = "
                "the last epoch's", choices=("best", "last"))
    optimizer: str = setting(
        "adamw", "adamw: torch's AdamW equations (minigpt/optim.py, eps 1e-8, no decay on biases, LayerNorm and "
                 "embeddings); course: the course's optimizer.py (eps 1e-6)", choices=("adamw", "course"))
    gradient_checkpointing: bool = setting(
        False, "keep only each block's input for the backward pass and recompute the rest there: far less "
               "activation memory (a bigger batch or model fits) for about a third more compute per step; the "
               "same gradients")
    compile: bool = setting(
        False, "torch.compile the model for training and evaluation (inductor: the machine's C++ compiler on a "
               "CPU, Triton on a GPU); the first steps pay for the compilation, the numbers equal eager's within "
               "float rounding (dropout draws other masks)")
    # set by code, or by the task's own flags
    find_unused_parameters: bool = setting(False, "DDP: some trainable parameters skip some forward passes",
                                           cli=False)
    explicit_math: bool = setting(False, "minigpt's AdamW, one parameter at a time, instead of torch's fused "
                                         "kernel: the readable equations (the task's --explicit-math)", cli=False)
    data_files: dict = setting({}, "{name: path} of the data files the task reads (tasks/data/files.py: "
                                   "course_files): the run record fingerprints them", cli=False)
    # every parsed flag of the task (config_from_args fills it): --resume refuses a run whose settings differ
    settings: dict | None = None

    def __post_init__(self):
        if not str(self.out_dir).strip():
            raise ValueError("--out-dir is empty: name a directory")
        check_settings(self)


def add_training_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """Add the trainer's flags to a task's parser; `defaults` (epochs=10, out_dir="runs/x", ...) replace
    TrainConfig's for this task."""
    add_settings(parser, TrainConfig, defaults=defaults, title="training (training/trainer.py)")


def config_from_args(args: argparse.Namespace, **values) -> TrainConfig:
    """The TrainConfig of parsed arguments: every setting whose name is a parsed flag's dest (--explicit-math
    included, which the task's own flags add); the others keep their defaults. `settings` records every parsed
    flag of the task, so that --resume can compare all of them (training/run_settings.py)."""
    return settings_from_args(TrainConfig, args, settings=parsed_settings(args), **values)


def parsed_settings(args: argparse.Namespace) -> dict:
    """{flag's dest: value} of every parsed flag, as plain JSON values (paths as strings, tuples as lists)."""
    def plain(value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value)
    return {k: plain(v) for k, v in sorted(vars(args).items()) if not k.startswith("_") and not callable(v)}
