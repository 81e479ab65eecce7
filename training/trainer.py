"""The trainer every task uses: the plain loop of training/loop.py, with what a real run needs around it.

A task brings a model, its training examples, a collate function, a loss and (optionally) a dev evaluation:

    seed_everything(cfg.seed)                        # before building the model: reproducible init (LoRA A, heads)
    model = ...                                      # an nn.Module; frozen parameters (requires_grad=False) stay fixed
    result = train(model, train_data, collate, loss_fn, cfg, evaluate=dev_eval, metric="dev_chrf")
    # train_data: a Sequence of examples; collate(list of examples) -> dict of tensors (a micro-batch)
    # loss_fn(model, batch) -> scalar loss, the mean over the micro-batch; it calls model(...) exactly once
    #     (DistributedDataParallel syncs gradients per forward; for two dropout views, duplicate the batch).
    #     In multi-process runs `model` is the DDP wrapper: call it, read attributes from unwrap(model)
    #     (training/distributed.py).
    # evaluate(module) -> {"dev_chrf": 41.2, ...}: rank 0 only, eval mode, no_grad; higher `metric` is better
    #     (negate losses). Its random draws do not disturb training's (the RNG state is saved and restored).
    # afterwards `model` holds the best checkpoint's weights (result.best_checkpoint; --select last: the last
    # epoch's; result.model_epoch says which epoch), in eval mode;
    # under torchrun every process returns from train(): write predictions only `if is_main_process()`

Around training/loop.py's train_epoch (forward, backward, clip, step, schedule) this file adds: the epoch's data
order (loop.epoch_plan: seeded by (seed, epoch), the same on every rank), bf16 autocast, the P processes of
torchrun (each micro-batch is split over the ranks; rank r's weight n_r * P / n_step, and DDP's average over
ranks, make the step's gradient that of the mean loss over its n_step examples), a dev evaluation per epoch,
the k best checkpoints, early stopping (--patience), --max-steps, the NaN guard, and exact resume.
The optimizer and schedule come from training/optimization.py, as the flags name them.

Resume (--resume) continues from out_dir/last.pt exactly: same data order, position within the epoch, optimizer,
schedule and RNG states, so a killed and resumed run ends with the same weights as an uninterrupted one.
Everything that defines the run's numbers must not change on resume (training/run_settings.py: every parsed flag,
the model's shapes and config, the data files' sizes and hashes, the training set's size): train() refuses,
listing every difference. The caller locks the output directory (run.py does; training/out_dir.py).
What the files hold is described in checkpointing.py; last.pt stores the full module state_dict (for LoRA and
prefix-tuning that includes the frozen base: simple and robust, at the cost of disk space).
"""
from __future__ import annotations

import json
import logging
import random
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from minigpt.state_dict import refuse_non_finite
from training.checkpointing import (
    FORMAT,
    LAST,
    METRICS,
    best_path,
    capture_rng_state,
    load_file,
    restore_rng_state,
    tidy_after_resume,
    update_best,
    write_run_file,
)
from training.config import TrainConfig
from training.distributed import (
    all_reduce_sum,
    destroy_distributed,
    gather_to_all,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    resolve_device,
    run_on_main,
)
from training.evaluation import epoch_score, evaluate_model
from training.loop import NonFiniteLossError, epoch_plan, train_epoch
from training.model_switches import switch_model
from training.nan_guard import all_finite, check_loss, non_finite_error
from training.optimization import build_optimizer, build_scheduler, load_optimizer_state
from training.out_dir import claim_out_dir, remove_temporary_files
from training.progress import Progress, TrainResult
from training.run_settings import check_same_run, run_record

logger = logging.getLogger("minigpt.trainer")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(model: nn.Module, train_data: Sequence, collate: Callable[[list], dict],
          loss_fn: Callable[[nn.Module, dict], torch.Tensor], cfg: TrainConfig,
          evaluate: Callable[[nn.Module], dict] | None = None, metric: str | None = None) -> TrainResult:
    """Train `model` in place; see the module docstring for the contract of each argument."""
    if evaluate is not None and metric is None:
        raise ValueError("train(evaluate=...) also needs metric=: the key of evaluate()'s dict that picks the "
                         "best checkpoints (higher is better), e.g. metric='dev_accuracy'")
    device = resolve_device(cfg.device)
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
        self.out_dir = Path(cfg.out_dir).expanduser()  # as the lock reads it
        self.last_path = self.out_dir / LAST
        self.last_saved = False
        self.step_log: list[dict] = []
        self.tokens = 0  # real tokens in the current step's micro-batches, on this rank
        if cfg.batch_size < self.world:
            raise ValueError(f"--batch-size {cfg.batch_size} is smaller than the {self.world} processes; it is the "
                             "global micro-batch, split over them")
        self.steps_per_epoch = len(epoch_plan(len(train_data), cfg.batch_size, cfg.grad_accum, self.world, 0, 0))
        if self.steps_per_epoch == 0 and cfg.epochs > 0:
            raise ValueError(f"the training set has {len(train_data)} examples: too few for one step")
        self.amp = cfg.amp and device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.module = model.to(device)
        switch_model(self.module, cfg.gradient_checkpointing, cfg.compile, device)  # training/model_switches.py
        self.trainable = [p for p in self.module.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("the model has no parameter with requires_grad=True: nothing to train")
        total = cfg.epochs * self.steps_per_epoch
        warmup = round(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup)
        self.optimizer = build_optimizer(self.module, cfg.optimizer, cfg.lr, cfg.weight_decay,
                                         explicit_math=cfg.explicit_math)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, warmup, total)
        self.progress = Progress()
        self.record = run_record(cfg, self.module, len(train_data))
        seed_everything(cfg.seed + self.rank)  # dropout: a different stream on each rank
        run_on_main(self._claim_out_dir)
        if cfg.resume:
            self._resume()
        refuse_non_finite(self.module, "train")  # NaN/inf weights would give NaN losses from the first step
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
                self._log(f"early stopping: no dev improvement in {p.bad_evals} evaluations (best: epoch "
                          f"{p.best_epoch}, {self.metric} = {p.best_score:.4f})")
                break
            if cfg.max_steps and p.global_step >= cfg.max_steps:
                stop_reason = "max_steps"
                if p.step_in_epoch and not self.step_log:  # resumed where it stopped: last.pt predates the
                    self._end_epoch(complete=False)  # stop's evaluation, so it is done again (same weights, RNG)
                break
            self._end_epoch(complete=self._run_epoch())
        best = self._load_best() if cfg.select == "best" else None
        self.module.eval()
        return TrainResult(
            best_metric=p.best_score if self.evaluate is not None and p.best_epoch else None,
            best_epoch=p.best_epoch or None, best_checkpoint=best, history=p.history, step_log=self.step_log,
            last_checkpoint=str(self.last_path) if self.last_saved else None,
            global_step=p.global_step, stop_reason=stop_reason, model_epoch=p.model_epoch(best is not None),
            select=cfg.select)

    # ---- one epoch: the plain loop, with progress, --max-steps and --save-every around it -------------------
    def _run_epoch(self) -> bool:
        """Train from the saved position to the epoch's end; False when max_steps cut it short."""
        cfg, p = self.cfg, self.progress
        plan = epoch_plan(len(self.data), cfg.batch_size, cfg.grad_accum, self.world, cfg.seed, p.epoch)
        end = min(len(plan), p.step_in_epoch + cfg.max_steps - p.global_step) if cfg.max_steps else len(plan)
        steps = self._steps(plan[p.step_in_epoch:end])
        no_sync = self.ddp.no_sync if self.ddp is not None else nullcontext  # DDP: all-reduce once per step
        start, seconds_before = time.perf_counter(), p.seconds
        with tqdm(total=len(plan), initial=p.step_in_epoch, desc=f"epoch {p.epoch + 1}/{cfg.epochs}",
                  disable=not is_main_process(), dynamic_ncols=True) as bar:
            loop = train_epoch(self.ddp or self.module, steps, self._loss, self.optimizer, self.scheduler,
                               cfg.max_grad_norm, no_sync)
            for stats in self._saying_where(loop):
                examples = sum(len(m) for m in plan[p.step_in_epoch])  # in the step just taken
                self._after_step(stats, examples)
                p.seconds = seconds_before + time.perf_counter() - start
                bar.update(1)
                bar.set_postfix(loss=f"{p.loss_sum / p.examples:.4f}", lr=f"{stats['lr']:.2e}")
                if cfg.save_every and p.global_step % cfg.save_every == 0 and p.step_in_epoch < len(plan):
                    self._save_last()
        return p.step_in_epoch == len(plan)

    def _saying_where(self, loop):
        """The loop's steps; when it refuses a NaN, the error also says where and which checkpoint is good."""
        try:
            yield from loop
        except NonFiniteLossError as e:  # raised inside the loop only (errors of the caller's body pass by)
            raise self._non_finite(str(e)) from None

    def _steps(self, plan: list[list[torch.Tensor]]):
        """The loop's steps: every micro-batch as (this rank's example ids, its loss weight)."""
        for micro in plan:
            n_step = sum(len(m) for m in micro)
            mine = [ids.tensor_split(self.world)[self.rank] for ids in micro]  # this rank's part of each
            # weight n_r * P / n_step: DDP averages the P ranks' gradients, so the step's is the mean loss's
            yield [(ids, len(ids) * self.world / n_step) for ids in mine]

    def _loss(self, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """The task's loss on examples `ids`: collate them, move them to the device, run loss_fn (autocast)."""
        batch = self.collate([self.data[j] for j in ids.tolist()])
        if not isinstance(batch, dict):
            raise TypeError(f"collate must return a dict of tensors, got {type(batch).__name__}")
        self.tokens += count_tokens(batch)
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext():
            loss = self.loss_fn(model, batch)
        check_loss(loss)
        return loss.float()

    def _after_step(self, stats: dict, examples: int) -> None:
        """Count the step: its loss over all ranks (the mean over its examples), its tokens, the position."""
        p = self.progress
        loss, tokens = stats["loss"], self.tokens
        if self.world > 1:  # one all-reduce of both numbers; a single process has nothing to add up (or sync)
            both = all_reduce_sum(torch.tensor([loss, tokens], dtype=torch.float64, device=self.device)).tolist()
            loss, tokens = both[0] / self.world, int(both[1])
        self.tokens = 0
        self.step_log.append(dict(step=p.global_step + 1, epoch=p.epoch + 1, loss=loss, lr=stats["lr"],
                                  grad_norm=stats["grad_norm"]))
        p.last_lr = stats["lr"]
        p.loss_sum += loss * examples
        p.examples += examples
        p.tokens += tokens
        p.step_in_epoch += 1
        p.global_step += 1

    def _non_finite(self, what: str, where: str = "") -> NonFiniteLossError:
        p = self.progress
        where = where or (f"epoch {p.epoch + 1}, step {p.step_in_epoch + 1}/{self.steps_per_epoch} (global step "
                          f"{p.global_step + 1}); stopped before the optimizer step, so no weights were changed")
        return non_finite_error(what, where, self.last_path, self.last_saved)

    # ---- epoch end: evaluate, log, keep the best, save ----------------------------------------------------
    def _end_epoch(self, complete: bool) -> None:
        cfg, p = self.cfg, self.progress
        if not complete:  # max_steps stopped mid-epoch: last.pt keeps the position, so --resume can go on
            self._save_last()
        epoch = p.epoch + 1
        metrics, eval_seconds = {}, 0.0
        if self.evaluate is not None and (epoch % cfg.eval_every_epochs == 0 or epoch == cfg.epochs or not complete):
            t = time.perf_counter()
            metrics = run_on_main(lambda: evaluate_model(self.module, self.evaluate, self.metric, self.device))
            eval_seconds = time.perf_counter() - t
        lr = p.last_lr if p.last_lr is not None else self.optimizer.param_groups[0]["lr"]  # of the last step
        self._log(json.dumps(p.add_history_line(metrics, lr, eval_seconds, complete)))
        history = list(p.history)
        run_on_main(lambda: write_run_file(self.out_dir / METRICS, "".join(json.dumps(h) + "\n" for h in history)))
        removed = self._update_best(epoch, metrics)
        if not complete:  # last.pt, written before this evaluation, still lists the entries it pushed out
            return
        p.start_next_epoch()
        self._save_last()
        # only now that last.pt no longer lists them (a crash before this leaves extra files: resume removes them)
        run_on_main(lambda: [best_path(self.out_dir, e["epoch"]).unlink(missing_ok=True) for e in removed])

    def _update_best(self, epoch: int, metrics: dict) -> list[dict]:
        """Patience and best-k bookkeeping; writes best-epoch{E}.pt when this epoch made the list."""
        cfg, p = self.cfg, self.progress
        score = epoch_score(metrics, self.metric) if self.evaluate is not None else float(epoch)
        if score is None:
            return []  # not evaluated this epoch
        p.note_score(epoch, score)
        if cfg.keep_best == 0:
            return []
        entry = {"epoch": epoch, "score": score, "metrics": metrics}
        p.best, removed = update_best(p.best, entry, cfg.keep_best)
        if any(e is entry for e in p.best):
            self._check_weights_finite()
            state = {"model": self.module.state_dict(), "metrics": metrics, "epoch": epoch}
            run_on_main(lambda: write_run_file(best_path(self.out_dir, epoch), state))
        return removed

    # ---- files ---------------------------------------------------------------------------------------------
    def _save_last(self) -> None:
        self._check_weights_finite()
        rng = gather_to_all(capture_rng_state(self.device))  # every rank's streams, in rank order
        ckpt = {"format": FORMAT, "model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng, "progress": asdict(self.progress),
                "world_size": self.world, "record": self.record}  # record: settings, model signature, data
        run_on_main(lambda: write_run_file(self.last_path, ckpt))
        self.last_saved = True

    def _check_weights_finite(self) -> None:
        """Never write a poisoned state: a finite loss can still come with an overflowing update."""
        if not all_finite(self.trainable):
            p = self.progress
            raise self._non_finite("NaN/inf weights", f"the weights after global step {p.global_step}; "
                                   "nothing was written")

    def _claim_out_dir(self) -> None:
        """Check that the out-dir is empty or this run's (training/out_dir.py); a fresh run starts an empty
        metrics.jsonl."""
        claim_out_dir(self.out_dir, self.record["settings"], self.cfg.resume)
        if not self.cfg.resume:
            write_run_file(self.out_dir / METRICS, "")

    def _resume(self) -> None:
        path = self.last_path
        ckpt = load_file(path, missing="--resume: no checkpoint at {path}; run without --resume to start, or point "
                                       "--out-dir at the run to continue")
        check_same_run(ckpt, path, self.record)
        self.module.load_state_dict(ckpt["model"])
        load_optimizer_state(self.optimizer, ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.progress = p = Progress(**ckpt["progress"])
        if ckpt["world_size"] == self.world:
            restore_rng_state(ckpt["rng"][self.rank], self.device)
        else:
            self._log(f"warning: {path} was written by {ckpt['world_size']} processes, now {self.world}: the "
                      "dropout streams restart from the seed, so results differ slightly from an uninterrupted run",
                      logging.WARNING)
        self.last_saved = True
        run_on_main(lambda: tidy_after_resume(self.out_dir, p.history, p.best))
        run_on_main(lambda: remove_temporary_files(self.out_dir))  # left by a kill mid-write, the export's too
        self._log(f"resumed from {path}: epoch {p.epoch + 1}, step {p.step_in_epoch}/{self.steps_per_epoch}, "
                  f"global step {p.global_step}")

    def _load_best(self) -> str | None:
        if not self.progress.best:
            return None
        path = best_path(self.out_dir, self.progress.best[0]["epoch"])
        self.module.load_state_dict(load_file(path)["model"])
        return str(path)

    def _log(self, text: str, level: int = logging.INFO) -> None:
        """logger.log on the main process only: one line per message, however many processes train."""
        if is_main_process():
            logger.log(level, text)


def count_tokens(batch: dict) -> int:
    """Real tokens in a micro-batch: the attention mask's ones, else every input id (0 if neither is there)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return batch["input_ids"].numel() if "input_ids" in batch else 0
