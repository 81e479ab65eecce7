"""Loading and saving GPT-2 weights in the Hugging Face layout.

A model directory holds config.json, model.safetensors (or pytorch_model.bin), vocab.json and merges.txt.

The safetensors format (https://github.com/huggingface/safetensors), in full:

    8 bytes   N, the length of the header, unsigned little-endian
    N bytes   JSON: {"<name>": {"dtype": "F32", "shape": [768, 2304], "data_offsets": [begin, end]}, ...,
                     "__metadata__": {"format": "pt"}}        (metadata optional, str -> str)
    the rest  the data: each tensor's raw little-endian bytes, row-major, at [begin, end) of this region

Memory: the file is memory-mapped copy-on-write and every tensor is a zero-copy view into the mapping
(torch.frombuffer). load_pretrained then copies each tensor once into the model's dtype and device, so a load
needs one model's worth of memory plus the file's pages, which the OS may drop at any time (they are a cache of
the file, not a second copy). For gpt2-xl (6.4 GB in F32) that is about 6.4 GB, not 12.8 GB.

The public checkpoint differs from our module in three ways (see hf_state_dict_to_minigpt):
  * names may carry a `transformer.` prefix (GPT2LMHeadModel) or not (GPT2Model);
  * the four projections are Conv1D layers storing [in, out]; nn.Linear stores [out, in], so we transpose;
  * `attn.bias` / `attn.masked_bias` are constant causal-mask buffers, not weights (but `c_attn.bias` is!),
    and `lm_head.weight` is the token embedding again (tied): both are skipped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import mmap
import os
import pickle
import re
import shutil
import sys
import warnings
import zipfile
from pathlib import Path

import torch

from .config import PRESETS, GPT2Config
from .files import atomic_write
from .model import GPT2

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # not h.0.attn.c_attn.bias: that one is a weight
# in order of preference; an *.index.json names the shards of a checkpoint split over several files
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


# ----- safetensors: read ------------------------------------------------------------------------------------------
def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file, as zero-copy views of a copy-on-write memory map."""
    path = Path(path)
    if sys.byteorder != "little":
        raise NotImplementedError("safetensors data is little-endian; this reader supports little-endian hosts only")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise ValueError(f"{path}: truncated safetensors file ({size} bytes; "
                             "it starts with an 8-byte header length)")
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # writable for torch, never written back
    entries, _, start = parse_header(data, size, path)
    tensors = {}
    for name, (dtype, shape, (begin, end)) in entries.items():
        count = math.prod(shape)
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)  # frombuffer refuses empty views
            continue
        t = torch.frombuffer(data, dtype=dtype, count=count, offset=start + begin).view(shape)
        tensors[name] = t if (start + begin) % t.element_size() == 0 else t.clone()  # keep kernels aligned
    return tensors


def parse_header(data, size: int, path: Path) -> tuple[dict, dict, int]:
    """Validate the header -> ({name: (dtype, shape, (begin, end))}, metadata, where the data starts)."""
    n = int.from_bytes(data[:8], "little")
    if n > size - 8:
        raise ValueError(f"{path}: header length {n} is larger than the file ({size} bytes): truncated, or not "
                         "a safetensors file")
    if n > MAX_HEADER:
        raise ValueError(f"{path}: header length {n} exceeds the 100 MB limit: not a safetensors file")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: safetensors header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise ValueError(f"{path}: __metadata__ must map strings to strings, got {metadata!r}")
    data_size = size - 8 - n
    entries = {name: _parse_entry(name, entry, path) for name, entry in header.items()}
    previous = None
    for name, (_, _, (begin, end)) in sorted(entries.items(), key=lambda item: item[1][2]):
        if end > data_size:
            raise ValueError(f"{path}: tensor {name!r} at data bytes [{begin}, {end}) lies outside the data "
                             f"({data_size} bytes): the file is truncated or its offsets are wrong")
        if previous is not None and begin < previous[1]:
            raise ValueError(f"{path}: tensors {previous[0]!r} (data bytes [{previous[2]}, {previous[1]})) and "
                             f"{name!r} ([{begin}, {end})) overlap")
        if end > begin:
            previous = (name, end, begin)
    return entries, metadata, 8 + n


def _parse_entry(name: str, entry, path: Path):
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"{path}: tensor {name!r} needs exactly dtype, shape and data_offsets, got {entry!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise ValueError(f"{path}: tensor {name!r} has unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise ValueError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise ValueError(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r}")
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise ValueError(f"{path}: tensor {name!r} has {offsets[1] - offsets[0]} bytes, but shape {shape} of "
                         f"{dtype} needs {nbytes}")
    return DTYPES[dtype], shape, tuple(offsets)


# ----- safetensors: write -----------------------------------------------------------------------------------------
def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None):
    """Write tensors as one .safetensors file, atomically (a temporary file, then a rename)."""
    # Widest dtypes first and a header padded to 8 bytes: every tensor then starts at a multiple of its own size.
    names = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, offset = {}, 0
    for name in names:
        t = tensors[name]
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"{path}: cannot store tensor {name!r} of dtype {t.dtype} in safetensors")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)

    def write(f):
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name in names:  # the raw bytes, one tensor at a time (no copy of the whole model)
            t = tensors[name].detach().to("cpu").contiguous().reshape(-1)
            f.write(memoryview(t.view(torch.uint8).numpy()))

    atomic_write(Path(path), write)


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
    with torch.device("meta"):
        expected = GPT2(model.config).state_dict().keys()
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


def find_weights(model_dir: Path) -> Path:
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
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


def warn_non_finite(state: dict[str, torch.Tensor], source) -> list[str]:
    """Warn, naming them, about tensors holding NaN or infinity (text generated from them is garbage; the
    trainer refuses to train from them). Returns their names."""
    bad = [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        warnings.warn(f"{source}: {len(bad)} tensor(s) hold NaN or infinity: {shown}; these weights give "
                      "meaningless outputs and cannot be trained", stacklevel=3)
    return bad


def save_pretrained(model: GPT2, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write config.json + model.safetensors (+ vocab.json, merges.txt) so that transformers and we can load them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_safetensors(minigpt_state_dict_to_hf(model), out_dir / "model.safetensors", metadata={"format": "pt"})
    hf_config = model.config.to_hf_dict()
    hf_config["torch_dtype"] = str(model.wte.weight.dtype).removeprefix("torch.")
    text = (json.dumps(hf_config, indent=2) + "\n").encode("utf-8")
    atomic_write(out_dir / "config.json", lambda f: f.write(text))
    if tokenizer_dir is not None:
        for name in ("vocab.json", "merges.txt"):
            source = Path(tokenizer_dir) / name
            if not source.is_file():
                raise FileNotFoundError(f"save_pretrained: tokenizer file {source} does not exist")
            with open(source, "rb") as src:
                atomic_write(out_dir / name, lambda f: shutil.copyfileobj(src, f))
    return out_dir
