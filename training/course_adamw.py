"""AdamW as the CS224N GPT-2 project's optimizer.py computes it (the `--protocol course` optimizer).

For each parameter p with gradient g, at step t (from 1):

    m = beta1 m + (1 - beta1) g                              first moment
    v = beta2 v + (1 - beta2) g^2                            second moment
    step_size = lr * sqrt(1 - beta2^t) / (1 - beta1^t)       both bias corrections folded into the step size
    p = p - step_size * m / (sqrt(v) + eps)                  eps added to the UNcorrected sqrt(v)
    p = p - lr * weight_decay * p                            decoupled weight decay, AFTER the update

How it differs from minigpt/optim.py's AdamW (Loshchilov & Hutter 2019, Algorithm 2, as torch.optim.AdamW):
- eps: there it is added to sqrt(v_hat) = sqrt(v) / sqrt(1 - beta2^t); here to sqrt(v). Written in the same
  form, this update is torch's with eps_t = eps * sqrt(1 - beta2^t), a smaller eps in the first steps.
- eps defaults to 1e-6 (torch: 1e-8).
- weight decay shrinks the already updated p (torch shrinks p before the update).
- every parameter it is given decays alike (the course passes model.parameters(); its weight decay is 0).
"""
from __future__ import annotations

import math

import torch

from minigpt.optim import advance_state


class CourseAdamW(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"CourseAdamW: invalid hyperparameters lr={lr} betas={betas} eps={eps} "
                             f"wd={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                t = advance_state(state, p)
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                m.mul_(beta1).add_(g, alpha=1 - beta1)  # m = beta1 m + (1 - beta1) g
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v = beta2 v + (1 - beta2) g^2
                step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                p.addcdiv_(m, v.sqrt().add_(eps), value=-step_size)  # p -= step_size * m / (sqrt(v) + eps)
                if wd != 0:
                    p.add_(p, alpha=-lr * wd)  # p -= lr * wd * p, on the updated p
        return loss
