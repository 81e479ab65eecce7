"""The NaN guard: training never steps on, nor saves, NaN or infinite values, and says where they appeared.

    before training   weights holding NaN/inf (a broken checkpoint) are refused at once (minigpt/state_dict.py,
                      refuse_non_finite: they would give NaN losses from the first step)
    every step        the loop (training/loop.py) raises NonFiniteLossError before the optimizer step when the
                      loss or the gradient norm is not finite: the weights stay those of the last good step
    every save        the weights are checked first: a finite loss can still come with an overflowing update
"""
from __future__ import annotations

from pathlib import Path

import torch

from training.loop import NonFiniteLossError


def non_finite_error(what: str, where: str, last_path: Path, last_saved: bool) -> NonFiniteLossError:
    """The error a user reads: what was not finite, where, which checkpoint is still good, what to try."""
    last = (f"the last good checkpoint is {last_path} (untouched; continue with --resume after fixing)"
            if last_saved else "no checkpoint was written yet")
    return NonFiniteLossError(f"non-finite training values ({what}) in {where}; {last}. "
                              "Try a lower --lr, --max-grad-norm 1.0, or --no-amp.")


def all_finite(params: list[torch.Tensor]) -> bool:
    return bool(torch.stack([torch.isfinite(w).all() for w in params]).all())


def check_loss(loss) -> None:
    """loss_fn's contract: a scalar tensor that depends on the trainable parameters."""
    if not torch.is_tensor(loss) or loss.ndim != 0:
        got = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
        raise TypeError(f"loss_fn must return a scalar tensor (the mean loss over the micro-batch), got {got}")
    if not loss.requires_grad:
        raise ValueError("loss_fn's loss does not depend on any trainable parameter (did it call the model?)")
