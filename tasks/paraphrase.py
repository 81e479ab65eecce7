"""`python run.py paraphrase`: Quora paraphrase detection, by default as a yes/no cloze (tasks/cloze.py).

    python run.py paraphrase --model gpt2 --lr 2e-5 --epochs 10 --batch-size 96 --out-dir runs/para

--head cloze (default): the next-token logits of "no"/"yes" after the prompt, loss restricted to those two.
--head vocab (--protocol course): the course's objective, the cross-entropy over the whole vocabulary on the
answer's token id; predictions are the argmax token ids (tasks/cloze.py says why the two differ).
--head classifier: a classification head (2 classes) on the --pooling of the prompt's hidden states.
Methods: --rdrop, --simcse (tasks/losses.py), --adversarial (tasks/data/hard_negatives.py), --augment
(tasks/data/augment.py), --finetune lora|dora. Batch 96 (the study's) may not fit: --batch-size 32 --grad-accum 3 is
the same optimisation with a third of the memory.

Reads quora-{train,dev,test-student}.csv from --data-dir; dev accuracy and macro-F1 each epoch (the best epoch by
dev accuracy is kept); with the best weights writes <out-dir>/predictions/para-{dev,test}-output.csv (0/1 per
pair; token ids with --head vocab) and exports <out-dir>/model (GPT-2 body, + head-quora.safetensors with --head
classifier). A multitask export works as --model: `--model runs/multitask/model` re-fine-tunes the multitask
body on paraphrase alone.

--protocol course trains as the course's paraphrase_detection.py (tasks/protocol.py): batch 8, lr 1e-5, its
AdamW, --head vocab, its prompts (cloze.course_prompt: another question on the test split), and it writes the
test predictions in the order of a shuffle, as the course's test DataLoader(shuffle=True) does (course_order).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from pathlib import Path

from torch.utils.data import RandomSampler

from minigpt.settings import number
from tasks.classify import (
    check_method_arguments,
    classification_loss,
    export_model,
    finish_run,
    limit,
    load_head,
    max_length_for,
    train_classifier,
    write_predictions,
)
from tasks.classify_flags import add_data_arguments, add_method_arguments
from tasks.cloze import GPT2Cloze, GPT2VocabCloze, answer_token_ids, course_prompt, encode_pairs
from tasks.data import (
    course_file_name,
    course_files,
    course_preprocess,
    data_file,
    paraphrase_prompt,
    read_quora,
    resolve_data_dir,
    write_paraphrase_predictions,
)
from tasks.data.augment import read_augment_pairs
from tasks.data.hard_negatives import hard_negatives
from tasks.heads import GPT2Classifier
from tasks.model_flags import add_model_arguments, finetune_config_from_args, model_spec_from_args
from tasks.modeling import apply_finetune, count_trainable, load_model_and_tokenizer
from tasks.protocol import add_protocol_argument, resolve_protocol
from training.config import add_training_arguments, config_from_args
from training.trainer import is_main_process, seed_everything

FINETUNE_CHOICES = ("full", "last-linear-layer", "lora", "dora")
HEADS = ("cloze", "vocab", "classifier")

logger = logging.getLogger("minigpt.paraphrase")


def add_arguments(parser) -> None:
    parser.add_argument("--head", choices=HEADS, default="cloze",
                        help="cloze: the LM head's 'yes'/'no' logits at the last token, a two-way choice; vocab: "
                             "the course's, its logits over the whole vocabulary (labels and predictions are token "
                             "ids, a prediction may be neither answer); classifier: a linear head on the "
                             "--pooling of the hidden states")
    add_data_arguments(parser, max_length=512)
    add_method_arguments(parser)
    g = parser.add_argument_group("adversarial hard negatives (tasks/data/hard_negatives.py)")
    g.add_argument("--adversarial", action="store_true",
                   help="add hard negatives: the most word-overlapping non-duplicates again, and duplicates "
                        "with a number, a negation or a name changed")
    g.add_argument("--adversarial-ratio", type=number(float, 0), default=0.1,
                   help="hard negatives added, as a fraction of the training set (half mined, half perturbed)")
    add_model_arguments(parser, FINETUNE_CHOICES, default_finetune="full")
    add_training_arguments(parser, epochs=10, batch_size=96, lr=2e-5, out_dir="runs/paraphrase")
    add_protocol_argument(parser, "paraphrase")


def _preprocessed(e):
    return replace(e, sentence1=course_preprocess(e.sentence1), sentence2=course_preprocess(e.sentence2))


def read_splits(data_dir: str | None, n_limit: int = 0, adversarial_ratio: float = 0.0, seed: int = 0,
                augment: str | None = None) -> dict[str, list]:
    """{'train', 'dev', 'test'} pairs, course-preprocessed (the first n_limit of each, 0 = all); train + hard
    negatives (adversarial_ratio of it, 0 = none, drawn with `seed`) + the rows of the augment file."""
    data_dir = resolve_data_dir(data_dir)

    def path(split):
        return data_file(data_dir, course_file_name("quora", split))

    train_raw = limit(read_quora(path("train"), labeled=True, preprocess=False), n_limit)
    if adversarial_ratio > 0:  # on the raw text: the perturbation rules need its capitals
        extra, counts = hard_negatives(train_raw, adversarial_ratio, seed)
        kinds = ", ".join(f"{k} {v}" for k, v in counts.items())
        logger.info(f"adversarial: {len(extra)} hard negatives added ({kinds})")
        train_raw = train_raw + extra
    splits = {"train": [_preprocessed(e) for e in train_raw],
              "dev": limit(read_quora(path("dev"), labeled=True), n_limit),
              "test": limit(read_quora(path("test"), labeled=False), n_limit)}
    if augment:
        splits["train"] = splits["train"] + read_augment_pairs(augment, splits["train"])
    return splits


def prompt_of(protocol: str, split: str):
    """The cloze prompt of a split: minigpt's one prompt, or (--protocol course) the course's per split."""
    if protocol == "course":
        return partial(course_prompt, split=split)
    return paraphrase_prompt


def build_model(body, tokenizer, head: str, pooling: str = "last", head_file: str | None = None):
    """GPT2Cloze (head 'cloze'), GPT2VocabCloze (head 'vocab') or GPT2Classifier with 2 labels (head
    'classifier', its weights from head_file if given)."""
    if head in ("cloze", "vocab"):
        if pooling != "last":
            raise ValueError(f"--head {head} answers at the last token; --pooling mean needs --head classifier")
        if head_file:
            raise ValueError(f"--load-head needs --head classifier (the {head} head is GPT-2's own LM head)")
        return GPT2Cloze(body, answer_token_ids(tokenizer)) if head == "cloze" else GPT2VocabCloze(body)
    model = GPT2Classifier(body, 2, pooling)
    if head_file:
        load_head(model.head, head_file)
    return model


def course_order(n: int) -> list[int]:
    """The order in which the course writes its n test predictions: its test DataLoader has shuffle=True, i.e.
    torch's RandomSampler drawing from the global generator (seeded by --seed; the permutation cannot equal the
    course's own, whose generator has drawn its data order and dropout masks before)."""
    return list(RandomSampler(range(n)))


def main(args) -> int:
    """Errors about the input (a missing file, a bad flag) are ValueError / OSError that name what is wrong;
    run.py prints them as one line."""
    resolve_protocol(args)
    seed_everything(args.seed)
    splits = read_splits(args.data_dir, args.limit, args.adversarial_ratio if args.adversarial else 0.0, args.seed,
                         args.augment)
    body, tokenizer, tokenizer_dir = load_model_and_tokenizer(model_spec_from_args(args))
    check_method_arguments(args.rdrop, args.simcse, body.config.dropout)
    max_length = max_length_for(args.max_length, body.config)
    model = build_model(apply_finetune(body, finetune_config_from_args(args)), tokenizer, args.head, args.pooling,
                        args.load_head)
    trainable, total = count_trainable(model)
    logger.info(f"paraphrase: --head {args.head}, --finetune {args.finetune}: {trainable:,} of {total:,} "
                "parameters train")

    label_ids = answer_token_ids(tokenizer) if args.head == "vocab" else None  # the labels as token ids
    encoded = {split: encode_pairs(tokenizer, examples, max_length, f"quora {split}", prompt_of(args.protocol, split),
                                   label_ids)
               for split, examples in splits.items()}
    pad_id = tokenizer.pad_token_id
    loss_fn = partial(classification_loss, rdrop=args.rdrop, simcse=args.simcse, simcse_temp=args.simcse_temp)
    cfg = config_from_args(args, data_files=course_files(resolve_data_dir(args.data_dir), "quora"))
    result = train_classifier(model, encoded, pad_id, cfg, loss_fn, args.eval_batch_size)
    if not is_main_process():
        return 0
    ids = {split: [e.id for e in examples] for split, examples in splits.items()}
    if args.protocol == "course":
        order = course_order(len(encoded["test"]))
        encoded["test"], ids["test"] = [encoded["test"][i] for i in order], [ids["test"][i] for i in order]
    preds = write_predictions(model, encoded, ids, pad_id, args.out_dir, write_paraphrase_predictions,
                      lambda split: f"para-{split}-output.csv", args.eval_batch_size)
    heads = {"quora": model.head} if args.head == "classifier" else {}
    model_dir = export_model(model.body, heads, Path(args.out_dir) / "model", tokenizer_dir, args.model)
    finish_run(args.out_dir, encoded["dev"], preds["dev"], result, model_dir, vars(args))
    return 0
