"""AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", Algorithm 2) and the linear
warmup-then-decay learning-rate schedule.

For each parameter p with gradient g, at step t (from 1):

    m = beta1 m + (1 - beta1) g                 first moment (running mean of gradients)
    v = beta2 v + (1 - beta2) g^2               second moment (running mean of squared gradients)
    m_hat = m / (1 - beta1^t)                   bias correction: m and v start at 0
    v_hat = v / (1 - beta2^t)
    p = p - lr * weight_decay * p               decoupled weight decay (not through the gradient)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)

Two forms run these lines (tests prove they agree with torch.optim.AdamW's for-loop and foreach forms):
  * `adamw_step` (`AdamW(..., foreach=False)`, what `--explicit-math` trains with): one parameter at a time,
    the lines above as plain tensor operations. Read this one.
  * `adamw_update` (`foreach=True`, the default), the fast variant: the same lines on LISTS of tensors with
    torch's multi-tensor `torch._foreach_*` operations (the form of torch.optim.AdamW(foreach=True)). On a GPU one
    launch then updates many parameters instead of ~8 kernel launches per parameter (gpt2 has 148 parameter
    tensors: ~1,200 launches). On a CPU a foreach operation is a loop over its tensors, and each operation
    streams a whole tensor through main memory again (the 38M-entry token embedding is 154 MB), so there we cut
    the parameters into cache-sized flat pieces (CHUNK entries, `piece_lists`) and give the lines one list of
    pieces at a time (small parameters share a list), so each piece comes from memory once.
What the fast variant buys, measured on gpt2's 124M parameters (2 threads; `bench train`'s AdamW table,
bench/adamw.py; README, "Tests and benchmarks"): 335 ms a step in pieces, whole tensors 679 ms, torch.optim.AdamW
foreach 814 ms. On a 2-layer gpt2-width model (46M parameters, 38M of them the token embedding) on this 2-core
machine shared with other jobs (load average ~5, two runs each, rough): plain one parameter at a time
1574-1824 ms a step, the pieces 1289-1498 ms.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .optimizer_base import Optimizer

# entries per list of pieces on CPU: 4 MiB of fp32 per tensor, so the five tensors of a list (p, g, m, v,
# denominator) stay in the last-level cache; smaller pieces are as fast on an idle machine, but mean more
# multi-threaded kernel launches, and each launch waits for every thread, which costs a lot when other processes
# share the cores
CHUNK = 1 << 20


class AdamW(Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
                 foreach: bool = True):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"AdamW: invalid hyperparameters lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                advance_state(self.state[p], p)
            states = [self.state[p] for p in params]
            grads = [p.grad for p in params]
            ms = [s["exp_avg"] for s in states]
            vs = [s["exp_avg_sq"] for s in states]
            steps = [s["step"] for s in states]
            if not self.foreach:
                for p, g, m, v, t in zip(params, grads, ms, vs, steps):
                    adamw_step(p, g, m, v, t, group)  # the plain form, one parameter at a time
                continue
            for lists in piece_lists(params, grads, ms, vs, steps):
                adamw_update(*lists, group)  # the fast variant: lists of pieces
        return loss


def adamw_step(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: int, group: dict) -> None:
    """One AdamW step (module docstring) on one parameter p, in place; m, v are its moments, t its step number."""
    beta1, beta2 = group["betas"]
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    m.lerp_(g, 1 - beta1)  # m = beta1 m + (1 - beta1) g
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v = beta2 v + (1 - beta2) g^2
    bias1, bias2 = 1 - beta1**t, 1 - beta2**t  # bias corrections: m_hat = m / bias1, v_hat = v / bias2
    p.mul_(1 - lr * wd)  # decoupled weight decay
    # p -= lr * m_hat / (sqrt(v_hat) + eps), in torch's order of operations (where sqrt(v_hat) ~ eps, another
    # order rounds differently enough to show)
    denom = v.sqrt() / math.sqrt(bias2) + eps
    p.addcdiv_(m, denom, value=-lr / bias1)


def adamw_update(p: list, g: list, m: list, v: list, t: list, group: dict) -> None:
    """adamw_step on lists of tensors at once, the fast variant (module docstring); m, v, t of each tensor.

    Every operation works on all the tensors of the lists at once (torch._foreach_*): the same operations, in the
    same order, as torch.optim.AdamW(foreach=True) without its capturable/amsgrad/maximize options.
    """
    beta1, beta2 = group["betas"]
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    torch._foreach_lerp_(m, g, 1 - beta1)  # m = beta1 m + (1 - beta1) g
    torch._foreach_mul_(v, beta2)  # v = beta2 v + (1 - beta2) g^2
    torch._foreach_addcmul_(v, g, g, 1 - beta2)
    bias1 = [1 - beta1**s for s in t]  # one per tensor: a parameter that missed a step has its own t
    bias2 = [1 - beta2**s for s in t]
    if wd != 0:
        torch._foreach_mul_(p, 1 - lr * wd)  # decoupled weight decay (skipped, as torch does, where it is 1)
    # p -= lr * (m / bias1) / (sqrt(v / bias2) + eps)
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, [b**0.5 for b in bias2])
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(p, m, denom, [(lr / b) * -1 for b in bias1])


def piece_lists(params, grads, ms, vs, steps):
    """(p, g, m, v, t) lists for adamw_update: on CUDA (or another accelerator) all the tensors at once; on a CPU
    lists of flat views (updating a view updates its tensor) of at most CHUNK entries in all (module docstring).

    A non-contiguous p, m or v cannot be flattened into a view, so it goes whole into a list of its own.
    """
    if not params or params[0].device.type != "cpu":
        yield params, grads, ms, vs, steps
        return
    lists, size = ([], [], [], [], []), 0
    for p, g, m, v, t in zip(params, grads, ms, vs, steps):
        if not (p.is_contiguous() and m.is_contiguous() and v.is_contiguous()):
            yield [p], [g], [m], [v], [t]
            continue
        for piece in zip(*(x.reshape(-1).split(CHUNK) for x in (p, g, m, v))):  # g may be a copy: only read
            if size + piece[0].numel() > CHUNK and size > 0:
                yield lists
                lists, size = ([], [], [], [], []), 0
            for out, x in zip(lists, (*piece, t)):
                out.append(x)
            size += piece[0].numel()
    if size > 0:
        yield lists


def advance_state(state: dict, p: torch.Tensor) -> dict:
    """p's Adam state, made at its first step (step 0, both moments zero), with the step count advanced by one."""
    if not state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)  # m
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)  # v
    state["step"] += 1
    return state


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weight matrices decay; biases, LayerNorm weights and embeddings do not (GPT-2 practice).

    Only parameters with requires_grad are included, so frozen base weights (LoRA, prefix-tuning) stay out.
    """
    decay, no_decay = [], []
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for _name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or id(p) in embedding_params:
            no_decay.append(p)  # biases, LayerNorm gains, DoRA magnitudes; embeddings
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class LRSchedule:
    """The learning rate of every group = its base rate x multiplier(step), step = optimizer steps taken (from 0).

    Call step() after each optimizer step. The same rates as torch.optim.lr_scheduler.LambdaLR(optimizer,
    multiplier) (tests/test_optim.py); state_dict() keeps the step count and base rates for resuming.
    """

    def __init__(self, optimizer: Optimizer, multiplier):
        self.optimizer, self.multiplier = optimizer, multiplier
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.steps = 0
        self.set_rates()

    def step(self) -> None:
        self.steps += 1
        self.set_rates()

    def set_rates(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.multiplier(self.steps)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, saved: dict) -> None:
        """Ours, or a LambdaLR's (its last_epoch counts the same steps: checkpoints written before LRSchedule)."""
        self.steps = saved["steps"] if "steps" in saved else saved["last_epoch"]
        self.base_lrs = list(saved["base_lrs"])
        self.set_rates()


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: 0 -> 1 linearly over warmup_steps, then 1 -> 0 linearly until total_steps.

    step counts optimizer steps from 0 (the same values as transformers' get_linear_schedule_with_warmup).
    """
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
