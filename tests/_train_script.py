"""A tiny GPT-2 training run for tests/test_trainer.py: a module (in-process tests) and a script (subprocesses).

    python tests/_train_script.py --out-dir D [trainer flags] [--kill-at-call N] [--dropout P] [--n-train N]
    torchrun --nproc_per_node=2 tests/_train_script.py --out-dir D ...

Needs the repository root on PYTHONPATH. Rank 0 writes D/result.pt: the final weights and the TrainResult.
--kill-at-call N makes the process SIGKILL itself inside the N-th call of the loss function (no cleanup runs,
exactly like a crash or an out-of-memory kill).
"""
from __future__ import annotations

import argparse
import os
import signal
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from minigpt import GPT2, GPT2Config
from training.config import add_training_arguments, config_from_args
from training.trainer import is_main_process, seed_everything, train

SEQ_LEN = 12
VOCAB = 300


def tiny_model(seed: int = 0, dropout: float = 0.1, n_embd: int = 64) -> GPT2:
    seed_everything(seed)
    return GPT2(GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=n_embd, n_layer=2, n_head=2, dropout=dropout))


def synthetic_data(n: int, seed: int) -> list[dict]:
    """Arithmetic progressions mod VOCAB (start s, stride d): learnable, so the loss falls."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (n, 1), generator=g)
    stride = torch.randint(1, 4, (n, 1), generator=g)
    ids = (start + stride * torch.arange(SEQ_LEN)) % VOCAB  # (n, T)
    return [{"input_ids": ids[i]} for i in range(n)]


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    ids = torch.stack([e["input_ids"] for e in examples])  # (B, T)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def lm_loss(model, batch: dict) -> torch.Tensor:
    """Next-token cross-entropy, the mean over the micro-batch's predictions (one forward call)."""
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["input_ids"][:, 1:].flatten())


def dev_evaluate(dev: list[dict]):
    def evaluate(model) -> dict[str, float]:
        loss = lm_loss(model, collate(dev))
        return {"dev_loss": float(loss), "dev_score": -float(loss)}
    return evaluate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_training_arguments(parser, epochs=3, batch_size=4, lr=3e-3, warmup=0.2, device="cpu", seed=5)
    parser.add_argument("--kill-at-call", dest="_kill_at_call", type=int, default=0,  # "_": not a run setting
                        help="SIGKILL this process in that loss_fn call")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--n-train", type=int, default=24)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    torch.set_num_threads(1)  # same arithmetic in every process, and two processes fit two cores

    model = tiny_model(0, args.dropout)
    calls = 0

    def loss_fn(m, batch):
        nonlocal calls
        calls += 1
        if calls == args._kill_at_call:
            os.kill(os.getpid(), signal.SIGKILL)
        return lm_loss(m, batch)

    result = train(model, synthetic_data(args.n_train, 1), collate, loss_fn, cfg,
                   evaluate=dev_evaluate(synthetic_data(8, 2)), metric="dev_score")
    if is_main_process():
        torch.save({"model": model.state_dict(), "result": asdict(result)}, Path(cfg.out_dir) / "result.pt")


if __name__ == "__main__":
    main()
