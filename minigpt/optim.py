"""AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", Algorithm 2) and the linear
warmup-then-decay learning-rate schedule.

For each parameter p with gradient g, at step t (from 1):

    m = beta1 m + (1 - beta1) g                 first moment (running mean of gradients)
    v = beta2 v + (1 - beta2) g^2               second moment (running mean of squared gradients)
    m_hat = m / (1 - beta1^t)                   bias correction: m and v start at 0
    v_hat = v / (1 - beta2^t)
    p = p - lr * weight_decay * p               decoupled weight decay (not through the gradient)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)

`AdamW` below runs these lines one parameter at a time, as plain tensor operations (`adamw_step`): the form to
read and step through, and what `--explicit-math` trains with. Every other run trains with PyTorch's fused kernel
for the same lines, torch.optim.AdamW(fused=True) (training/optimization.py chooses); tests/test_optim.py proves
ours equal to torch's for-loop form and to its fused kernel, and each resumes from the other's state.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class AdamW(torch.optim.Optimizer):
    """torch.optim.Optimizer keeps the parameter groups, the per-parameter state, zero_grad and state_dict; the
    update rule is ours."""

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
                    continue  # no gradient this step (a frozen or unused parameter): no update, no step count
                state = self.state[p]
                t = advance_state(state, p)
                adamw_step(p, p.grad, state["exp_avg"], state["exp_avg_sq"], t, group)
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


def advance_state(state: dict, p: torch.Tensor) -> int:
    """Advance p's Adam state by one step and return the new step number t (from 1). The state is made at the
    first step: step 0, both moments zero. The step count is kept as torch.optim.AdamW keeps it, a float32 scalar
    tensor, so that either optimizer continues from the other's state."""
    if not state:
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)  # m
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)  # v
    state["step"] += 1
    return int(state["step"])


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

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier):
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
