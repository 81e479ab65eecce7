"""The one training loop every task uses.

A task brings a model, its training examples, a collate function, a loss and (optionally) a dev evaluation:

    seed_everything(cfg.seed)                        # before building the model: reproducible init (LoRA A, heads)
    model = ...                                      # an nn.Module; frozen parameters (requires_grad=False) stay fixed
    result = train(model, train_data, collate, loss_fn, cfg, evaluate=dev_eval, metric="dev_chrf")
    # train_data: a Sequence of examples; collate(list of examples) -> dict of tensors (a micro-batch)
    # loss_fn(model, batch) -> scalar loss, the mean over the micro-batch; it calls model(...) exactly once
    #     (DistributedDataParallel syncs gradients per forward; for two dropout views, duplicate the batch).
    #     In multi-process runs `model` is the DDP wrapper: call it, read attributes from unwrap(model).
    # evaluate(module) -> {"dev_chrf": 41.2, ...}: rank 0 only, eval mode, no_grad; higher `metric` is better
    #     (negate losses). Its random draws do not disturb training's (the RNG state is saved and restored).
    # afterwards `model` holds the best checkpoint's weights (result.best_checkpoint; --select last: the last
    # epoch's; result.model_epoch says which epoch), in eval mode;
    # under torchrun every process returns from train(): write predictions only `if is_main_process()`

One optimizer step, with P processes (torchrun), accumulation A and batch size B:

    the epoch's order is randperm(N) from a generator seeded by (seed, epoch): the same on every rank
    the order is cut into micro-batches of B examples; A consecutive micro-batches make one optimizer step
    each micro-batch is split over the P ranks; rank r back-propagates  loss_r * n_r * P / n_step
    DDP averages gradients over ranks (/P), so the step's gradient is that of the mean loss over its n_step
    examples; with equal parts this is the familiar loss / A. A last micro-batch smaller than P is dropped.
    (Weights count examples: a loss averaged over tokens is exact only for equal token counts per micro-batch.)
    clip the gradient norm (max_grad_norm), AdamW step, schedule step (linear warmup, then linear decay to 0 or,
    --schedule constant, --lr); tasks/optimization.py builds the optimizer and schedule the flags name

Resume (--resume) continues from out_dir/last.pt exactly: same data order, position within the epoch, optimizer,
schedule and RNG states, so a killed and resumed run ends with the same weights as an uninterrupted one.
Everything that defines the run's numbers must not change on resume (tasks/run_settings.py: every parsed flag,
the model's shapes and config, the data files' sizes and hashes, the training set's size): train() refuses,
listing every difference. The output directory is locked for the run (tasks/out_dir_lock.py).
What the files hold is described in checkpointing.py; last.pt stores the full module state_dict (for LoRA and
prefix-tuning that includes the frozen base: simple and robust, at the cost of disk space).
"""
from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from tasks.checkpointing import (FORMAT, LAST, METRICS, CheckpointError, atomic_save, atomic_write_text,
                                 best_path, capture_rng_state, load_file, model_signature, remove_stale_best,
                                 restore_rng_state, update_best)
from tasks.distributed import (all_reduce_sum, destroy_distributed, gather_to_all, get_rank, get_world_size,
                               init_distributed, is_main_process, resolve_device, run_on_main)
from tasks.optimization import build_optimizer, build_scheduler
from tasks.out_dir_lock import locked
from tasks.run_settings import check_same_run, run_record
from tasks.train_config import TrainConfig, add_training_arguments, config_from_args  # noqa: F401 (re-exported)

__all__ = ["TrainConfig", "TrainResult", "NonFiniteLossError", "CheckpointError", "train", "seed_everything",
           "add_training_arguments", "config_from_args", "epoch_plan", "unwrap", "is_main_process"]


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

    def describe(self) -> str:
        """Which weights the model now holds, in words: "best epoch 3", "untrained (--epochs 0)", ..."""
        if self.select == "last" and self.model_epoch:
            return f"the last epoch, {self.model_epoch}"
        if self.best_epoch:
            return f"best epoch {self.best_epoch}" if self.best_metric is not None else f"epoch {self.best_epoch}"
        if self.global_step == 0:
            return "untrained (--epochs 0)"
        # e.g. --resume of a run that max_steps had already stopped mid-epoch: its dev evaluation was not kept
        return f"the weights after step {self.global_step} ({self.stop_reason}; no dev evaluation in this call)"


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; training stopped before the optimizer step."""


@dataclass
class _Progress:
    """Where training stands; saved in last.pt."""
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
    history: list = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def epoch_plan(n_examples: int, batch_size: int, grad_accum: int, world_size: int, seed: int, epoch: int):
    """The epoch's optimizer steps: a list of steps, each a list of micro-batches (LongTensors of example ids)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_examples, generator=generator)
    micro = list(order.split(batch_size))
    if micro and len(micro[-1]) < world_size:  # too small to give every rank an example
        micro.pop()
    return [micro[i:i + grad_accum] for i in range(0, len(micro), grad_accum)]


def count_tokens(batch: dict) -> int:
    """Real tokens in a micro-batch: the attention mask's ones, else every input id (0 if neither is there)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return batch["input_ids"].numel() if "input_ids" in batch else 0


def train(model: nn.Module, train_data: Sequence, collate: Callable[[list], dict],
          loss_fn: Callable[[nn.Module, dict], torch.Tensor], cfg: TrainConfig,
          evaluate: Callable[[nn.Module], dict] | None = None, metric: str | None = None) -> TrainResult:
    """Train `model` in place; see the module docstring for the contract of each argument."""
    if evaluate is not None and metric is None:
        raise ValueError("train(evaluate=...) also needs metric=: the key of evaluate()'s dict that picks the "
                         "best checkpoints (higher is better), e.g. metric='dev_accuracy'")
    device = resolve_device(cfg.device)
    lock = locked(cfg.out_dir) if is_main_process() else nullcontext()  # one run per out_dir
    with lock:
        created_group = init_distributed(device)
        try:
            return _Trainer(model, train_data, collate, loss_fn, cfg, evaluate, metric, device).run()
        finally:
            if created_group:
                destroy_distributed()


class _Trainer:
    def __init__(self, model, train_data, collate, loss_fn, cfg: TrainConfig, evaluate, metric, device):
        self.cfg, self.data, self.collate, self.loss_fn = cfg, train_data, collate, loss_fn
        self.evaluate, self.metric, self.device = evaluate, metric, device
        self.rank, self.world = get_rank(), get_world_size()
        self.out_dir = Path(cfg.out_dir)
        self.last_path = self.out_dir / LAST
        self.last_saved = False
        self.step_log: list[dict] = []
        if cfg.batch_size < self.world:
            raise ValueError(f"--batch-size {cfg.batch_size} is smaller than the {self.world} processes; it is the "
                             "global micro-batch, split over them")
        self.steps_per_epoch = len(epoch_plan(len(train_data), cfg.batch_size, cfg.grad_accum, self.world, 0, 0))
        if self.steps_per_epoch == 0 and cfg.epochs > 0:
            raise ValueError(f"the training set has {len(train_data)} examples: too few for one step")
        self.amp = cfg.amp and device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.module = model.to(device)
        self.trainable = [p for p in self.module.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("the model has no parameter with requires_grad=True: nothing to train")
        total = cfg.epochs * self.steps_per_epoch
        warmup = round(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup)
        self.optimizer = build_optimizer(self.module, cfg.optimizer, cfg.lr, cfg.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, warmup, total)
        self.progress = _Progress()
        self.record = run_record(cfg, self.module, len(train_data))
        seed_everything(cfg.seed + self.rank)  # dropout: a different stream on each rank
        run_on_main(self._prepare_out_dir)
        if cfg.resume:
            self._resume()
        self._refuse_non_finite_start()
        self.ddp = None
        if self.world > 1:
            self.ddp = DistributedDataParallel(self.module, device_ids=[device.index] if device.type == "cuda"
                                               else None, find_unused_parameters=cfg.find_unused_parameters)

    def run(self) -> TrainResult:
        cfg, p = self.cfg, self.progress
        stop_reason = "completed"
        while p.epoch < cfg.epochs:
            if cfg.patience and p.bad_evals >= cfg.patience:
                stop_reason = "early stopping"
                self._say(f"early stopping: no dev improvement in {p.bad_evals} evaluations (best: epoch "
                          f"{p.best_epoch}, {self.metric} = {p.best_score:.4f})")
                break
            if cfg.max_steps and p.global_step >= cfg.max_steps:
                stop_reason = "max_steps"
                break
            self._end_epoch(complete=self._run_epoch())
        best = self._load_best() if cfg.select == "best" else None
        self.module.eval()
        return TrainResult(
            best_metric=p.best_score if self.evaluate is not None and p.best_epoch else None,
            best_epoch=p.best_epoch or None, best_checkpoint=best, history=p.history, step_log=self.step_log,
            last_checkpoint=str(self.last_path) if self.last_saved else None,
            global_step=p.global_step, stop_reason=stop_reason, model_epoch=self._model_epoch(best), select=cfg.select)

    # ---- one epoch, one step -------------------------------------------------------------------------------
    def _run_epoch(self) -> bool:
        """Train from the saved position to the epoch's end; False when max_steps cut it short."""
        cfg, p = self.cfg, self.progress
        plan = epoch_plan(len(self.data), cfg.batch_size, cfg.grad_accum, self.world, cfg.seed, p.epoch)
        self.module.train()
        start, seconds_before = time.perf_counter(), p.seconds
        with tqdm(total=len(plan), initial=p.step_in_epoch, desc=f"epoch {p.epoch + 1}/{cfg.epochs}",
                  disable=not is_main_process(), dynamic_ncols=True) as bar:
            for micro_batches in plan[p.step_in_epoch:]:
                if cfg.max_steps and p.global_step >= cfg.max_steps:
                    break
                loss, n_examples, tokens = self._step(micro_batches)
                p.loss_sum += loss * n_examples
                p.examples += n_examples
                p.tokens += tokens
                p.step_in_epoch += 1
                p.global_step += 1
                p.seconds = seconds_before + time.perf_counter() - start
                bar.update(1)
                bar.set_postfix(loss=f"{p.loss_sum / p.examples:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                if cfg.save_every and p.global_step % cfg.save_every == 0 and p.step_in_epoch < len(plan):
                    self._save_last()
        return p.step_in_epoch == len(plan)

    def _step(self, micro_batches: list[torch.Tensor]) -> tuple[float, int, int]:
        """Forward/backward every micro-batch, then one optimizer step. Returns (mean loss, examples, tokens)."""
        cfg, p = self.cfg, self.progress
        n_step = sum(len(m) for m in micro_batches)
        step_loss = torch.zeros((), device=self.device)
        tokens = 0
        for i, ids in enumerate(micro_batches):
            mine = ids.tensor_split(self.world)[self.rank]  # this rank's part of the global micro-batch
            batch = self.collate([self.data[j] for j in mine.tolist()])
            if not isinstance(batch, dict):
                raise TypeError(f"collate must return a dict of tensors, got {type(batch).__name__}")
            tokens += count_tokens(batch)
            batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            last = i == len(micro_batches) - 1
            with nullcontext() if self.ddp is None or last else self.ddp.no_sync():  # all-reduce once per step
                with torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext():
                    loss = self.loss_fn(self.ddp or self.module, batch)
                _check_loss(loss)
                (loss.float() * (len(mine) * self.world / n_step)).backward()
            step_loss += loss.detach().float() * (len(mine) / n_step)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm or math.inf))
        loss = float(all_reduce_sum(step_loss))  # the mean over the step's examples on all ranks
        tokens = int(all_reduce_sum(torch.tensor(tokens, device=self.device)))
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            raise self._non_finite(f"loss {loss}, gradient norm {grad_norm}")
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_log.append(dict(step=p.global_step + 1, epoch=p.epoch + 1, loss=loss, lr=lr, grad_norm=grad_norm))
        return loss, n_step, tokens

    def _non_finite(self, what: str, where: str = "") -> NonFiniteLossError:
        p = self.progress
        where = where or (f"epoch {p.epoch + 1}, step {p.step_in_epoch + 1}/{self.steps_per_epoch} (global step "
                          f"{p.global_step + 1}); stopped before the optimizer step, so no weights were changed")
        last = (f"the last good checkpoint is {self.last_path} (untouched; continue with --resume after fixing)"
                if self.last_saved else "no checkpoint was written yet")
        return NonFiniteLossError(f"non-finite training values ({what}) in {where}; {last}. "
                                  "Try a lower --lr, --max-grad-norm 1.0, or --no-amp.")

    # ---- epoch end: evaluate, log, keep the best, save ----------------------------------------------------
    def _end_epoch(self, complete: bool) -> None:
        cfg, p = self.cfg, self.progress
        if not complete:  # max_steps stopped mid-epoch: last.pt keeps the position, so --resume can go on
            self._save_last()
        epoch = p.epoch + 1
        metrics, eval_seconds = {}, 0.0
        if self.evaluate is not None and (epoch % cfg.eval_every_epochs == 0 or epoch == cfg.epochs or not complete):
            t = time.perf_counter()
            metrics = run_on_main(self._evaluate)
            eval_seconds = time.perf_counter() - t
        lr = self.step_log[-1]["lr"] if self.step_log else self.optimizer.param_groups[0]["lr"]  # of the last step
        line = {"epoch": epoch, "step": p.global_step, "train_loss": p.loss_sum / max(p.examples, 1), **metrics,
                "lr": lr, "seconds": round(p.seconds, 3),
                "eval_seconds": round(eval_seconds, 3), "tokens_per_s": round(p.tokens / max(p.seconds, 1e-9), 1)}
        if not complete:
            line["partial_epoch"] = True
        p.history.append(line)
        self._say(json.dumps(line))
        history = list(p.history)
        run_on_main(lambda: atomic_write_text("".join(json.dumps(h) + "\n" for h in history), self.out_dir / METRICS))
        removed = self._update_best(epoch, metrics)
        if complete:
            p.epoch, p.step_in_epoch = p.epoch + 1, 0
            p.loss_sum, p.examples, p.tokens, p.seconds = 0.0, 0, 0, 0.0
            self._save_last()
        # only now that last.pt no longer lists them (a crash before this leaves extra files: resume removes them)
        run_on_main(lambda: [best_path(self.out_dir, e["epoch"]).unlink(missing_ok=True) for e in removed])

    def _evaluate(self) -> dict[str, float]:
        """Rank 0: run the task's evaluate in eval mode, without touching training's random streams."""
        rng = capture_rng_state(self.device)
        self.module.eval()
        with torch.no_grad():
            metrics = self.evaluate(self.module)
        self.module.train()
        restore_rng_state(rng, self.device)
        if not isinstance(metrics, dict) or self.metric not in metrics:
            keys = list(metrics) if isinstance(metrics, dict) else type(metrics).__name__
            raise ValueError(f"evaluate() must return a dict holding the metric {self.metric!r}; got {keys}")
        bad = {k: v for k, v in metrics.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
        if bad:
            raise TypeError(f"evaluate() must return numbers (floats or ints), got {bad}")
        return {k: float(v) for k, v in metrics.items()}

    def _update_best(self, epoch: int, metrics: dict) -> list[dict]:
        """Patience and best-k bookkeeping; writes best-epoch{E}.pt when this epoch made the list."""
        cfg, p = self.cfg, self.progress
        if self.evaluate is None:
            score = float(epoch)  # no dev metric: the latest epoch is the best
        elif self.metric in metrics:
            score = metrics[self.metric]
            if not math.isfinite(score):
                self._say(f"warning: {self.metric} = {score} in epoch {epoch}; counted as the worst score")
                score = -math.inf
        else:
            return []  # not evaluated this epoch
        if score > p.best_score or not p.best_epoch:
            p.best_score, p.best_epoch, p.bad_evals = score, epoch, 0
        else:
            p.bad_evals += 1
        if cfg.keep_best == 0:
            return []
        entry = {"epoch": epoch, "score": score, "metrics": metrics}
        p.best, removed = update_best(p.best, entry, cfg.keep_best)
        if any(e is entry for e in p.best):
            self._check_weights_finite()
            state = {"model": self.module.state_dict(), "metrics": metrics, "epoch": epoch,
                     "signature": model_signature(self.module)}
            run_on_main(lambda: atomic_save(state, best_path(self.out_dir, epoch)))
        return removed

    # ---- files ---------------------------------------------------------------------------------------------
    def _prepare_out_dir(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create the output directory {self.out_dir}: {e.strerror or e}") from e
        for tmp in self.out_dir.glob("*.tmp"):  # left by a run killed mid-write; we hold the directory's lock
            tmp.unlink(missing_ok=True)
        if not self.cfg.resume:
            if self.last_path.exists():
                raise CheckpointError(f"{self.last_path} exists: pass --resume to continue that run, or choose "
                                      "another --out-dir (nothing was overwritten)")
            atomic_write_text("", self.out_dir / METRICS)  # also proves the directory is writable, before training

    def _save_last(self) -> None:
        self._check_weights_finite()
        rng = gather_to_all(capture_rng_state(self.device))  # every rank's streams, in rank order
        ckpt = {"format": FORMAT, "model": self.module.state_dict(), "signature": model_signature(self.module),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "rng": rng,
                "progress": asdict(self.progress), "config": asdict(self.cfg), "world_size": self.world,
                "n_train": len(self.data), "record": self.record}
        run_on_main(lambda: atomic_save(ckpt, self.last_path))
        self.last_saved = True

    def _refuse_non_finite_start(self) -> None:
        """Weights holding NaN/inf (a broken checkpoint) give NaN losses from the first step: refuse at once."""
        bad = [n for n, t in self.module.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise ValueError(f"the model's weights hold NaN or infinity ({', '.join(bad[:5])}"
                             f"{' ...' if len(bad) > 5 else ''}): refusing to train from them; load other weights")

    def _check_weights_finite(self) -> None:
        """Never write a poisoned state: a finite loss can still come with an overflowing update."""
        if not bool(torch.stack([torch.isfinite(w).all() for w in self.trainable]).all()):
            p = self.progress
            raise self._non_finite("NaN/inf weights", f"the weights after global step {p.global_step}; "
                                   "nothing was written")

    def _resume(self) -> None:
        cfg, path = self.cfg, self.last_path
        if not path.is_file():
            raise CheckpointError(f"--resume: no checkpoint at {path}; run without --resume to start, or point "
                                  "--out-dir at the run to continue")
        ckpt = load_file(path)
        check_same_run(ckpt, path, self.record)
        self.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.progress = _Progress(**ckpt["progress"])
        if ckpt["world_size"] == self.world:
            restore_rng_state(ckpt["rng"][self.rank], self.device)
        else:
            self._say(f"warning: {path} was written by {ckpt['world_size']} processes, now {self.world}: the "
                      "dropout streams restart from the seed, so results differ slightly from an uninterrupted run")
        self.last_saved = True
        p = self.progress
        history = "".join(json.dumps(h) + "\n" for h in p.history)

        def tidy_files():  # drop metrics lines and best files written after last.pt was (a crash in between)
            atomic_write_text(history, self.out_dir / METRICS)
            remove_stale_best(self.out_dir, p.best)
        run_on_main(tidy_files)
        self._say(f"resumed from {path}: epoch {p.epoch + 1}, step {p.step_in_epoch}/{self.steps_per_epoch}, "
                  f"global step {p.global_step}")

    def _model_epoch(self, best: str | None) -> int | None:
        """The epoch whose weights the model holds: the loaded best checkpoint's, else the last one trained."""
        if best is not None:
            return self.progress.best[0]["epoch"]
        history = self.progress.history
        if not history or history[-1].get("partial_epoch"):  # untrained, or max_steps stopped mid-epoch
            return None
        return history[-1]["epoch"]

    def _load_best(self) -> str | None:
        if not self.progress.best:
            return None
        path = best_path(self.out_dir, self.progress.best[0]["epoch"])
        self.module.load_state_dict(load_file(path)["model"])
        return str(path)

    def _say(self, text: str) -> None:
        if is_main_process():
            print(text, flush=True)


def _check_loss(loss) -> None:
    if not torch.is_tensor(loss) or loss.ndim != 0:
        got = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
        raise TypeError(f"loss_fn must return a scalar tensor (the mean loss over the micro-batch), got {got}")
    if not loss.requires_grad:
        raise ValueError("loss_fn's loss does not depend on any trainable parameter (did it call the model?)")
