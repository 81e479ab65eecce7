"""`python run.py sonnet`: fine-tune GPT-2 on Shakespeare's sonnets, write the held-out sonnets, score chrF.

Training: each training sonnet (1-131) is one sequence, followed by <|endoftext|> so the model learns where a
sonnet ends; the loss is the usual next-token cross-entropy over the real tokens (causal LM).

Evaluation (every epoch, and the checkpoint metric): each dev prompt (the first 3 lines of sonnets 132-143) is
continued by the chosen decoder; the generation keeps its 3 prompt lines, is cut to --max-lines lines, and the
corpus chrF (metrics/chrf.py, sacreBLEU's chrF) against the full true dev sonnets is `dev_chrf`.

--protocol course trains as the course's sonnet_generation.py (tasks/protocol.py): no <|endoftext|> is appended,
the padding (eos) stays in the loss, and the last epoch's model writes the sonnets (course_collate,
course_lm_loss below). It also decodes as the course's generate does (generate_sonnets(course=True)): the prompt
without an appended newline, no line trim (--max-lines 0, unless given), and top-p draws from the sorted
probabilities (sampling.draw_sorted) with one generator for the run, torch's global one, which the run seeds
with --seed at its start as the course's seed_everything does, one prompt after the other; the output files
number the sonnets 0, 1, ... as the course's do (`run.py compare` pairs such a file by position).

At the end the best checkpoint's model (--select last: the last epoch's) writes `generated_sonnets_dev.txt` and
`generated_sonnets.txt` (the test prompts) in the course format into --out-dir, and the trained model into
--out-dir/model.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from decoding.common import check_room
from decoding.config import SAMPLING, DecodeConfig, add_decoder_arguments, decode, decode_config_from_args
from decoding.sampling import global_generator
from metrics.chrf import corpus_chrf
from metrics.chrf_significance import corpus_chrf_interval
from metrics.floors import describe_floors, sonnet_floors
from minigpt.settings import number
from minigpt.state_dict import refuse_non_finite
from tasks.data import DataError, course_files, data_file, read_sonnets, resolve_data_dir, sonnet_numbers, write_sonnets
from tasks.model_flags import add_model_arguments, finetune_config_from_args, model_spec_from_args
from tasks.modeling import apply_finetune, count_trainable, export_language_model, load_model_and_tokenizer
from tasks.protocol import add_protocol_argument, resolve_protocol
from training.checkpointing import write_result
from training.config import add_training_arguments, config_from_args
from training.out_dir import claim_out_dir
from training.run_settings import run_settings
from training.trainer import is_main_process, seed_everything, train

logger = logging.getLogger("minigpt.sonnet")
PROMPT_LINES = 3


def add_arguments(parser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder with sonnets.txt, sonnets_held_out_dev.txt, TRUE_sonnets_held_out_dev.txt, "
                             "sonnets_held_out.txt (default: $MINIGPT_DATA or data/; `python run.py download data`)")
    parser.add_argument("--max-lines", type=number(int, 0), default=14,
                        help="keep at most this many lines of each generated sonnet, prompt included (a sonnet "
                             "has 14; 0 = keep everything the decoder wrote)")
    parser.add_argument("--dev-limit", "--limit", dest="dev_limit", type=number(int, 0), default=0,
                        help="evaluate each epoch on the first N dev prompts only (0 = all 12); for quick CPU runs "
                             "(--limit, the classifiers' smoke-run flag, is the same here: the 131 training "
                             "sonnets are few, the dev decoding is what takes time)")
    parser.add_argument("--skip-test", action="store_true", help="do not write generations for the test prompts")
    add_model_arguments(parser, finetune_choices=("full", "lora", "dora", "prefix"), default_finetune="full")
    add_training_arguments(parser, out_dir="runs/sonnet", epochs=10, batch_size=8, lr=1e-5, warmup=0.1,
                           weight_decay=0.0)
    add_decoder_arguments(parser, skip=("seed",), max_new_tokens=128)  # sampling draws from the trainer's --seed
    add_protocol_argument(parser, "sonnet")


# ----- data ---------------------------------------------------------------------------------------------------
def load_sonnet_data(data_dir: Path):
    """(training sonnets, dev prompts, true dev sonnets, dev numbers, test prompts, test numbers); the true dev
    sonnets are put in the order of the prompts, matched by sonnet number."""
    train_text = read_sonnets(data_file(data_dir, "sonnets.txt"))  # the names: tasks/data/files.py SONNET_FILES
    dev_path = data_file(data_dir, "sonnets_held_out_dev.txt")
    true_path = data_file(data_dir, "TRUE_sonnets_held_out_dev.txt")
    dev_prompts, dev_numbers = read_sonnets(dev_path), sonnet_numbers(dev_path)
    check_prompts(dev_path, dev_prompts, dev_numbers)
    dev_true = pair_by_number(dev_path, dev_numbers, true_path, read_sonnets(true_path), sonnet_numbers(true_path))
    test_path = data_file(data_dir, "sonnets_held_out.txt")
    test_prompts, test_numbers = read_sonnets(test_path), sonnet_numbers(test_path)
    check_prompts(test_path, test_prompts, test_numbers)
    return train_text, dev_prompts, dev_true, dev_numbers, test_prompts, test_numbers


def pair_by_number(prompt_path: Path, prompt_numbers: list[int], true_path: Path, true_sonnets: list[str],
                   true_numbers: list[int]) -> list[str]:
    """The true sonnet of each prompt's number, in the prompts' order (the files may list them in any order);
    a number twice in a file, or in one file and not the other, is a DataError naming it."""
    for path, numbers in ((prompt_path, prompt_numbers), (true_path, true_numbers)):
        twice = sorted({n for n in numbers if numbers.count(n) > 1})
        if twice:
            raise DataError(f"{path}: sonnet {twice[0]} appears more than once")
    counts = (f"{prompt_path} holds {len(prompt_numbers)} prompts, {true_path} holds {len(true_numbers)} "
              "sonnets; each prompt is scored against the true sonnet of the same number")
    for n in prompt_numbers:
        if n not in true_numbers:
            raise DataError(f"sonnet {n} has a prompt but no true sonnet in {true_path} ({counts})")
    for n in true_numbers:
        if n not in prompt_numbers:
            raise DataError(f"sonnet {n} is in {true_path} but has no prompt in {prompt_path} ({counts})")
    by_number = dict(zip(true_numbers, true_sonnets))
    return [by_number[n] for n in prompt_numbers]


def check_context(tokenizer, prompts: list[str], max_new_tokens: int, n_positions: int) -> None:
    """Every prompt plus --max-new-tokens must fit the model's context: checked before any training step."""
    longest = max((len(tokenizer.encode(p + "\n")) for p in prompts), default=0)
    check_room(longest, max_new_tokens, n_positions, prompt="the longest prompt")


def check_prompts(path: Path, prompts: list[str], numbers: list[int]) -> None:
    for prompt, sonnet_number in zip(prompts, numbers):
        lines = prompt.split("\n")
        empty = [i + 1 for i, line in enumerate(lines) if not line.strip()]
        if empty:
            raise DataError(f"{path}: sonnet {sonnet_number}: prompt line {empty[0]} is empty; a prompt is the first "
                            f"{PROMPT_LINES} lines of a sonnet, one per line")


def make_collate(tokenizer, max_length: int):
    """Sonnets -> right-padded ids; labels are the ids with padding set to -100 (ignored by the loss)."""
    def collate(sonnets: list[str]) -> dict[str, torch.Tensor]:
        batch = tokenizer.encode_batch([s + "<|endoftext|>" for s in sonnets], max_length=max_length)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": labels}
    return collate


def lm_loss(model, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over real tokens: token t predicts token t+1.

    With right padding the real tokens never attend to the padding after them (causal mask), so no attention
    mask is needed, and positions are 0, 1, ... as for an unpadded sequence.
    """
    logits = model(batch["input_ids"]).logits  # (B, T, V)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                             ignore_index=-100)


def course_collate(tokenizer, max_length: int):
    """The course's SonnetsDataset.collate_fn: sonnets as they are (no <|endoftext|>), right-padded with eos;
    the labels are the input ids themselves, padding included."""
    def collate(sonnets: list[str]) -> dict[str, torch.Tensor]:
        batch = tokenizer.encode_batch(sonnets, max_length=max_length)
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.input_ids}
    return collate


def course_lm_loss(model, batch: dict) -> torch.Tensor:
    """The course's sonnet loss: mean next-token cross-entropy over EVERY position, padding included (so the
    model also learns to continue eos with eos). As the course's GPT2Model, the model sees the attention mask
    (no query attends to padding) and numbers positions 0..T-1 in every row, padding too."""
    ids = batch["input_ids"]  # (B, T)
    positions = torch.arange(ids.size(1), device=ids.device).expand_as(ids)  # (B, T)
    logits = model(ids, attention_mask=batch["attention_mask"], position_ids=positions).logits  # (B, T, V)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())


def training_recipe(protocol: str, tokenizer, max_length: int):
    """(collate, loss_fn) of --protocol: minigpt's (eot appended, padding masked) or the course's."""
    if protocol == "course":
        return course_collate(tokenizer, max_length), course_lm_loss
    return make_collate(tokenizer, max_length), lm_loss


# ----- generation and scoring ---------------------------------------------------------------------------------
def trim_lines(text: str, max_lines: int) -> str:
    """Keep the first max_lines non-empty lines (0 = all). A line holding only a number is dropped: in the course
    format a number alone on a line starts the next sonnet, so it would split this one when read back."""
    kept, count = [], 0
    for line in text.strip().split("\n"):
        if line.strip().isdigit():
            continue
        if max_lines and line.strip() and count == max_lines:
            break
        count += bool(line.strip())
        kept.append(line)
    return "\n".join(kept).strip()


def generate_sonnets(module, tokenizer, prompts: list[str], cfg: DecodeConfig, max_lines: int,
                     desc: str, course: bool = False) -> list[str]:
    """Continue each prompt with cfg's decoder; the result keeps the prompt lines (at most max_lines lines in
    all, 0 = all), as the course scores it.

    The prompts are decoded --decode-batch-size at a time (0 = all at once), left-padded with eos, one forward
    per step for the whole batch; the deterministic decoders give every prompt the text it gets alone.
    Sampling decoders draw prompt k's sonnet from a generator seeded with --seed + k: each prompt gets its own
    random stream (one seed for all would give every sonnet the same draws), and prompt k's sonnet does not
    depend on the other prompts, the batch size (--dev-limit, --decode-batch-size) or the epoch.

    course=True (--protocol course) decodes as the course's generate: each prompt as it is, without the newline
    minigpt appends; top-p draws in sorted order from torch's global generator, one prompt at a time (a shared
    stream's draws would depend on the batch), so prompt k's sonnet depends on those before it and on what drew
    from the generator earlier in the run, as in the course."""
    refuse_non_finite(module, "decode")  # --epochs 0 from NaN weights: no text (the trainer refuses to train)
    device = next(module.parameters()).device
    shared = course and cfg.decoder == "top-p"  # the course's sampling: one stream for the run
    if shared:
        cfg = replace(cfg, draw="sorted", batch_size=1)
    size = cfg.batch_size or len(prompts) or 1
    outputs = []
    for start in tqdm(range(0, len(prompts), size), desc=desc, leave=False, disable=not is_main_process()):
        batch = [p if course else p + "\n" for p in prompts[start : start + size]]
        generator = (global_generator(device) if shared else
                     [torch.Generator(device=device).manual_seed(cfg.seed + start + k) for k in range(len(batch))])
        outputs += generate_batch(module, tokenizer, batch, generator, cfg, max_lines, device)
    return outputs


def generate_batch(module, tokenizer, prompts: list[str], generator, cfg: DecodeConfig, max_lines: int,
                   device) -> list[str]:
    """Prompts decoded as one left-padded batch (sampling from `generator`: a list of one per prompt, or one
    shared) -> their trimmed texts."""
    batch = tokenizer.encode_batch(prompts, padding_side="left")
    ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)  # (B, T) each
    out = decode(module, ids, cfg, attention_mask=mask, eos_token_id=tokenizer.eos_token_id,
                 decode_fn=tokenizer.decode, generator=generator)  # (B, T + n)
    texts = []
    for row, padding in zip(out, (mask == 0).sum(dim=1).tolist()):
        text = tokenizer.decode(row[padding:].tolist()).split("<|endoftext|>")[0]  # without the left padding
        texts.append(trim_lines(text, max_lines))
    return texts


def make_evaluate(tokenizer, dev_prompts, dev_true, cfg: DecodeConfig, max_lines: int, dev_limit: int = 0,
                  course: bool = False):
    """evaluate(module) -> {"dev_chrf": corpus chrF of the first dev_limit (0 = all) dev prompts' sonnets}."""
    n = dev_limit or len(dev_prompts)

    def evaluate(module) -> dict[str, float]:
        generated = generate_sonnets(module, tokenizer, dev_prompts[:n], cfg, max_lines, "dev sonnets", course)
        return {"dev_chrf": corpus_chrf(generated, dev_true[:n])}
    return evaluate


def output_numbers(numbers: list[int], course: bool) -> list[int]:
    """The numbers the output file gives the sonnets: their own, or (course) 0, 1, ... as the course writes."""
    return list(range(len(numbers))) if course else numbers


# ----- the task -----------------------------------------------------------------------------------------------
def main(args) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    cfg = config_from_args(resolve_protocol(args), data_files=course_files(data_dir, "sonnet"))
    decoding = decode_config_from_args(args, seed=args.seed if args.decoder in SAMPLING else DecodeConfig.seed)
    finetune = finetune_config_from_args(args)
    train_text, dev_prompts, dev_true, dev_numbers, test_prompts, test_numbers = load_sonnet_data(data_dir)
    seed_everything(cfg.seed)
    model, tokenizer, tokenizer_dir = load_model_and_tokenizer(model_spec_from_args(args))
    check_context(tokenizer, dev_prompts + test_prompts, args.max_new_tokens, model.config.n_positions)
    # --epochs 0 decodes with the model as loaded: no adapters or prefixes (they would start untrained)
    module = apply_finetune(model, finetune) if cfg.epochs > 0 else model.eval()
    trainable, total = count_trainable(module)
    what = (f"--finetune {args.finetune}: {trainable:,} of {total:,} parameters train" if cfg.epochs > 0 else
            f"--epochs 0: no training, the {total:,} parameters of the model as loaded decode")
    logger.info(f"sonnet: {len(train_text)} training sonnets, {len(dev_prompts)} dev prompts, "
                f"{len(test_prompts)} test prompts; {what}; decoder {args.decoder}; --protocol {args.protocol}")
    course = args.protocol == "course"  # decode and number the sonnets as the course's generate does
    evaluate = make_evaluate(tokenizer, dev_prompts, dev_true, decoding, args.max_lines, args.dev_limit, course)
    best_epoch = None  # --epochs 0: the model as loaded
    if cfg.epochs == 0 and is_main_process():  # train() does this for a trained run: empty, or this run's own
        claim_out_dir(Path(cfg.out_dir), run_settings(cfg), resume=False)
    if cfg.epochs > 0:
        collate, loss_fn = training_recipe(args.protocol, tokenizer, model.config.n_positions)
        result = train(module, train_text, collate, loss_fn, cfg, evaluate=evaluate, metric="dev_chrf")
        chrf = f": dev chrF {result.best_metric:.2f}" if result.holds_best else ""
        logger.info(f"training ended ({result.stop_reason}); the model is now {result.describe()}{chrf}")
        best_epoch = result.model_epoch
    if not is_main_process():
        return 0
    module.eval()
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        dev_generated = generate_sonnets(module, tokenizer, dev_prompts, decoding, args.max_lines, "dev sonnets",
                                         course)
        dev_chrf = corpus_chrf_interval(dev_generated, dev_true)  # score, bootstrap mean ± 95% half-width
        write_sonnets(out_dir / "generated_sonnets_dev.txt", dev_generated, output_numbers(dev_numbers, course))
        if not args.skip_test:
            test_generated = generate_sonnets(module, tokenizer, test_prompts, decoding, args.max_lines,
                                              "test sonnets", course)
            write_sonnets(out_dir / "generated_sonnets.txt", test_generated, output_numbers(test_numbers, course))
    if cfg.epochs > 0:
        export_language_model(module, out_dir / "model", tokenizer_dir, args.model, finetune.prefix_hidden)
    floors = sonnet_floors(dev_prompts, dev_true, train_text)  # what copying lines scores (metrics/floors.py)
    logger.info(describe_floors(floors))
    write_result(out_dir, {"dev_chrf": dev_chrf.score, "dev_chrf_mean": dev_chrf.mean,
                           "dev_chrf_ci95": dev_chrf.half_width, **floors, "decoder": args.decoder}, best_epoch,
                 vars(args))
    print(f"dev chrF: {dev_chrf}, 95% bootstrap interval; floors: prompts {floors['floor_prompts']:.2f}, prompt "
          f"+ random lines {floors['floor_random_lines']:.2f}  (generations in {out_dir}/generated_sonnets_dev.txt"
          + ("" if args.skip_test else f", test in {out_dir}/generated_sonnets.txt") + ")")
    return 0
