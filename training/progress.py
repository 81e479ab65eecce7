"""Where a training run stands (Progress, saved in last.pt) and what train() returns (TrainResult)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Progress:
    """Where training stands; saved in last.pt, so that --resume continues at this exact point."""
    epoch: int = 0  # 0-based epoch in progress (== epochs when done)
    step_in_epoch: int = 0  # optimizer steps already done in it
    global_step: int = 0
    loss_sum: float = 0.0  # this epoch so far: sum over steps of mean loss x examples
    examples: int = 0
    tokens: int = 0
    seconds: float = 0.0
    best: list = field(default_factory=list)  # [{"epoch", "score", "metrics"}], best first, at most keep_best
    best_score: float = -math.inf
    best_epoch: int = 0
    bad_evals: int = 0  # evaluations since the last improvement (patience)
    last_lr: float | None = None  # the learning rate of the last optimizer step (its metrics line's "lr")
    history: list = field(default_factory=list)

    def add_history_line(self, metrics: dict, lr: float, eval_seconds: float, complete: bool) -> dict:
        """The epoch's line of metrics.jsonl (also logged): training loss, dev metrics, lr, speed."""
        line = {"epoch": self.epoch + 1, "step": self.global_step, "train_loss": self.loss_sum / max(self.examples, 1),
                **metrics, "lr": lr, "seconds": round(self.seconds, 3), "eval_seconds": round(eval_seconds, 3),
                "tokens_per_s": round(self.tokens / max(self.seconds, 1e-9), 1)}
        if not complete:
            line["partial_epoch"] = True  # --max-steps stopped it: last.pt keeps the position
        self.history.append(line)
        return line

    def note_score(self, epoch: int, score: float) -> None:
        """Early stopping's count: evaluations since the best score (ties keep the earlier epoch)."""
        if score > self.best_score or not self.best_epoch:
            self.best_score, self.best_epoch, self.bad_evals = score, epoch, 0
        else:
            self.bad_evals += 1

    def start_next_epoch(self) -> None:
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.loss_sum, self.examples, self.tokens, self.seconds = 0.0, 0, 0, 0.0

    def model_epoch(self, best_loaded: bool) -> int | None:
        """The epoch whose weights the model holds: the loaded best checkpoint's, else the last one trained."""
        if best_loaded:
            return self.best[0]["epoch"]
        if not self.history or self.history[-1].get("partial_epoch"):  # untrained, or max_steps stopped mid-epoch
            return None
        return self.history[-1]["epoch"]


@dataclass
class TrainResult:
    best_metric: float | None  # the best dev `metric` (None without evaluate)
    best_epoch: int | None  # 1-based; without evaluate the last epoch
    best_checkpoint: str | None  # the file whose weights are now in the model (None: keep_best=0)
    last_checkpoint: str | None
    history: list[dict]  # the metrics.jsonl lines
    step_log: list[dict]  # {"step", "epoch", "loss", "lr", "grad_norm"} per optimizer step run in this call
    global_step: int
    stop_reason: str  # "completed", "early stopping", "max_steps"
    model_epoch: int | None = None  # the epoch whose weights the model holds (best, or last with --select last)
    select: str = "best"

    @property
    def holds_best(self) -> bool:
        """True when the model holds the best dev epoch's weights (best_metric is then their score)."""
        return self.best_metric is not None and self.model_epoch is not None and self.model_epoch == self.best_epoch

    def describe(self) -> str:
        """Which weights the model now holds, in words: "best epoch 3", "untrained (--epochs 0)", ..."""
        epoch = self.model_epoch
        if epoch is None:
            if self.global_step == 0:
                return "untrained (--epochs 0)"
            # e.g. max_steps stopped mid-epoch with no best checkpoint to load
            return f"the weights after step {self.global_step} ({self.stop_reason}; no best checkpoint loaded)"
        if self.select == "last":
            return f"the last epoch, {epoch}"
        if epoch == self.best_epoch:
            return f"best epoch {epoch}" if self.best_metric is not None else f"epoch {epoch}"
        return f"the last epoch, {epoch} (--keep-best 0 kept no checkpoint of the best epoch, {self.best_epoch})"
