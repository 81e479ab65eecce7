"""What the classification tasks share: texts -> token ids -> padded batches, the loss, prediction, the metrics,
and the export of the trained model (the flags: tasks/classify_flags.py).

An encoded example is a tuple (ids, label): the token ids of one text (already truncated to --max-length) and its
label (-1 in test files, which have none). Texts are encoded once, before training, so the truncation count is
known and logged up front; `collate` pads a list of them into a batch:

    input_ids       (B, T) long, padded with the tokenizer's pad id (eos)
    attention_mask  (B, T) long, 1 = real token
    labels          (B,)   long

The model is any module with forward(input_ids, attention_mask) -> ClassifierOutput(logits (B, K), pooled (B, C)):
GPT2Classifier (heads.py) or GPT2Cloze (cloze.py).
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt.safetensors import load_safetensors, save_safetensors
from tasks.losses import info_nce, rdrop_loss
from tasks.modeling import export_language_model
from training.checkpointing import write_result
from training.distributed import get_world_size
from training.trainer import train

logger = logging.getLogger("minigpt.classify")
Encoded = tuple  # (ids: list[int], label: int)
ENCODE_CHUNK = 1024  # texts per tokenizer call: bounds the memory of the padded chunk


# ---- texts -> encoded examples -> batches ---------------------------------------------------------------------
def encode_examples(tokenizer, texts: list[str], labels: list[int | None], max_length: int,
                    truncation_side: str = "right", name: str = "data") -> list[Encoded]:
    """Tokenize every text, cut it to max_length tokens (keeping its start, or its end with truncation_side
    'left'), and log how many were cut."""
    encoded, truncated = [], 0
    for start in range(0, len(texts), ENCODE_CHUNK):
        batch = tokenizer.encode_batch(texts[start:start + ENCODE_CHUNK], max_length=max_length,
                                       truncation_side=truncation_side)  # right-padded
        truncated += batch.num_truncated
        lengths = batch.attention_mask.sum(dim=1).tolist()
        encoded += [row[:n].tolist() for row, n in zip(batch.input_ids, lengths)]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(f"{name}: text {empty[0] + 1} encodes to no tokens: {texts[empty[0]]!r}")
    logger.info(f"{name}: {len(texts)} examples, {truncated} truncated to --max-length {max_length} tokens"
        + (f" (cut at the {'start' if truncation_side == 'left' else 'end'})" if truncated else ""))
    return [(ids, -1 if label is None else int(label)) for ids, label in zip(encoded, labels)]


def collate(examples: list[Encoded], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad encoded examples to the longest; see the module docstring for the shapes."""
    T = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, (ids, _) in enumerate(examples):
        span = slice(0, len(ids)) if padding_side == "right" else slice(T - len(ids), T)
        input_ids[i, span] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, span] = 1
    labels = torch.tensor([label for _, label in examples], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def max_length_for(requested: int, config) -> int:
    """--max-length, lowered (with a log line) to what the model's position table holds."""
    if requested < 1:
        raise ValueError(f"--max-length must be >= 1, got {requested}")
    if requested > config.n_positions:
        logger.info(f"--max-length {requested} exceeds the model's n_positions; using {config.n_positions}")
        return config.n_positions
    return requested


# ---- the loss ------------------------------------------------------------------------------------------------
def classification_loss(model: nn.Module, batch: dict, rdrop: float = 0.0, simcse: float = 0.0,
                        simcse_temp: float = 0.05) -> torch.Tensor:
    """Cross-entropy, plus R-Drop and/or SimCSE (losses.py) when their weights are > 0.

    Both need two dropout views of the batch: the batch is stacked twice, [x; x], and run through the model in
    ONE forward (the trainer's contract); rows b and B + b then differ only in their dropout masks.
        plain:   CE(z, y)
        R-Drop:  CE(z1, y) + CE(z2, y) + rdrop * symmetric KL(z1, z2)       (replaces the plain CE)
        SimCSE:  ... + simcse * InfoNCE(e1, e2, simcse_temp)                 (e: the pooled embeddings)
    """
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if not (rdrop > 0 or simcse > 0):
        return F.cross_entropy(model(ids, mask).logits.float(), labels)
    out = model(torch.cat([ids, ids]), torch.cat([mask, mask]))  # (2B, ...): two dropout views
    logits1, logits2 = out.logits.chunk(2)  # (B, K) each
    loss = rdrop_loss(logits1, logits2, labels, rdrop) if rdrop > 0 else F.cross_entropy(logits1.float(), labels)
    if simcse > 0:
        pooled1, pooled2 = out.pooled.chunk(2)  # (B, C) each
        loss = loss + simcse * info_nce(pooled1, pooled2, simcse_temp)
    return loss


def course_summed_loss(model: nn.Module, batch: dict, batch_size: int) -> torch.Tensor:
    """The course's classifier.py loss: the cross-entropy SUMMED over the batch, divided by --batch-size; equal to
    the mean for a full batch, smaller for the epoch's shorter last batch. (For P processes each rank's part is
    scaled by P, which is exact when the batch splits evenly.)"""
    summed = F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]).logits.float(), batch["labels"],
                             reduction="sum")
    return summed * get_world_size() / batch_size


# ---- prediction and metrics ----------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: nn.Module, examples: list[Encoded], pad_id: int, batch_size: int = 64) -> list[int]:
    """argmax of the logits for every example, in order. Batches are formed from examples of similar length
    (sorted), so little time goes into padding; `model` is put in eval mode and restored afterwards."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    preds = [0] * len(examples)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = collate([examples[i] for i in chunk], pad_id)
        logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).logits  # (b, K)
        for i, p in zip(chunk, logits.argmax(dim=-1).tolist()):
            preds[i] = p
    model.train(was_training)
    return preds


def accuracy(preds: list[int], labels: list[int]) -> float:
    if len(preds) != len(labels) or not labels:
        raise ValueError(f"accuracy: {len(preds)} predictions for {len(labels)} labels")
    return sum(p == y for p, y in zip(preds, labels)) / len(labels)


def macro_f1(preds: list[int], labels: list[int]) -> float:
    """Mean over classes of F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k), over the classes that occur in the labels or
    the predictions (as sklearn's f1_score(average='macro'), which the course uses)."""
    if len(preds) != len(labels) or not labels:
        raise ValueError(f"macro_f1: {len(preds)} predictions for {len(labels)} labels")
    scores = []
    for k in sorted(set(preds) | set(labels)):
        tp = sum(p == k and y == k for p, y in zip(preds, labels))
        fp = sum(p == k and y != k for p, y in zip(preds, labels))
        fn = sum(p != k and y == k for p, y in zip(preds, labels))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def evaluate(model: nn.Module, examples: list[Encoded], pad_id: int, batch_size: int = 64,
             prefix: str = "dev_") -> dict[str, float]:
    """{prefix + 'accuracy', prefix + 'macro_f1'} of the model's predictions on labelled examples."""
    return scores(predict(model, examples, pad_id, batch_size), examples, prefix)


def scores(preds: list[int], examples: list[Encoded], prefix: str = "dev_") -> dict[str, float]:
    """{prefix + 'accuracy', prefix + 'macro_f1'} of predictions made for labelled examples."""
    labels = [label for _, label in examples]
    return {f"{prefix}accuracy": accuracy(preds, labels), f"{prefix}macro_f1": macro_f1(preds, labels)}


def train_classifier(model: nn.Module, encoded: dict[str, list[Encoded]], pad_id: int, cfg, loss_fn,
                     eval_batch_size: int = 64):
    """The shared trainer (training/trainer.py) with TrainConfig `cfg` on encoded["train"] with `loss_fn` (e.g.
    partial(classification_loss, rdrop=..., simcse=...)); dev accuracy on encoded["dev"] picks the best epoch.
    Returns the trainer's result."""
    return train(model, encoded["train"], partial(collate, pad_id=pad_id), loss_fn, cfg,
                 evaluate=lambda m: evaluate(m, encoded["dev"], pad_id, eval_batch_size),
                 metric="dev_accuracy")


def write_predictions(model: nn.Module, encoded: dict[str, list[Encoded]], ids: dict[str, list[str]], pad_id: int,
                      out_dir, write_fn, file_name: Callable[[str], str],
                      eval_batch_size: int = 64) -> dict[str, list[int]]:
    """Predict the dev and test splits and write each with `write_fn(path, ids, preds)` (the task's course
    format) to <out_dir>/predictions/<file_name(split)>; returns {split: preds}."""
    written = {}
    for split in ("dev", "test"):
        written[split] = predict(model, encoded[split], pad_id, eval_batch_size)
        path = write_fn(Path(out_dir) / "predictions" / file_name(split), ids[split], written[split])
        logger.info(f"wrote {path}")
    return written


def finish_run(out_dir, dev: list[Encoded], dev_preds: list[int], result, model_dir, settings: dict) -> None:
    """result.json (it marks the run finished) and the run's last line: the dev accuracy and macro-F1 of the
    predictions just written, i.e. of the model as it ends (the weights --select chose; `result` says which)."""
    best = scores(dev_preds, dev)
    write_result(out_dir, best, result.model_epoch, settings)
    print(f"{result.describe()}: dev accuracy {best['dev_accuracy']:.4f}, dev macro-F1 "
          f"{best['dev_macro_f1']:.4f}; model exported to {model_dir}")


# ---- checks and limits ------------------------------------------------------------------------------------------
def check_method_arguments(rdrop: float, simcse: float, dropout: float) -> None:
    """--rdrop and --simcse weights, against the model's dropout (both need two different dropout views)."""
    if rdrop < 0 or simcse < 0:
        raise ValueError(f"--rdrop and --simcse must be >= 0, got {rdrop} and {simcse}")
    if (rdrop > 0 or simcse > 0) and dropout == 0:
        logger.warning("warning: the model's dropout is 0, so the two views of R-Drop / SimCSE are identical "
            "(set --dropout 0.1)")


def limit(examples: list, n: int) -> list:
    return examples[:n] if n > 0 else examples


# ---- export: the GPT-2 body as a model directory, the heads beside it ----------------------------------------
def export_model(body: nn.Module, heads: dict[str, nn.Module], out_dir, tokenizer_dir, base_model: str) -> Path:
    """Write `out_dir` as a model directory (config.json, model.safetensors, vocab.json, merges.txt; LoRA/DoRA
    merged into the weights, see modeling.export_language_model) plus head-{name}.safetensors per head, so that
    `--model out_dir` (and `--load-head out_dir/head-{name}.safetensors`) start a new run from it; base_model is
    the --model the run started from."""
    model_dir = export_language_model(body, out_dir, Path(tokenizer_dir), base_model)
    for name, head in heads.items():
        save_safetensors(head.state_dict(), Path(model_dir) / f"head-{name}.safetensors")
    return Path(model_dir)


def load_head(head: nn.Module, path) -> None:
    """Copy a saved head's weights into `head`; a clear error when the file or the shapes do not fit."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--load-head {path}: no such file (an exported model holds head-<task>.safetensors)")
    state = load_safetensors(path)
    expected = head.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != {k: tuple(v.shape) for k, v in expected.items()}:
        raise ValueError(f"--load-head {path}: holds {shapes}, but this head needs "
                         f"{ {k: tuple(v.shape) for k, v in expected.items()} } (another task or label count?)")
    head.load_state_dict(state)
