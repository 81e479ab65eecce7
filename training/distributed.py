"""Data parallelism across processes: which process am I, on which device, and how the processes talk.

`torchrun --nproc_per_node=N run.py ...` starts N copies of the program and tells each one who it is through
environment variables:

    RANK         this process, 0 .. WORLD_SIZE - 1 (rank 0 is the "main" process: it writes files, prints)
    WORLD_SIZE   how many processes train together
    LOCAL_RANK   this process on this machine (picks the GPU: cuda:LOCAL_RANK)
    MASTER_ADDR, MASTER_PORT   where rank 0 listens, so the processes can find each other

Each process holds a full copy of the model and sees a different slice of every global batch. After backward,
DistributedDataParallel averages the gradients of all processes (an all-reduce), so every copy takes the same
optimizer step and the copies stay identical. Without these variables everything here degrades to one process.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel


def get_rank() -> int:
    """This process's rank (0 without torchrun). Works before init and after the group is destroyed."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """True on rank 0, the one process that writes files and prints (tasks: guard test predictions with it)."""
    return get_rank() == 0


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda (the GPU numbered LOCAL_RANK), else mps, else cpu; 'cuda', 'mps', 'cpu' force one."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA GPU is visible to this process (try --device auto)")
        return torch.device("cuda", local_rank)
    if name == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("--device mps: the Apple MPS backend is not available here (try --device auto)")
    if name not in ("mps", "cpu") and not name.startswith("cuda:"):
        raise ValueError(f"--device {name!r}: expected one of auto, cuda, mps, cpu (or cuda:N)")
    return torch.device(name)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def init_distributed(device: torch.device) -> bool:
    """Join the process group when torchrun asked for more than one process.

    Returns True when this call created the group (the caller then destroys it with destroy_distributed).
    Backend: nccl between GPUs, gloo between CPU processes.
    """
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of `t` over all processes (in place; `t` itself with one process)."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (any picklable object)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_all(obj: Any) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def run_on_main(fn: Callable[[], Any]) -> Any:
    """Run fn() on rank 0 only and return its result on every rank; if it fails, every rank raises.

    The other ranks wait here until rank 0 is done (this is the barrier after each checkpoint write), and a
    failure on rank 0 (a full disk, a bad metric) stops them too instead of leaving them waiting forever.
    """
    if not dist.is_initialized():
        return fn()
    error, result = None, None
    if is_main_process():
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
    message = None if error is None else f"{type(error).__name__}: {error}"
    message, result = broadcast_from_main((message, result))
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"rank 0 failed, stopping rank {get_rank()} too: {message}")
    return result
