"""Loading and saving GPT-2 weights in the Hugging Face layout.

A model directory holds config.json, model.safetensors (or pytorch_model.bin), vocab.json and merges.txt.

The weights file is safetensors (read and written by hand in safetensors.py) or a pickled pytorch_model.bin.

The public checkpoint differs from our module in three ways (see hf_state_dict_to_minigpt):
  * names may carry a `transformer.` prefix (GPT2LMHeadModel) or not (GPT2Model);
  * the four projections are Conv1D layers storing [in, out]; nn.Linear stores [out, in], so we transpose;
  * `attn.bias` / `attn.masked_bias` are constant causal-mask buffers, not weights (but `c_attn.bias` is!),
    and `lm_head.weight` is the token embedding again (tied): both are skipped.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import torch

from .config import PRESETS, GPT2Config
from .files import atomic_write, atomic_write_text
from .model import GPT2
from .safetensors import DTYPE_NAMES, load_safetensors, save_safetensors
from .state_dict import non_finite_tensors

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # not h.0.attn.c_attn.bias: that one is a weight
# in order of preference; an *.index.json names the shards of a checkpoint split over several files
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


# ----- pytorch_model.bin and sharded checkpoints ------------------------------------------------------------------
def load_torch_bin(path: str | Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, through torch.load(weights_only=True): tensors and plain containers only."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if "unsupported" in line.lower()]
        reason = lines[0] if lines else "it uses objects outside torch's weights_only allowlist"
        raise ValueError(f"{path}: refused to load: the pickle asks for more than tensors ({reason}), so loading "
                         "it could run code. Use trusted files, ideally model.safetensors") from None
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ValueError(f"{path}: expected a dict of name -> tensor")
    return state


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """One checkpoint file (.safetensors or .bin), or a *.index.json naming shards in the same directory."""
    if path.name.endswith(".index.json"):
        weight_map = json.loads(path.read_text(encoding="utf-8")).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{path}: expected {{\"weight_map\": {{tensor name: shard file}}}}")
        state = {}
        for shard in sorted(set(weight_map.values())):
            state.update(read_weights(path.parent / shard))
        return state
    return load_safetensors(path) if path.suffix == ".safetensors" else load_torch_bin(path)


# ----- Hugging Face names <-> ours --------------------------------------------------------------------------------
def hf_state_dict_to_minigpt(state: dict[str, torch.Tensor], model: GPT2 | None = None,
                             source: str | Path = "state dict") -> dict[str, torch.Tensor]:
    """Hugging Face names and layout -> ours: strip `transformer.`, transpose the Conv1D weights, drop the mask
    buffers and the tied lm_head (checked equal to wte). With `model`, also check that the result fits it:
    every missing, unexpected and wrongly shaped key goes into one error."""
    want = None if model is None else {name: tuple(t.shape) for name, t in model.state_dict().items()}
    out, unexpected, mismatched, lm_head = {}, [], [], None
    for key, t in state.items():
        name = key.removeprefix("transformer.")
        if MASK_BUFFER.fullmatch(name):
            continue
        if name == "lm_head.weight":
            lm_head = t
        elif name in out or (want is not None and name not in want):
            unexpected.append(key)
        else:
            conv = name.endswith(CONV1D)
            if want is not None:
                stored = want[name][::-1] if conv else want[name]  # the shape the checkpoint should hold
                if tuple(t.shape) != stored:
                    mismatched.append(f"{key} checkpoint {tuple(t.shape)} vs model {stored}")
            out[name] = t.t() if conv and t.dim() == 2 else t  # Conv1D [in, out] -> nn.Linear [out, in]
    missing = [] if want is None else [name for name in want if name not in out]
    problems = [f"{label}: {', '.join(items)}" for label, items in
                (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if items]
    if lm_head is not None and "wte.weight" in out and not torch.equal(lm_head, out["wte.weight"]):
        problems.append("lm_head.weight differs from wte.weight (minigpt ties the LM head to the token embedding)")
    if problems:
        fit = "is not a GPT-2 state dict" if model is None else f"does not fit {model.config}"
        raise ValueError(f"checkpoint {source} {fit}: " + "; ".join(problems))
    return out


def minigpt_state_dict_to_hf(model: GPT2) -> dict[str, torch.Tensor]:
    """Our parameters under the names GPT2LMHeadModel writes; lm_head is left out, as transformers does."""
    state = model.state_dict()
    # the names depend on the layer count alone: a model of the same depth, one unit wide, lists them (cheaply,
    # and without the meta device, whose initializers import torch._dynamo: 2.3 s)
    cfg = model.config
    small = dataclasses.replace(cfg, vocab_size=1, n_positions=1, n_embd=cfg.n_head, padding_idx=None)
    expected = GPT2(small).state_dict().keys()
    if state.keys() != expected:
        extra = sorted(set(state) - set(expected)) + sorted(set(expected) - set(state))
        raise ValueError(f"save_pretrained: the model's parameters differ from GPT-2's ({', '.join(extra)}); "
                         "merge or remove adapters first")
    return {f"transformer.{name}": (t.t() if name.endswith(CONV1D) else t) for name, t in state.items()}


# ----- model directories ------------------------------------------------------------------------------------------
def resolve_model_dir(name_or_dir: str | Path) -> Path:
    """A preset name ('gpt2', ...: its cache directory, downloaded when incomplete) or a model directory.

    A string equal to a preset name means the preset; write './gpt2' for a directory of that name.
    """
    if isinstance(name_or_dir, str) and name_or_dir in PRESETS:
        from .download import cache_dir_for, download_model, is_complete

        cached = cache_dir_for(name_or_dir)
        return cached if is_complete(cached) else download_model(name_or_dir)
    path = Path(name_or_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model {str(name_or_dir)!r} is neither a directory nor a preset name "
                                f"({', '.join(PRESETS)})")
    return path


def kind_of(path: Path) -> str:
    """What stands at a path that is not a regular file, in words."""
    if path.is_symlink() and not path.exists():
        return f"a link to {os.readlink(path)}, which does not exist"
    if path.is_dir():
        return "a directory"
    return "a device, socket or pipe"


def find_weights(model_dir: Path) -> Path:
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    for name in WEIGHT_FILES:  # there, but a directory, a device or a broken link: say so, not "no such file"
        if os.path.lexists(model_dir / name):
            raise FileNotFoundError(f"{model_dir / name}: not a regular file ({kind_of(model_dir / name)}); a model "
                                    f"directory holds its weights as a file")
    present = sorted(p.name for p in model_dir.iterdir())
    hint = ""
    if any(name.endswith(".part") for name in present):
        hint = "; a .part file is an unfinished download, never loaded: run the download again to complete it"
    raise FileNotFoundError(f"{model_dir}: no model.safetensors or pytorch_model.bin (found: {present}){hint}")


def load_pretrained(name_or_dir: str | Path, dtype: torch.dtype | str | None = None, device: str = "cpu",
                    **config_overrides) -> GPT2:
    """A GPT2 with the weights of a preset ('gpt2', ...) or a model directory, in eval mode.

    dtype: floating-point tensors are converted to it (default: torch's default dtype, float32).
    config_overrides: GPT2Config fields to change, e.g. dropout=0.0.
    """
    model_dir = resolve_model_dir(name_or_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no config.json (a model directory holds config.json, "
                                "model.safetensors or pytorch_model.bin, vocab.json and merges.txt)")
    cfg = GPT2Config.from_json_file(model_dir / "config.json")
    known = {f.name for f in dataclasses.fields(GPT2Config)}
    if set(config_overrides) - known:
        raise TypeError(f"unknown GPT2Config fields {sorted(set(config_overrides) - known)}; known: {sorted(known)}")
    cfg = dataclasses.replace(cfg, **config_overrides)
    dtype = getattr(torch, dtype, dtype) if isinstance(dtype, str) else dtype or torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"load_pretrained: dtype must be a floating-point torch dtype, got {dtype!r}")

    with torch.device("meta"):  # shapes only: no memory, no time spent on a random init we would overwrite
        model = GPT2(cfg)
    weights = find_weights(model_dir)
    state = hf_state_dict_to_minigpt(read_weights(weights), model, weights)
    check_dtypes(state, model, weights)
    for name, t in state.items():  # one copy each, out of the memory map, into the requested dtype and device
        state[name] = t.to(device, dtype if t.is_floating_point() else None, copy=True,
                           memory_format=torch.contiguous_format)
    warn_non_finite(state, weights)
    model.load_state_dict(state, assign=True)
    return model.eval()


def check_dtypes(state: dict[str, torch.Tensor], model: GPT2, source) -> None:
    """A weight stored as integers or booleans cannot be a trainable parameter: refuse it, naming the tensor."""
    expected = model.state_dict()
    for name, t in state.items():
        if expected[name].is_floating_point() and not t.is_floating_point():
            raise ValueError(f"{source}: tensor {name} is stored as {DTYPE_NAMES.get(t.dtype, t.dtype)}, but it is "
                             "a weight, which needs a floating-point dtype (F32, F16 or BF16)")


def warn_non_finite(state: dict[str, torch.Tensor], source) -> None:
    """Warn, naming them, about tensors holding NaN or infinity (text generated from them is garbage; the
    trainer refuses to train from them)."""
    bad = non_finite_tensors(state)
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        warnings.warn(f"{source}: {len(bad)} tensor(s) hold NaN or infinity: {shown}; these weights give "
                      "meaningless outputs and cannot be trained", stacklevel=3)


def save_pretrained(model: GPT2, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write config.json + model.safetensors (+ vocab.json, merges.txt) so that transformers and we can load them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_safetensors(minigpt_state_dict_to_hf(model), out_dir / "model.safetensors", metadata={"format": "pt"})
    hf_config = model.config.to_hf_dict()
    hf_config["torch_dtype"] = str(model.wte.weight.dtype).removeprefix("torch.")
    atomic_write_text(out_dir / "config.json", json.dumps(hf_config, indent=2) + "\n")
    if tokenizer_dir is not None:
        for name in ("vocab.json", "merges.txt"):
            source = Path(tokenizer_dir) / name
            if not source.is_file():
                raise FileNotFoundError(f"save_pretrained: tokenizer file {source} does not exist")
            with open(source, "rb") as src:
                atomic_write(out_dir / name, lambda f: shutil.copyfileobj(src, f))
    return out_dir
