"""torch.compile for minigpt: one check that it can work on this machine, then the module compiled in place.

torch.compile (PyTorch 2) traces a module's forward (and, in training, its backward) into graphs and hands them to
inductor, which fuses the elementwise work between the matmuls (LayerNorm, GELU, dropout, the residual adds) into
generated kernels: C++ with OpenMP on a CPU, built by the machine's C++ compiler; Triton on a GPU. The first call
of each new shape pays for the compilation; later calls reuse it.

`module.compile()` (nn.Module.compile) compiles the module where it stands: its state_dict keys, attributes and
methods stay as they were (torch.compile(module) would wrap it and prefix every key with `_orig_mod.`), so
checkpoints, --resume and the decoders see the same module. Calling a submodule or a method directly (e.g.
`lm_head`) runs it eagerly.

Numbers: the same equations in other kernels, so equal to eager within float rounding (tests/test_compile.py:
training losses to 1e-4, the decoders' tokens identical on inputs without near-ties). Dropout under inductor draws
its masks from its own generator: other random draws than eager's, as on another device.
"""
from __future__ import annotations

import os
import shutil

import torch
import torch.nn as nn


def cpp_compiler() -> str | None:
    """The C++ compiler inductor calls on a CPU: $CXX, else the names in torch._inductor.config.cpp.cxx (g++),
    as found on PATH; None when there is none."""
    from torch._inductor import config

    names = [os.environ.get("CXX"), *config.cpp.cxx]
    return next((shutil.which(n) for n in names if n and shutil.which(n)), None)


def compile_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` here, in a few words; None when nothing stands in its way."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python or platform"
    if device.type == "cpu" and cpp_compiler() is None:
        return "inductor needs a C++ compiler on a CPU and found none (install g++ or set CXX)"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "inductor needs Triton on a GPU and this torch has none (pip install triton)"
    if device.type not in ("cpu", "cuda"):
        return f"inductor does not compile for {device.type} in this project"
    return None


def compile_model(module: nn.Module, device: torch.device, dynamic: bool | None = None) -> nn.Module:
    """Compile `module` in place for `device` (see the module docstring) and return it. A machine where inductor
    cannot work gets a one-line RuntimeError naming the cause, before any work is done (inductor itself would
    fail only at the first call, deep inside a training step). dynamic=True: one graph for every length (the
    decoders, whose key length grows each step); None: torch's default (static first, dynamic after a change)."""
    problem = compile_problem(device)
    if problem:
        raise RuntimeError(f"--compile: {problem}; run without --compile")
    module.compile(dynamic=dynamic)
    return module
