"""The safetensors file format (https://github.com/huggingface/safetensors), read and written by hand.

The format, in full:

    8 bytes   N, the length of the header, unsigned little-endian
    N bytes   JSON: {"<name>": {"dtype": "F32", "shape": [768, 2304], "data_offsets": [begin, end]}, ...,
                     "__metadata__": {"format": "pt"}}        (metadata optional, str -> str)
    the rest  the data: each tensor's raw little-endian bytes, row-major, at [begin, end) of this region

Memory: the file is memory-mapped copy-on-write and every tensor is a zero-copy view into the mapping
(torch.frombuffer). load_pretrained then copies each tensor once into the model's dtype and device, so a load
needs one model's worth of memory plus the file's pages, which the OS may drop at any time (they are a cache of
the file, not a second copy). For gpt2-xl (6.4 GB in F32) that is about 6.4 GB, not 12.8 GB.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import sys
from pathlib import Path

import torch

from .files import atomic_write

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit


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
    for name, (dtype, shape, (begin, _end)) in entries.items():
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
