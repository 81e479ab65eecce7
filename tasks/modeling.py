"""What every task does around training: get GPT-2 and its tokenizer, choose what trains, export the result.

    --model gpt2 | gpt2-medium | ... | path/to/dir | scratch     which weights (scratch: random init, small config)
    --finetune full | last-linear-layer | lora | dora | prefix   which parameters train

full: every weight. last-linear-layer: GPT-2 frozen, only the task's head trains (tasks with a head).
lora / dora: low-rank adapters on the chosen projections (minigpt/lora.py), GPT-2 frozen.
prefix: learned per-layer key/value prefixes (minigpt/prefix.py), GPT-2 frozen.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch.nn as nn

from minigpt import GPT2, GPT2Config, Tokenizer, load_pretrained, save_pretrained
from minigpt.checkpoint import resolve_model_dir, save_safetensors
from minigpt.files import atomic_write
from minigpt.config import PRESETS
from minigpt.lora import adapter_modules, adapter_state_dict, inject_adapters, remove_adapters
from minigpt.prefix import PrefixTuning
from cli.arg_types import number

FINETUNE_HELP = {
    "full": "every weight trains",
    "last-linear-layer": "GPT-2 frozen; only the task head trains",
    "lora": "low-rank adapters (Hu et al. 2021); GPT-2 frozen",
    "dora": "weight-decomposed low-rank adapters (Liu et al. 2024); GPT-2 frozen",
    "prefix": "learned key/value prefixes (Li & Liang 2021); GPT-2 frozen",
}


def add_model_arguments(parser, finetune_choices=tuple(FINETUNE_HELP), default_finetune="full") -> None:
    g = parser.add_argument_group("model (tasks/modeling.py)")
    g.add_argument("--model", default="gpt2",
                   help=f"a preset ({', '.join(PRESETS)}: downloaded once into the cache), a directory in the "
                        "Hugging Face layout (config.json, model.safetensors or pytorch_model.bin, vocab.json, "
                        "merges.txt), or 'scratch' for a randomly initialised model of --scratch-config")
    g.add_argument("--scratch-config", type=scratch_config_text,
                   default="n_layer=4,n_head=4,n_embd=256,n_positions=512",
                   help="with --model scratch: GPT2Config fields as key=value,... (vocab size from the tokenizer)")
    g.add_argument("--tokenizer", default=None,
                   help="directory with vocab.json + merges.txt (default: the model directory; required with "
                        "--model scratch)")
    g.add_argument("--dropout", type=number(float, 0, 1, high_open=True), default=None, help="override the checkpoint's dropout rate")
    lines = "; ".join(f"{k}: {FINETUNE_HELP[k]}" for k in finetune_choices)
    g.add_argument("--finetune", choices=finetune_choices, default=default_finetune, help=lines)
    if {"lora", "dora"} & set(finetune_choices):
        g.add_argument("--lora-r", type=number(int, 1), default=8, help="adapter rank r")
        g.add_argument("--lora-alpha", type=number(float, 0, low_open=True), default=16,
                       help="adapter scale: the update is alpha/r * BA")
        g.add_argument("--lora-dropout", type=number(float, 0, 1, high_open=True), default=0.1,
                       help="dropout on the adapter's input")
        g.add_argument("--lora-targets", nargs="+", default=["attn.c_attn", "attn.c_proj"],
                       help="projections that get adapters (add mlp.c_fc mlp.c_proj for the MLP)")
    if "prefix" in finetune_choices:
        g.add_argument("--prefix-length", type=number(int, 1), default=10, help="prefix key/value positions per layer")
        g.add_argument("--prefix-hidden", type=number(int, 0), default=512, help="hidden size of the prefix MLP (0: no MLP)")


SCRATCH_FIELDS = ("n_positions", "n_embd", "n_layer", "n_head", "dropout", "layer_norm_epsilon", "eos_token_id")


def scratch_fields(text: str) -> dict:
    """--scratch-config 'n_layer=4,n_head=4,...' -> {field: value}; ValueError naming the item at fault."""
    fields = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in SCRATCH_FIELDS:
            raise ValueError(f"--scratch-config: expected key=value with a key among {', '.join(SCRATCH_FIELDS)}, "
                             f"got {item!r}")
        kind = float if key in ("dropout", "layer_norm_epsilon") else int
        try:
            fields[key] = kind(value)
        except ValueError:
            raise ValueError(f"--scratch-config: {key} must be {'a number' if kind is float else 'an integer'}, "
                             f"got {value!r}") from None
    return fields


def scratch_config_text(text: str) -> str:
    """argparse type of --scratch-config: checked when the command line is parsed, kept as text."""
    try:
        GPT2Config(vocab_size=1, **scratch_fields(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--scratch-config: ")) from None
    return text


def parse_scratch_config(text: str, vocab_size: int, dropout: float | None) -> GPT2Config:
    fields = scratch_fields(text)
    if dropout is not None:
        fields["dropout"] = dropout
    try:
        return GPT2Config(vocab_size=vocab_size, **fields)
    except TypeError as e:
        raise ValueError(f"--scratch-config: {e}") from None


def load_model_and_tokenizer(args) -> tuple[GPT2, Tokenizer, Path]:
    """(model in train mode, tokenizer, the directory the tokenizer came from)."""
    if args.model == "scratch":
        if not args.tokenizer:
            raise ValueError("--model scratch needs --tokenizer DIR (a directory with vocab.json and merges.txt)")
        tokenizer_dir = Path(args.tokenizer)
        tokenizer = Tokenizer.from_dir(tokenizer_dir)
        model = GPT2(parse_scratch_config(args.scratch_config, tokenizer.vocab_size, args.dropout))
    else:
        overrides = {} if args.dropout is None else {"dropout": args.dropout}
        model = load_pretrained(args.model, **overrides)
        tokenizer_dir = Path(args.tokenizer) if args.tokenizer else resolve_model_dir(args.model)
        tokenizer = Tokenizer.from_dir(tokenizer_dir)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer in {tokenizer_dir} has {tokenizer.vocab_size} tokens but the model only "
                         f"{model.config.vocab_size} embeddings")
    return model.train(), tokenizer, tokenizer_dir


def apply_finetune(model: GPT2, args) -> nn.Module:
    """Freeze what --finetune keeps fixed and add adapters/prefixes; returns the module to call and train."""
    method = args.finetune
    if method == "full":
        return model.requires_grad_(True)
    if method == "last-linear-layer":
        return model.requires_grad_(False)  # the task's head (outside GPT2) stays trainable
    if method in ("lora", "dora"):
        return inject_adapters(model, method=method, r=args.lora_r, alpha=args.lora_alpha,
                               dropout=args.lora_dropout, targets=tuple(args.lora_targets))
    if method == "prefix":
        return PrefixTuning(model, n_prefix=args.prefix_length, hidden=args.prefix_hidden or 1,
                            use_mlp=args.prefix_hidden > 0)
    raise ValueError(f"unknown --finetune {method!r}")


def count_trainable(module: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def export_language_model(module: nn.Module, out_dir: str | Path, tokenizer_dir: Path, args) -> Path:
    """Write the trained LM as a model directory: full / LoRA / DoRA merged into plain GPT-2 weights (loadable by
    `--model out_dir` and by transformers); prefix-tuning as prefix.safetensors beside the base model's name."""
    out_dir = Path(out_dir)
    if isinstance(module, PrefixTuning):
        out_dir.mkdir(parents=True, exist_ok=True)
        save_safetensors(module.prefix_state_dict(), out_dir / "prefix.safetensors")
        info = {"base_model": str(args.model), "n_prefix": module.n_prefix, "prefix_hidden": args.prefix_hidden}
        atomic_write(out_dir / "prefix_config.json", lambda f: f.write(json.dumps(info, indent=2).encode()))
        return out_dir
    if adapter_modules(module):
        save_safetensors(adapter_state_dict(module), _mkdir(out_dir) / "adapter.safetensors")
        module = remove_adapters(copy.deepcopy(module), merge=True)
    return save_pretrained(module, out_dir, tokenizer_dir=tokenizer_dir)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
