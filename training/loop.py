"""The training loop, plain: one epoch of fine-tuning, read top to bottom.

    for each optimizer step:
        for each micro-batch of the step (gradient accumulation: several micro-batches make one step):
            loss = loss_fn(model, batch)              forward: the mean loss over the micro-batch, a scalar
            (loss * weight).backward()                backward: gradients add up over the step's micro-batches
        clip the gradient's global L2 norm to max_grad_norm
        optimizer.step(); scheduler.step(); optimizer.zero_grad()

A micro-batch's weight is its share of the step's examples (n_micro / n_step), so the weights of a step sum to 1
and the step's gradient is that of the mean loss over all its examples: with equal micro-batches the familiar
loss / A for A accumulated micro-batches.

This file knows nothing of checkpoints, resuming, dev evaluation, mixed precision or processes: training/trainer.py
wraps the loop with them (its loss_fn adds autocast, its weights include the process count, its no_sync lets
DistributedDataParallel all-reduce the gradients once per step) and reads what each step yields.

    steps = [[(batch, 1.0)] for batch in batches]    # one micro-batch per step
    for stats in train_epoch(model, steps, loss_fn, optimizer, scheduler, max_grad_norm=1.0):
        print(stats)                                   # {"loss": 2.31, "grad_norm": 0.8, "lr": 1e-05}
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, Iterable, Iterator

import torch
import torch.nn as nn


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; training stopped before the optimizer step."""


def epoch_plan(n_examples: int, batch_size: int, grad_accum: int, world_size: int, seed: int, epoch: int):
    """The epoch's optimizer steps: a list of steps, each a list of micro-batches (LongTensors of example ids).

    The order is randperm(n_examples) from a generator seeded by (seed, epoch), the same on every process; it is
    cut into micro-batches of batch_size examples, and grad_accum consecutive micro-batches make one step.
    A last micro-batch smaller than world_size is dropped (it could not give every process an example)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_examples, generator=generator)
    micro = list(order.split(batch_size))
    if micro and len(micro[-1]) < world_size:
        micro.pop()
    return [micro[i:i + grad_accum] for i in range(0, len(micro), grad_accum)]


def global_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """sqrt(sum of every gradient entry squared): the L2 norm of all the gradients as one vector."""
    norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.tensor(0.0)


def train_epoch(model: nn.Module, steps: Iterable[list], loss_fn: Callable[[nn.Module, object], torch.Tensor],
                optimizer, scheduler, max_grad_norm: float,
                no_sync: Callable = nullcontext) -> Iterator[dict]:
    """Train `model` on `steps`, each a list of (batch, weight) micro-batches; yield {"loss", "grad_norm", "lr"}
    after every optimizer step (so the caller can log, save or stop between steps).

    loss_fn(model, batch) -> the mean loss over the micro-batch (a scalar tensor). max_grad_norm 0: no clipping.
    optimizer and scheduler: minigpt.optim's AdamW and LRSchedule, or torch.optim's (the same methods).
    no_sync(): a context for all but each step's last micro-batch (DDP: keep the gradients local until then).
    Raises NonFiniteLossError before the optimizer step when the loss or the gradient norm is NaN or infinite.
    """
    model.train()  # dropout on
    params = [p for p in model.parameters() if p.requires_grad]
    for micro_batches in steps:
        step_loss = 0.0
        for i, (batch, weight) in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with nullcontext() if last else no_sync():
                loss = loss_fn(model, batch)  # (), the forward pass
                (loss * weight).backward()  # adds weight * d loss / d param to every param.grad
            step_loss = step_loss + loss.detach() * weight
        # the gradient's global L2 norm over all trainable parameters, before clipping it to max_grad_norm
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm) if max_grad_norm
                          else global_norm(params))  # (clip_grad_norm_ would still scale every gradient by 1)
        step_loss = float(step_loss)
        # never step on NaN: the weights stay good. (DDP: a NaN on one rank reaches every rank's gradient through
        # the all-reduce, so all ranks refuse at the same step.)
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
            raise NonFiniteLossError(f"loss {step_loss}, gradient norm {grad_norm}")
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
        optimizer.step()  # AdamW: the weights move
        scheduler.step()  # the next step's learning rate
        optimizer.zero_grad(set_to_none=True)  # the next step's gradients start from nothing
        yield {"loss": step_loss, "grad_norm": grad_norm, "lr": lr}
