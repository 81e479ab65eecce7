"""`python run.py sentiment --dataset sst|cfimdb`: GPT-2 + a classification head on a pooled hidden state.

    python run.py sentiment --dataset sst --model gpt2 --finetune full --lr 2e-5 --epochs 10 --out-dir runs/sst

Reads ids-{dataset}-{train,dev,test-student}.csv from --data-dir, trains with the shared trainer (training/trainer.py:
checkpoints, warmup/decay, clipping, --resume) on cross-entropy (+ --rdrop, --simcse), reports dev accuracy and
macro-F1 after every epoch (the best epoch by dev accuracy is kept), then with the best weights (--select last:
the last epoch's) writes

    <out-dir>/predictions/{mode}-{dataset}-{dev,test}-out.csv   (the course's format and names)
    <out-dir>/model/   the GPT-2 body as a model directory (LoRA/DoRA merged) + head-{dataset}.safetensors,
                       so `--model <out-dir>/model --load-head <out-dir>/model/head-{dataset}.safetensors`
                       continues from it

{mode} is the course's name of the --finetune mode, full-model or last-linear-layer; lora and dora, which the
course does not have, keep their own names (lora-sst-dev-out.csv). --protocol course trains as the course's
classifier.py (tasks/protocol.py): last-linear-layer, lr 1e-3, batch 8, head dropout 0.3, its AdamW, and its loss
(classify.course_summed_loss: summed over the batch, divided by --batch-size; with --rdrop or --simcse,
which the course does not have, the usual loss).
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from minigpt.settings import number
from tasks.classify import (
    check_method_arguments,
    classification_loss,
    course_summed_loss,
    encode_examples,
    export_model,
    finish_run,
    limit,
    load_head,
    max_length_for,
    train_classifier,
    write_predictions,
)
from tasks.classify_flags import add_data_arguments, add_method_arguments
from tasks.data import (
    SENTIMENT_NUM_LABELS,
    course_file_name,
    course_files,
    data_file,
    read_sentiment,
    resolve_data_dir,
    write_sentiment_predictions,
)
from tasks.data.augment import read_augment_sentiment
from tasks.heads import GPT2Classifier
from tasks.model_flags import add_model_arguments, finetune_config_from_args, model_spec_from_args
from tasks.modeling import apply_finetune, count_trainable, load_model_and_tokenizer
from tasks.protocol import add_protocol_argument, resolve_protocol
from training.config import add_training_arguments, config_from_args
from training.trainer import is_main_process, seed_everything

FINETUNE_CHOICES = ("full", "last-linear-layer", "lora", "dora")

logger = logging.getLogger("minigpt.sentiment")


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", choices=tuple(SENTIMENT_NUM_LABELS), default="sst",
                        help="sst: 5 classes (0 negative .. 4 positive); cfimdb: 2 classes (movie reviews)")
    add_data_arguments(parser, max_length=512)
    add_method_arguments(parser)
    add_model_arguments(parser, FINETUNE_CHOICES, default_finetune="full")
    parser.add_argument("--head-dropout", type=number(float, 0, 1, high_open=True), default=None,
                        help="dropout on the pooled state before the classification head (None: the model's "
                             "dropout)")
    add_training_arguments(parser, epochs=10, batch_size=8, lr=2e-5, out_dir="runs/sentiment-{dataset}")
    add_protocol_argument(parser, "sentiment")


def prediction_file(finetune: str, dataset: str, split: str) -> str:
    """The course's name of a prediction file: full-model-sst-dev-out.csv, last-linear-layer-cfimdb-test-out.csv;
    lora / dora (not course modes) keep their names: lora-sst-dev-out.csv."""
    mode = "full-model" if finetune == "full" else finetune
    return f"{mode}-{dataset}-{split}-out.csv"


def read_splits(data_dir: str | None, dataset: str, n_limit: int = 0, augment: str | None = None) -> dict[str, list]:
    """{'train', 'dev', 'test'} examples of `dataset` (the first n_limit of each, 0 = all; + the rows of the
    augment file in train)."""
    data_dir = resolve_data_dir(data_dir)
    num_labels = SENTIMENT_NUM_LABELS[dataset]
    splits = {}
    for split in ("train", "dev", "test"):
        path = data_file(data_dir, course_file_name(dataset, split))
        splits[split] = limit(read_sentiment(path, labeled=split != "test", num_labels=num_labels), n_limit)
    if augment:
        splits["train"] = splits["train"] + read_augment_sentiment(augment, num_labels, splits["train"])
    return splits


def loss_of(protocol: str, rdrop: float, simcse: float, simcse_temp: float, batch_size: int):
    """The classification loss (+ R-Drop, SimCSE) or, --protocol course without R-Drop / SimCSE, the course's."""
    if protocol == "course" and rdrop == 0 and simcse == 0:
        return partial(course_summed_loss, batch_size=batch_size)
    return partial(classification_loss, rdrop=rdrop, simcse=simcse, simcse_temp=simcse_temp)


def main(args) -> int:
    """Errors about the input (a missing file, a bad flag) are ValueError / OSError that name what is wrong;
    run.py prints them as one line."""
    resolve_protocol(args)
    seed_everything(args.seed)  # before any initialisation: the head, LoRA's A, a scratch body
    splits = read_splits(args.data_dir, args.dataset, args.limit, args.augment)
    body, tokenizer, tokenizer_dir = load_model_and_tokenizer(model_spec_from_args(args))
    check_method_arguments(args.rdrop, args.simcse, body.config.dropout)
    max_length = max_length_for(args.max_length, body.config)
    model = GPT2Classifier(apply_finetune(body, finetune_config_from_args(args)), SENTIMENT_NUM_LABELS[args.dataset],
                           args.pooling, args.head_dropout)
    if args.load_head:
        load_head(model.head, args.load_head)
    trainable, total = count_trainable(model)
    logger.info(f"sentiment {args.dataset}: --finetune {args.finetune}, --pooling {args.pooling}: {trainable:,} of "
        f"{total:,} parameters train")

    encoded = {split: encode_examples(tokenizer, [e.sentence for e in examples], [e.label for e in examples],
                                      max_length, "right", f"{args.dataset} {split}")
               for split, examples in splits.items()}
    pad_id = tokenizer.pad_token_id
    loss_fn = loss_of(args.protocol, args.rdrop, args.simcse, args.simcse_temp, args.batch_size)
    cfg = config_from_args(args, data_files=course_files(resolve_data_dir(args.data_dir), args.dataset))
    result = train_classifier(model, encoded, pad_id, cfg, loss_fn, args.eval_batch_size)
    if not is_main_process():
        return 0
    ids = {split: [e.id for e in examples] for split, examples in splits.items()}
    preds = write_predictions(model, encoded, ids, pad_id, args.out_dir, write_sentiment_predictions,
                      lambda split: prediction_file(args.finetune, args.dataset, split), args.eval_batch_size)
    model_dir = export_model(model.body, {args.dataset: model.head}, Path(args.out_dir) / "model", tokenizer_dir,
                             args.model)
    finish_run(args.out_dir, encoded["dev"], preds["dev"], result, model_dir, vars(args))
    return 0
