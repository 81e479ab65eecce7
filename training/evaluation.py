"""The dev evaluation at an epoch's end: run the task's evaluate() without disturbing training, and score it."""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch
import torch.nn as nn

from training.checkpointing import capture_rng_state, restore_rng_state

logger = logging.getLogger("minigpt.trainer")


def evaluate_model(module: nn.Module, evaluate: Callable[[nn.Module], dict], metric: str,
                   device: torch.device) -> dict[str, float]:
    """evaluate(module) in eval mode without gradients; training's random streams are saved before and
    restored after, so the evaluation's draws (sampling, ...) never change what training does next."""
    rng = capture_rng_state(device)
    module.eval()
    with torch.no_grad():
        metrics = evaluate(module)
    module.train()
    restore_rng_state(rng, device)
    if not isinstance(metrics, dict) or metric not in metrics:
        keys = list(metrics) if isinstance(metrics, dict) else type(metrics).__name__
        raise ValueError(f"evaluate() must return a dict holding the metric {metric!r}; got {keys}")
    bad = {k: v for k, v in metrics.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
    if bad:
        raise TypeError(f"evaluate() must return numbers (floats or ints), got {bad}")
    if not math.isfinite(metrics[metric]):
        logger.warning(f"warning: {metric} = {metrics[metric]}; counted as the worst score")
    return {k: float(v) for k, v in metrics.items()}


def epoch_score(metrics: dict[str, float], metric: str) -> float | None:
    """The epoch's score for best-k and patience (higher is better): its `metric`, -inf when that is NaN or
    infinite; None when the epoch was not evaluated."""
    if metric not in metrics:
        return None
    return metrics[metric] if math.isfinite(metrics[metric]) else -math.inf
