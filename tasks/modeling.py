"""What every task does around training: get GPT-2 and its tokenizer, choose what trains, export the result.

    --model gpt2 | gpt2-medium | ... | path/to/dir | scratch     which weights (scratch: random init, small config)
    --finetune full | last-linear-layer | lora | dora | prefix   which parameters train

full: every weight. last-linear-layer: GPT-2 frozen, only the task's head trains (tasks with a head).
lora / dora: low-rank adapters on the chosen projections (minigpt/lora.py), GPT-2 frozen.
prefix: learned per-layer key/value prefixes (minigpt/prefix.py), GPT-2 frozen.

The flags live in tasks/model_flags.py; a task's main turns them into a ModelSpec and a FinetuneConfig (below).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from minigpt import GPT2, GPT2Config, Tokenizer, load_pretrained, save_pretrained
from minigpt.checkpoint import resolve_model_dir
from minigpt.config import COURSE_MODEL
from minigpt.files import atomic_write
from minigpt.lora import adapter_modules, adapter_state_dict, inject_adapters, remove_adapters
from minigpt.prefix import PrefixTuning
from minigpt.safetensors import save_safetensors


@dataclass(frozen=True)
class ModelSpec:
    """Which GPT-2 to load: a preset, a directory or 'scratch' (a random model of scratch_config)."""
    model: str = "gpt2"
    tokenizer: str | None = None  # the tokenizer's directory (None: the model's)
    scratch_config: str = "n_layer=4,n_head=4,n_embd=256,n_positions=512"
    dropout: float | None = None  # None: the checkpoint's
    explicit_math: bool = False  # True: the plain equations everywhere (model.set_fused(False))
    course_model: bool = False  # True: the course's model quirks, erf GELU and padding_idx 0 (config.COURSE_MODEL)


@dataclass(frozen=True)
class FinetuneConfig:
    """What trains: the method and its settings."""
    method: str = "full"  # one of FINETUNE_HELP
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("attn.c_attn", "attn.c_proj")
    prefix_length: int = 10
    prefix_hidden: int = 512  # 0: no MLP


FINETUNE_HELP = {
    "full": "every weight trains",
    "last-linear-layer": "GPT-2 frozen; only the task head trains",
    "lora": "low-rank adapters (Hu et al. 2021); GPT-2 frozen",
    "dora": "weight-decomposed low-rank adapters (Liu et al. 2024); GPT-2 frozen",
    "prefix": "learned key/value prefixes (Li & Liang 2021); GPT-2 frozen",
}


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


def parse_scratch_config(text: str, vocab_size: int, dropout: float | None, course_model: bool = False) -> GPT2Config:
    fields = scratch_fields(text)
    if dropout is not None:
        fields["dropout"] = dropout
    if course_model:
        fields.update(COURSE_MODEL)
    try:
        return GPT2Config(vocab_size=vocab_size, **fields)
    except TypeError as e:
        raise ValueError(f"--scratch-config: {e}") from None


def load_model_and_tokenizer(spec: ModelSpec) -> tuple[GPT2, Tokenizer, Path]:
    """(model in train mode, tokenizer, the directory the tokenizer came from). With spec.explicit_math the
    model (and the decoders, which read model.config.fused) run the plain equations; with spec.course_model it
    is the course's model (erf GELU, padding_idx 0) whatever its config.json says."""
    if spec.model == "scratch":
        if not spec.tokenizer:
            raise ValueError("--model scratch needs --tokenizer DIR (a directory with vocab.json and merges.txt)")
        tokenizer_dir = Path(spec.tokenizer)
        tokenizer = Tokenizer.from_dir(tokenizer_dir)
        model = GPT2(parse_scratch_config(spec.scratch_config, tokenizer.vocab_size, spec.dropout, spec.course_model))
    else:
        overrides = ({} if spec.dropout is None else {"dropout": spec.dropout}) | (COURSE_MODEL if spec.course_model
                                                                                    else {})
        model = load_pretrained(spec.model, **overrides)
        tokenizer_dir = Path(spec.tokenizer) if spec.tokenizer else resolve_model_dir(spec.model)
        tokenizer = Tokenizer.from_dir(tokenizer_dir)
    model.set_fused(not spec.explicit_math)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer in {tokenizer_dir} has {tokenizer.vocab_size} tokens but the model only "
                         f"{model.config.vocab_size} embeddings")
    return model.train(), tokenizer, tokenizer_dir


def apply_finetune(model: GPT2, ft: FinetuneConfig) -> nn.Module:
    """Freeze what --finetune keeps fixed and add adapters/prefixes; returns the module to call and train."""
    method = ft.method
    if method == "full":
        return model.requires_grad_(True)
    if method == "last-linear-layer":
        return model.requires_grad_(False)  # the task's head (outside GPT2) stays trainable
    if method in ("lora", "dora"):
        return inject_adapters(model, method=method, r=ft.lora_r, alpha=ft.lora_alpha,
                               dropout=ft.lora_dropout, targets=tuple(ft.lora_targets))
    if method == "prefix":
        return PrefixTuning(model, n_prefix=ft.prefix_length, hidden=ft.prefix_hidden or 1,
                            use_mlp=ft.prefix_hidden > 0)
    raise ValueError(f"unknown --finetune {method!r}")


def count_trainable(module: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def export_language_model(module: nn.Module, out_dir: str | Path, tokenizer_dir: Path, base_model: str,
                          prefix_hidden: int = 0) -> Path:
    """Write the trained LM as a model directory: full / LoRA / DoRA merged into plain GPT-2 weights (loadable by
    `--model out_dir` and by transformers); prefix-tuning as prefix.safetensors beside the base model's name
    (base_model, the --model it started from) and its prefix_hidden."""
    out_dir = Path(out_dir)
    if isinstance(module, PrefixTuning):
        out_dir.mkdir(parents=True, exist_ok=True)
        save_safetensors(module.prefix_state_dict(), out_dir / "prefix.safetensors")
        info = {"base_model": str(base_model), "n_prefix": module.n_prefix, "prefix_hidden": prefix_hidden}
        atomic_write(out_dir / "prefix_config.json", lambda f: f.write(json.dumps(info, indent=2).encode()))
        return out_dir
    if adapter_modules(module):
        save_safetensors(adapter_state_dict(module), _mkdir(out_dir) / "adapter.safetensors")
        module = remove_adapters(copy.deepcopy(module), merge=True)
    return save_pretrained(module, out_dir, tokenizer_dir=tokenizer_dir)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
