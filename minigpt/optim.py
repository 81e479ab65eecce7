"""AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", Algorithm 2) and the linear
warmup-then-decay learning-rate schedule.

For each parameter p with gradient g, at step t (from 1):

    m = beta1 m + (1 - beta1) g                 first moment (running mean of gradients)
    v = beta2 v + (1 - beta2) g^2               second moment (running mean of squared gradients)
    m_hat = m / (1 - beta1^t)                   bias correction: m and v start at 0
    v_hat = v / (1 - beta2^t)
    p = p - lr * weight_decay * p               decoupled weight decay (not through the gradient)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)

Speed: these lines are eight elementwise operations over four tensors (p, g, m, v). Run one at a time over a whole
tensor (the 38M-entry token embedding is 154 MB), each operation streams its tensors through main memory again.
We run all eight on one cache-sized piece of a parameter at a time (CHUNK entries), so each piece comes from
memory once. Every entry goes through the same operations in the same order, so the result is bitwise the one
of whole-tensor updates (and of torch.optim.AdamW's for-loop path, the CPU default); gpt2 full fine-tuning on
2 CPU threads: 0.39 s -> 0.26 s per optimizer step.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

# entries per piece: 4 MiB of fp32 per tensor, so the five tensors of a piece (p, g, m, v, denominator) stay in the
# last-level cache; smaller pieces are as fast on an idle machine, but mean more multi-threaded kernel launches, and
# each launch waits for every thread, which costs a lot when other processes share the cores
CHUNK = 1 << 20


class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"AdamW: invalid hyperparameters lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                for piece in pieces(p, p.grad, state["exp_avg"], state["exp_avg_sq"]):
                    adamw_update(*piece, state["step"], group)
        return loss


def pieces(p, g, m, v):
    """(p, g, m, v) cut into matching flat CHUNK-sized views (in place: updating a view updates the tensor).

    A non-contiguous p, m or v cannot be flattened into a view, so it is updated whole.
    """
    if not (p.is_contiguous() and m.is_contiguous() and v.is_contiguous()):
        return [(p, g, m, v)]
    return zip(*(t.reshape(-1).split(CHUNK) for t in (p, g, m, v)))  # g may be a copy: it is only read


def adamw_update(p, g, m, v, t: int, group: dict) -> None:
    """One AdamW step (module docstring) on p, in place; m and v are the moments, t the step number from 1."""
    beta1, beta2 = group["betas"]
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    m.lerp_(g, 1 - beta1)  # m = beta1 m + (1 - beta1) g
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v = beta2 v + (1 - beta2) g^2
    bias1 = 1 - beta1**t
    bias2 = 1 - beta2**t
    if wd != 0:
        p.mul_(1 - lr * wd)  # decoupled weight decay (skipped, as torch does, where it would multiply by 1)
    # p -= lr * (m / bias1) / (sqrt(v / bias2) + eps)
    denom = v.sqrt().div_(math.sqrt(bias2)).add_(eps)
    p.addcdiv_(m, denom, value=-lr / bias1)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weight matrices decay; biases, LayerNorm weights and embeddings do not (GPT-2 practice).

    Only parameters with requires_grad are included, so frozen base weights (LoRA, prefix-tuning) stay out.
    """
    decay, no_decay = [], []
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or id(p) in embedding_params:
            no_decay.append(p)  # biases, LayerNorm gains, DoRA magnitudes; embeddings
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: 0 -> 1 linearly over warmup_steps, then 1 -> 0 linearly until total_steps.

    step counts optimizer steps from 0 (the same values as transformers' get_linear_schedule_with_warmup).
    """
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def warmup_decay_scheduler(optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying linear_warmup_decay; its state_dict saves the step for resuming."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: linear_warmup_decay(s, warmup_steps, total_steps))
