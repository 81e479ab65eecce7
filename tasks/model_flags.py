"""The model flags every task shares, and the small configs they make (tasks/modeling.py uses them).

    add_model_arguments(parser, finetune_choices, default_finetune)   --model, --tokenizer, --scratch-config,
                                                                       --dropout, --finetune and its settings,
                                                                       --explicit-math
    add_explicit_math_argument(parser)                                 --explicit-math alone (generate, bench)
    model_spec_from_args(args) -> ModelSpec                            which GPT-2, built once in main
    finetune_config_from_args(args) -> FinetuneConfig                  what trains, built once in main
"""
from __future__ import annotations

import argparse
import logging

from minigpt import GPT2Config
from minigpt.config import PRESETS
from minigpt.settings import number
from tasks.modeling import FINETUNE_HELP, FinetuneConfig, ModelSpec, scratch_fields

logger = logging.getLogger(__name__)

EXPLICIT_MATH_HELP = ("run the plain equations everywhere (attention, LayerNorm, GELU, dropout, top-p, AdamW): "
                      "slower, for stepping through in a debugger")


def add_explicit_math_argument(parser) -> None:
    parser.add_argument("--explicit-math", action="store_true", help=EXPLICIT_MATH_HELP)


def add_model_arguments(parser, finetune_choices=tuple(FINETUNE_HELP), default_finetune="full") -> None:
    g = parser.add_argument_group("model (tasks/model_flags.py, tasks/modeling.py)")
    g.add_argument("--model", default="gpt2",
                   help=f"a preset ({', '.join(PRESETS)}: downloaded once into the cache), a directory in the "
                        "Hugging Face layout (config.json, model.safetensors or pytorch_model.bin, vocab.json, "
                        "merges.txt), or 'scratch' for a randomly initialised model of --scratch-config")
    g.add_argument("--scratch-config", type=scratch_config_text, default=ModelSpec.scratch_config,
                   help="with --model scratch: GPT2Config fields as key=value,... (vocab size from the tokenizer)")
    g.add_argument("--tokenizer", default=None,
                   help="directory with vocab.json + merges.txt (default: the model directory; required with "
                        "--model scratch)")
    g.add_argument("--dropout", type=number(float, 0, 1, high_open=True), default=None,
                   help="override the checkpoint's dropout rate")
    add_explicit_math_argument(g)
    lines = "; ".join(f"{k}: {FINETUNE_HELP[k]}" for k in finetune_choices)
    g.add_argument("--finetune", choices=finetune_choices, default=default_finetune, help=lines)
    if {"lora", "dora"} & set(finetune_choices):
        g.add_argument("--lora-r", type=number(int, 1), default=FinetuneConfig.lora_r, help="adapter rank r")
        g.add_argument("--lora-alpha", type=number(float, 0, low_open=True), default=FinetuneConfig.lora_alpha,
                       help="adapter scale: the update is alpha/r * BA")
        g.add_argument("--lora-dropout", type=number(float, 0, 1, high_open=True),
                       default=FinetuneConfig.lora_dropout, help="dropout on the adapter's input")
        g.add_argument("--lora-targets", nargs="+", default=list(FinetuneConfig.lora_targets),
                       help="projections that get adapters (add mlp.c_fc mlp.c_proj for the MLP)")
    if "prefix" in finetune_choices:
        g.add_argument("--prefix-length", type=number(int, 1), default=FinetuneConfig.prefix_length,
                       help="prefix key/value positions per layer")
        g.add_argument("--prefix-hidden", type=number(int, 0), default=FinetuneConfig.prefix_hidden,
                       help="hidden size of the prefix MLP (0: no MLP)")


def scratch_config_text(text: str) -> str:
    """argparse type of --scratch-config: checked when the command line is parsed, kept as text."""
    try:
        GPT2Config(vocab_size=1, **scratch_fields(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--scratch-config: ")) from None
    return text


SCRATCH_MIN_LR = 1e-4  # below it a randomly initialised GPT-2 barely leaves the uniform guess in an epoch


def model_spec_from_args(args: argparse.Namespace) -> ModelSpec:
    """The model to load; a random model (--model scratch) about to train at a fine-tuning rate gets a warning:
    from a random start the loss stays near ln(vocabulary) = 10.8 for epochs at lr 1e-5."""
    lr, epochs = getattr(args, "lr", None), getattr(args, "epochs", 0)
    if args.model == "scratch" and lr is not None and lr < SCRATCH_MIN_LR and epochs:
        logger.warning(f"warning: --model scratch trains a random model, and --lr {lr:g} is a fine-tuning rate: "
                       "the loss will stay near 10.8 (ln 50257) for epochs; try --lr 1e-3 --warmup 0.1")
    return ModelSpec(model=args.model, tokenizer=args.tokenizer, scratch_config=args.scratch_config,
                     dropout=args.dropout, explicit_math=args.explicit_math,
                     course_model=getattr(args, "protocol", "minigpt") == "course")


def finetune_config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The --finetune method and, where the task has them, its adapter / prefix flags."""
    settings = {name: getattr(args, name) for name in ("lora_r", "lora_alpha", "lora_dropout", "prefix_length",
                                                         "prefix_hidden") if hasattr(args, name)}
    if hasattr(args, "lora_targets"):
        settings["lora_targets"] = tuple(args.lora_targets)
    return FinetuneConfig(method=args.finetune, **settings)
