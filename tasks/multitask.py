"""`python run.py multitask`: one GPT-2 trained on SST sentiment and Quora paraphrase together.

    python run.py multitask --model gpt2 --task-weights sst=1,quora=1 --epochs 10 --out-dir runs/multitask

Model: one shared GPT-2 body; an SST head (ClassificationHead: 5 classes on the --pooling of the hidden states)
and, for Quora, the cloze answer logits of the body's own LM head (--head cloze, tasks/cloze.py) or a second
ClassificationHead with 2 classes (--head classifier).

Interleaving: every training example is tagged with its task and both training sets are concatenated into one;
the trainer shuffles that list every epoch (a permutation seeded by --seed and the epoch), so each micro-batch is a
random mix of the tasks in proportion to their sizes ("proportional" interleaving, deterministic given the seed),
and an epoch shows every example of both tasks once. One forward runs the body once over the whole padded
micro-batch, then each head over its own task's rows. Every head runs on every micro-batch (on zero rows when its
task is absent), so all parameters take part in every backward pass, as DistributedDataParallel requires.

Loss: the weighted mean over the micro-batch's B examples, w set by --task-weights sst=W1,quora=W2:

    L = 1/B sum_b w_task(b) CE_b  =  sum_t w_t (B_t / B) mean_{b in task t} CE_b

Proportional mixing weighs each task by its size, so raise the smaller task's weight to balance them (the full
Quora training set has about 30 times as many pairs as SST has sentences).

Dev: each task's accuracy and macro-F1 every epoch (sst_dev_accuracy, quora_dev_macro_f1, ...); the best epoch
is the one with the best dev_mean_accuracy, the mean of the two accuracies. Afterwards: predictions for both tasks
(sst-{dev,test}-output.csv, para-{dev,test}-output.csv) and <out-dir>/model, the GPT-2 body as a model directory +
head-sst.safetensors (+ head-quora.safetensors). Re-fine-tuning on one task starts from that directory:

    python run.py paraphrase --model runs/multitask/model --out-dir runs/multitask-then-para
    python run.py sentiment --dataset sst --model runs/multitask/model \\
        --load-head runs/multitask/model/head-sst.safetensors --out-dir runs/multitask-then-sst
"""
from __future__ import annotations

import logging
import math
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt.settings import checked_text
from tasks.classify import collate, encode_examples, evaluate, export_model, limit, max_length_for, predict, scores
from tasks.classify_flags import add_data_arguments
from tasks.cloze import answer_token_ids, cloze_logits, encode_pairs
from tasks.data import (
    SENTIMENT_NUM_LABELS,
    course_file_name,
    course_files,
    data_file,
    read_quora,
    read_sentiment,
    resolve_data_dir,
    write_paraphrase_predictions,
    write_sentiment_predictions,
)
from tasks.heads import POOLINGS, ClassificationHead, ClassifierOutput
from tasks.model_flags import add_model_arguments, finetune_config_from_args, model_spec_from_args
from tasks.modeling import apply_finetune, count_trainable, load_model_and_tokenizer
from training.checkpointing import write_result
from training.config import add_training_arguments, config_from_args
from training.trainer import is_main_process, seed_everything, train

TASKS = ("sst", "quora")  # task index t = position here
FINETUNE_CHOICES = ("full", "last-linear-layer", "lora", "dora")

logger = logging.getLogger("minigpt.multitask")


class MultitaskModel(nn.Module):
    """forward(input_ids, attention_mask, task (B,) long) -> [ClassifierOutput of the rows of task t, per t]."""

    def __init__(self, body: nn.Module, pooling: str, head: str, answer_ids: list[int]):
        super().__init__()
        C, dropout = body.config.n_embd, body.config.dropout
        self.body = body
        self.sst = ClassificationHead(C, SENTIMENT_NUM_LABELS["sst"], pooling, dropout)
        self.quora = ClassificationHead(C, 2, pooling, dropout) if head == "classifier" else None  # None: cloze
        self.register_buffer("answer_ids", torch.tensor(answer_ids, dtype=torch.long), persistent=False)

    def forward(self, input_ids, attention_mask, task) -> list[ClassifierOutput]:
        hidden = self.body(input_ids, attention_mask=attention_mask, logits_to_keep=0).hidden_states  # (B, T, C)
        outputs = []
        for t, name in enumerate(TASKS):
            rows = (task == t).nonzero().squeeze(1)  # (B_t,)
            h, mask = hidden[rows], attention_mask[rows]  # (B_t, T, C), (B_t, T)
            if name == "quora" and self.quora is None:
                outputs.append(ClassifierOutput(*cloze_logits(h, mask, self.body.wte.weight, self.answer_ids)))
            else:
                outputs.append(getattr(self, name)(h, mask))
        return outputs

    def heads(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in TASKS if getattr(self, name) is not None}


class TaskView(nn.Module):
    """One task of a MultitaskModel as a plain classifier: forward(input_ids, attention_mask) -> ClassifierOutput."""

    def __init__(self, model: MultitaskModel, task: int):
        super().__init__()
        self.model, self.task = model, task
        self.train(model.training)

    def forward(self, input_ids, attention_mask) -> ClassifierOutput:
        task = torch.full((input_ids.size(0),), self.task, dtype=torch.long, device=input_ids.device)
        return self.model(input_ids, attention_mask, task)[self.task]


def collate_tagged(examples: list[tuple], pad_id: int) -> dict[str, torch.Tensor]:
    """(ids, label, task) examples -> collate's batch + "task" (B,) long."""
    batch = collate([(ids, label) for ids, label, _ in examples], pad_id)
    batch["task"] = torch.tensor([t for _, _, t in examples], dtype=torch.long)
    return batch


def multitask_loss(model, batch: dict, weights: list[float]) -> torch.Tensor:
    """1/B sum_b w_task(b) CE_b (see the module docstring)."""
    outputs = model(batch["input_ids"], batch["attention_mask"], batch["task"])
    total = torch.zeros((), device=batch["labels"].device)
    for t, out in enumerate(outputs):
        labels = batch["labels"][batch["task"] == t]  # (B_t,), the rows' order matches the forward's
        total = total + weights[t] * F.cross_entropy(out.logits.float(), labels, reduction="sum")
    return total / batch["labels"].numel()


def parse_task_weights(text: str) -> list[float]:
    """'sst=1,quora=2' -> [1.0, 2.0] in TASKS order; a task left out weighs 1. A task named twice, or every
    weight 0 (every loss would be 0: nothing would train), is refused."""
    weights, named = dict.fromkeys(TASKS, 1.0), set()
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in weights:
            raise ValueError(f"expected name=weight with a name in {TASKS}, got {item!r}")
        if name.strip() in named:
            raise ValueError(f"{name.strip()} is named twice in {text!r}: give each task one weight")
        named.add(name.strip())
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{value!r} in {item!r} is not a number") from None
        if not math.isfinite(weights[name.strip()]) or weights[name.strip()] < 0:
            raise ValueError(f"weights must be finite and >= 0, got {item!r}")
    if not any(weights.values()):
        raise ValueError(f"every weight is 0 in {text!r}: nothing would train; give at least one task a weight > 0")
    return [weights[name] for name in TASKS]


def with_mean_accuracy(metrics: dict[str, float]) -> dict[str, float]:
    """The per-task dev metrics plus dev_mean_accuracy, the metric that picks the best epoch."""
    return metrics | {"dev_mean_accuracy": sum(metrics[f"{name}_dev_accuracy"] for name in TASKS) / len(TASKS)}


def add_arguments(parser) -> None:
    parser.add_argument("--task-weights", type=checked_text(parse_task_weights), default="sst=1,quora=1",
                        help="loss weight per task, name=weight,... (tasks: sst, quora)")
    parser.add_argument("--head", choices=("cloze", "classifier"), default="cloze",
                        help="Quora's head: the LM head's yes/no logits (cloze) or a linear head on --pooling")
    parser.add_argument("--pooling", choices=POOLINGS, default="last", help="pooling of the classification heads")
    add_data_arguments(parser, max_length=512)
    add_model_arguments(parser, FINETUNE_CHOICES, default_finetune="full")
    add_training_arguments(parser, epochs=10, batch_size=32, lr=2e-5, out_dir="runs/multitask")


def read_encoded(data_dir: str | None, tokenizer, max_length: int, n_limit: int = 0) -> tuple[dict, dict]:
    """({task: {split: examples}}, {task: {split: encoded (ids, label)}}) for both tasks (the first n_limit
    examples of each split, 0 = all)."""
    data_dir = resolve_data_dir(data_dir)
    examples = {"sst": {}, "quora": {}}
    for split in ("train", "dev", "test"):
        labeled = split != "test"
        examples["sst"][split] = limit(read_sentiment(data_file(data_dir, course_file_name("sst", split)), labeled,
                                                      SENTIMENT_NUM_LABELS["sst"]), n_limit)
        examples["quora"][split] = limit(read_quora(data_file(data_dir, course_file_name("quora", split)), labeled),
                                         n_limit)
    encoded = {"sst": {}, "quora": {}}
    for split, rows in examples["sst"].items():
        encoded["sst"][split] = encode_examples(tokenizer, [e.sentence for e in rows], [e.label for e in rows],
                                                max_length, "right", f"sst {split}")
    for split, rows in examples["quora"].items():
        encoded["quora"][split] = encode_pairs(tokenizer, rows, max_length, f"quora {split}")
    return examples, encoded


def main(args) -> int:
    """Errors about the input (a missing file, a bad flag) are ValueError / OSError that name what is wrong;
    run.py prints them as one line."""
    seed_everything(args.seed)
    weights = parse_task_weights(args.task_weights)
    body, tokenizer, tokenizer_dir = load_model_and_tokenizer(model_spec_from_args(args))
    examples, encoded = read_encoded(args.data_dir, tokenizer, max_length_for(args.max_length, body.config),
                                     args.limit)
    model = MultitaskModel(apply_finetune(body, finetune_config_from_args(args)), args.pooling, args.head,
                           answer_token_ids(tokenizer))
    trainable, total = count_trainable(model)
    logger.info(f"multitask {' + '.join(TASKS)} (weights {weights}), --head {args.head}: {trainable:,} of {total:,} "
        "parameters train")
    train_data = [(ids, label, t) for t, name in enumerate(TASKS) for ids, label in encoded[name]["train"]]
    pad_id = tokenizer.pad_token_id

    def evaluate_tasks(m) -> dict[str, float]:
        metrics = {}
        for t, name in enumerate(TASKS):
            metrics |= evaluate(TaskView(m, t), encoded[name]["dev"], pad_id, args.eval_batch_size, f"{name}_dev_")
        return with_mean_accuracy(metrics)

    result = train(model, train_data, partial(collate_tagged, pad_id=pad_id),
                   partial(multitask_loss, weights=weights),
                   config_from_args(args, data_files=course_files(resolve_data_dir(args.data_dir), "sst", "quora")),
                   evaluate=evaluate_tasks, metric="dev_mean_accuracy")
    if not is_main_process():
        return 0
    out_dir = Path(args.out_dir)
    writers = {"sst": ("sst", write_sentiment_predictions), "quora": ("para", write_paraphrase_predictions)}
    best = {}  # the scores of the dev predictions written here: the model as it ends
    for t, name in enumerate(TASKS):
        prefix, write = writers[name]
        for split in ("dev", "test"):
            preds = predict(TaskView(model, t), encoded[name][split], pad_id, args.eval_batch_size)
            ids = [e.id for e in examples[name][split]]
            logger.info(f"wrote {write(out_dir / 'predictions' / f'{prefix}-{split}-output.csv', ids, preds)}")
            if split == "dev":
                best |= scores(preds, encoded[name]["dev"], f"{name}_dev_")
    best = with_mean_accuracy(best)
    model_dir = export_model(model.body, model.heads(), out_dir / "model", tokenizer_dir, args.model)
    write_result(out_dir, best, result.model_epoch, vars(args))
    where = result.describe()
    print(f"{where}: " + ", ".join(f"{k} {v:.4f}" for k, v in best.items())
        + f"; model exported to {model_dir}")
    return 0
