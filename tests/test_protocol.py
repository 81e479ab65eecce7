"""--protocol course against direct transcriptions of the course's code (CS224N GPT-2 project, 2025): its AdamW
(optimizer.py), its sonnet training loop (sonnet_generation.py) and its sentiment loop (classifier.py,
last-linear-layer); the flags --schedule, --select, --optimizer.

The transcriptions are written here from the course's equations and loop, on transformers' GPT2LMHeadModel
(the course's GPT2Model computes GPT-2 as transformers does, and loads its weights), and compared step by step.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import random

import pytest
import torch
import torch.nn.functional as F

import run
from minigpt import load_pretrained
from minigpt.tokenizer import Tokenizer, write_vocab_files
from tasks import paraphrase, sentiment, sonnet
from tasks.classify import encode_examples, train_classifier
from tasks.cloze import course_prompt
from tasks.heads import GPT2Classifier
from tasks.model_flags import finetune_config_from_args
from tasks.modeling import apply_finetune
from tasks.protocol import COURSE, resolve_protocol
from tests._fixtures import Affine, affine_data, collate_xy, mse, sonnet_args, write_fixture
from tests.conftest import tiny_pair
from training.config import config_from_args
from training.course_adamw import CourseAdamW
from training.optimization import warmup_constant
from training.trainer import TrainConfig, epoch_plan, train

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the course's AdamW ---------------------------------------------------------------------------------------
def course_adamw_transcribed(params, grads_per_step, lr, wd, betas=(0.9, 0.999), eps=1e-6):
    """optimizer.py's AdamW.step, written out: state per parameter, the step size holding both corrections."""
    beta1, beta2 = betas
    state = [dict(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p)) for p in params]
    for grads in grads_per_step:
        for p, g, s in zip(params, grads, state):
            s["t"] += 1
            s["m"] = beta1 * s["m"] + (1 - beta1) * g
            s["v"] = beta2 * s["v"] + (1 - beta2) * g * g
            alpha = lr * math.sqrt(1 - beta2 ** s["t"]) / (1 - beta1 ** s["t"])
            p -= alpha * s["m"] / (torch.sqrt(s["v"]) + eps)
            p -= lr * wd * p  # "add weight decay after the main gradient-based updates", lr included
    return params


def test_course_adamw_matches_the_transcription_of_optimizer_py():
    torch.manual_seed(0)
    start = [torch.randn(5, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    grads = [[torch.randn_like(p) * 10 ** -k for p in start] for k in range(6)]  # small grads: eps matters
    expected = course_adamw_transcribed([p.clone() for p in start], grads, lr=1e-2, wd=0.1)
    params = [torch.nn.Parameter(p.clone()) for p in start]
    opt = CourseAdamW(params, lr=1e-2, weight_decay=0.1)
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = gi.clone()
        opt.step()
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-12)
    # the same equations as torch's AdamW when eps and weight decay are 0; not with the course's eps
    torch_params = [torch.nn.Parameter(p.clone()) for p in start]
    torch_opt = torch.optim.AdamW(torch_params, lr=1e-2, eps=0.0, weight_decay=0.0)
    no_eps = [torch.nn.Parameter(p.clone()) for p in start]
    ours_no_eps = CourseAdamW(no_eps, lr=1e-2, eps=0.0, weight_decay=0.0)
    for g in grads:
        for p, q, gi in zip(torch_params, no_eps, g):
            p.grad, q.grad = gi.clone(), gi.clone()
        torch_opt.step()
        ours_no_eps.step()
    for p, q in zip(torch_params, no_eps):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-10, atol=1e-12)
    # with the course's eps (and no weight decay) the two differ: eps sits at another place in the step
    course, torch_eps = [torch.nn.Parameter(p.clone()) for p in start], [torch.nn.Parameter(p.clone()) for p in start]
    opts = CourseAdamW(course, lr=1e-2, eps=1e-6), torch.optim.AdamW(torch_eps, lr=1e-2, eps=1e-6, weight_decay=0.0)
    for g in grads:
        for p, q, gi in zip(course, torch_eps, g):
            p.grad, q.grad = gi.clone(), gi.clone()
        for o in opts:
            o.step()
    assert (course[1] - torch_eps[1]).abs().max() > 1e-6


# ---- schedule and select ---------------------------------------------------------------------------------------
def test_constant_schedule_keeps_the_learning_rate_after_warmup(tmp_path):
    assert [warmup_constant(s, 2) for s in range(5)] == [0.0, 0.5, 1.0, 1.0, 1.0]
    cfg = TrainConfig(out_dir=str(tmp_path / "c"), epochs=3, batch_size=4, lr=0.05, schedule="constant",
                      device="cpu", keep_best=0)
    result = train(Affine(), affine_data(8), collate_xy, mse, cfg)
    assert [s["lr"] for s in result.step_log] == [0.05] * 6
    linear = train(Affine(), affine_data(8), collate_xy, mse,
                   TrainConfig(out_dir=str(tmp_path / "l"), epochs=3, batch_size=4, lr=0.05, device="cpu"))
    assert [round(s["lr"], 6) for s in linear.step_log] == [0.05, 0.041667, 0.033333, 0.025, 0.016667, 0.008333]


@pytest.mark.parametrize("select, keep_best, says", [
    ("best", 1, "best epoch 2"),
    ("last", 1, "the last epoch, 4"),
    ("best", 0, "the last epoch, 4 (--keep-best 0 kept no checkpoint of the best epoch, 2)")])  # nothing to load
def test_select_chooses_the_best_or_the_last_epoch(tmp_path, select, keep_best, says):
    scores = iter([3.0, 5.0, 1.0, 2.0])  # the best dev epoch is 2, the last 4
    snapshots = []

    def evaluate(module):
        snapshots.append(copy.deepcopy(module.state_dict()))
        return {"dev": next(scores)}

    model = Affine()
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=4, batch_size=4, lr=0.05, device="cpu", select=select,
                      keep_best=keep_best)
    result = train(model, affine_data(8), collate_xy, mse, cfg, evaluate=evaluate, metric="dev")
    epoch = 2 if select == "best" and keep_best else 4
    assert result.best_epoch == 2 and result.model_epoch == epoch
    assert result.describe() == says and result.holds_best == (epoch == 2)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[epoch - 1][name], rtol=0, atol=0)
    assert not torch.equal(snapshots[1]["proj.weight"], snapshots[3]["proj.weight"])


# ---- the protocol's flags ----------------------------------------------------------------------------------------
def parse(module, *argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return resolve_protocol(parser.parse_args(list(argv)))


@pytest.mark.parametrize("module, task", [(sonnet, "sonnet"), (sentiment, "sentiment"),
                                          (paraphrase, "paraphrase")])
def test_course_protocol_sets_its_values_and_given_flags_win(module, task):
    plain = parse(module)
    course = parse(module, "--protocol", "course")
    for dest, value in COURSE[task].items():
        assert getattr(course, dest) == value, dest
    assert plain.optimizer == "adamw" and plain.schedule == "linear" and plain.amp is True
    given = parse(module, "--protocol", "course", "--lr", "3e-4", "--max-grad-norm", "1", "--select", "best")
    assert (given.lr, given.max_grad_norm, given.select, given.optimizer) == (3e-4, 1.0, "best", "course")
    assert parse(module, "--no-amp").amp is False and parse(module, "--protocol", "course", "--no-amp").amp is False
    help_text = argparse.ArgumentParser()
    module.add_arguments(help_text)
    text = " ".join(help_text.format_help().split())
    assert "--protocol course: constant" in text and "--optimizer course" in text


def test_course_prompts_and_prediction_names():
    assert course_prompt("a b ?", "c", "test") == 'Is "a b ?" a paraphrase of "c"? Answer "yes" or "no": '
    assert course_prompt("a b ?", "c", "dev") == ('Question 1: "a b ?"\nQuestion 2: "c\n'
                                                  'Are these questions asking the same thing?\n')
    course = parse(paraphrase, "--protocol", "course")
    assert paraphrase.prompt_of(course.protocol, "train")("x", "y") == course_prompt("x", "y", "train")
    plain = paraphrase.prompt_of(parse(paraphrase).protocol, "test")
    assert plain("x", "y").startswith('Question 1: "x"\nQuestion 2: "y"\n')
    assert sentiment.prediction_file("full", "sst", "dev") == "full-model-sst-dev-out.csv"
    assert sentiment.prediction_file("last-linear-layer", "cfimdb", "test") == "last-linear-layer-cfimdb-test-out.csv"
    assert sentiment.prediction_file("lora", "sst", "test") == "lora-sst-test-out.csv"


# ---- the course's sonnet training loop, transcribed --------------------------------------------------------------
WORDS = "thee thou love fair summer day sweet time beauty eyes heart doth art night".split()


def course_sonnet_losses(hf_model, tokenizer, sonnets, epochs, batch_size, lr, seed):
    """sonnet_generation.py's train(): per batch, tokenizer(sonnets, padding=True) with pad = eos, logits of
    model(ids, mask), cross_entropy(logits[:, :-1], ids[:, 1:]) over every position, backward, AdamW step.
    The batches follow minigpt's epoch order (the course's DataLoader shuffles with its own generator)."""
    params = [p for p in hf_model.parameters()]
    opt_state = [dict(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p)) for p in params]
    losses = []
    hf_model.train()
    for epoch in range(epochs):
        for step in epoch_plan(len(sonnets), batch_size, 1, 1, seed, epoch):
            rows = [tokenizer.encode(sonnets[i]) for i in step[0].tolist()]
            T = max(len(r) for r in rows)
            ids = torch.tensor([r + [tokenizer.eos_token_id] * (T - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
            logits = hf_model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
            hf_model.zero_grad()
            loss.backward()
            with torch.no_grad():
                course_adamw_transcribed_step(params, opt_state, lr)
            losses.append(loss.item())
    return losses


def course_adamw_transcribed_step(params, state, lr, betas=(0.9, 0.999), eps=1e-6):
    beta1, beta2 = betas
    for p, s in zip(params, state):
        if p.grad is None:
            continue
        s["t"] += 1
        s["m"] = beta1 * s["m"] + (1 - beta1) * p.grad
        s["v"] = beta2 * s["v"] + (1 - beta2) * p.grad * p.grad
        p -= lr * math.sqrt(1 - beta2 ** s["t"]) / (1 - beta1 ** s["t"]) * s["m"] / (torch.sqrt(s["v"]) + eps)


def test_course_protocol_trains_sonnets_as_the_course_loop(tmp_path):
    tokenizer = Tokenizer.from_dir(write_vocab_files(tmp_path / "tok", [("t", "h"), ("th", "e")]))
    rng = random.Random(0)
    sonnets = ["\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(3))
               for _ in range(7)]  # different lengths: every batch has padding
    ours, hf = tiny_pair(seed=1)
    args = parse(sonnet, "--protocol", "course", "--out-dir", str(tmp_path / "run"), "--epochs", "2",
                 "--batch-size", "3", "--lr", "2e-3", "--device", "cpu", "--keep-best", "0")
    cfg = config_from_args(args)
    collate, loss_fn = sonnet.training_recipe(args.protocol, tokenizer, ours.config.n_positions)
    result = train(ours.train(), sonnets, collate, loss_fn, cfg)
    expected = course_sonnet_losses(hf, tokenizer, sonnets, 2, 3, 2e-3, cfg.seed)
    got = [s["loss"] for s in result.step_log]
    assert len(got) == 6 and [s["lr"] for s in result.step_log] == [2e-3] * 6
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=2e-5, atol=2e-5)
    assert expected[-1] < expected[0] - 0.05  # the steps were large enough to move the loss
    # minigpt's own recipe (eot appended, padding out of the loss) gives other losses from the first step on
    plain_collate, plain_loss = sonnet.training_recipe(parse(sonnet).protocol, tokenizer, ours.config.n_positions)
    fresh, _ = tiny_pair(seed=1)
    batch = [sonnets[i] for i in epoch_plan(len(sonnets), 3, 1, 1, cfg.seed, 0)[0][0].tolist()]
    assert abs(plain_loss(fresh, plain_collate(batch)).item() - expected[0]) > 1e-2


# ---- the course's sentiment training loop (classifier.py, last-linear-layer), transcribed ------------------------
def course_sentiment_losses(hf_body, head, tokenizer, texts, labels, epochs, batch_size, lr, seed):
    """classifier.py's train(): GPT-2 frozen, the last real token's hidden state -> dropout 0.3 -> linear;
    cross_entropy(logits, labels, reduction='sum') / batch_size, backward, AdamW step on the head."""
    params = list(head.parameters())
    state = [dict(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p)) for p in params]
    torch.manual_seed(seed)  # the trainer seeds the dropout stream the same way
    losses = []
    for epoch in range(epochs):
        for step in epoch_plan(len(texts), batch_size, 1, 1, seed, epoch):
            rows = [tokenizer.encode(texts[i]) for i in step[0].tolist()]
            T = max(len(r) for r in rows)
            ids = torch.tensor([r + [tokenizer.eos_token_id] * (T - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
            with torch.no_grad():
                hidden = hf_body(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, C)
            last = hidden[torch.arange(len(rows)), mask.sum(dim=1) - 1]  # (B, C)
            logits = head(F.dropout(last, 0.3, training=True))
            y = torch.tensor([labels[i] for i in step[0].tolist()])
            loss = F.cross_entropy(logits, y, reduction="sum") / batch_size
            head.zero_grad()
            loss.backward()
            with torch.no_grad():
                course_adamw_transcribed_step(params, state, lr)
            losses.append(loss.item())
    return losses


def test_course_protocol_trains_sentiment_as_the_course_loop(tmp_path):
    tokenizer = Tokenizer.from_dir(write_vocab_files(tmp_path / "tok", [("t", "h"), ("th", "e")]))
    rng = random.Random(1)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7))) for _ in range(10)]
    labels = [rng.randrange(5) for _ in texts]
    ours, hf = tiny_pair(seed=2)
    args = parse(sentiment, "--protocol", "course", "--out-dir", str(tmp_path / "run"), "--epochs", "2",
                 "--batch-size", "4", "--device", "cpu", "--keep-best", "0")
    assert args.finetune == "last-linear-layer" and args.head_dropout == 0.3 and args.lr == 1e-3
    torch.manual_seed(0)
    model = GPT2Classifier(apply_finetune(ours, finetune_config_from_args(args)), 5, "last", args.head_dropout)
    head = copy.deepcopy(model.head.proj)  # the same initial head for the transcription
    encoded = encode_examples(tokenizer, texts, labels, args.max_length, "right", "train")
    loss_fn = sentiment.loss_of(args.protocol, args.rdrop, args.simcse, args.simcse_temp, args.batch_size)
    result = train_classifier(model, {"train": encoded, "dev": encoded[:4]}, tokenizer.pad_token_id,
                              config_from_args(args), loss_fn)
    expected = course_sentiment_losses(hf.transformer.eval(), head, tokenizer, texts, labels, 2, 4, 1e-3,
                                       args.seed)
    got = [s["loss"] for s in result.step_log]
    assert len(got) == 6  # 4 + 4 + 2 examples per epoch: the short last batch weighs 2/4
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=2e-5, atol=2e-5)
    for name, p in model.named_parameters():
        assert p.requires_grad == name.startswith("head."), name


# ---- the tasks end to end under --protocol course -----------------------------------------------------------------
def test_sonnet_course_protocol_ends_with_the_last_epoch(tmp_path):

    tok = write_vocab_files(tmp_path / "tok", [("t", "h"), ("th", "e")])
    data, out = write_fixture(tmp_path / "data", n_train=8), tmp_path / "out"
    assert run.main(sonnet_args(data, out, tok, "--protocol", "course", "--epochs", "3", "--keep-best", "1")) == 0
    result = json.loads((out / "result.json").read_text())
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert result["best_epoch"] == 3 and [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["lr"] for h in history] == [3e-3] * 3  # the constant schedule (the given --lr wins)
    assert result["dev_chrf"] == pytest.approx(history[-1]["dev_chrf"])
    exported = load_pretrained(out / "model").state_dict()  # the last epoch's weights, as the run ended
    last = torch.load(out / "last.pt", weights_only=True)["model"]
    assert exported.keys() == last.keys() and all(torch.equal(exported[k], last[k]) for k in last)


@pytest.mark.parametrize("task", ["sentiment", "paraphrase"])
def test_classification_course_protocol_runs_and_names_its_predictions(tmp_path, task, caplog):
    caplog.set_level(logging.INFO)
    from tests._task_fixtures import SCRATCH, tokenizer_dir, write_quora_files, write_sentiment_files

    (write_sentiment_files if task == "sentiment" else write_quora_files)(tmp_path / "data", sizes=(24, 8, 6))
    argv = ["--data-dir", tmp_path / "data", "--model", "scratch", "--tokenizer", tokenizer_dir(tmp_path / "tok"),
            "--scratch-config", SCRATCH, "--dropout", "0", "--epochs", "2", "--out-dir", tmp_path / "run",
            "--protocol", "course", "--device", "cpu"]
    assert run.main([task, *(str(a) for a in argv)]) == 0
    log = caplog.text
    names = (["last-linear-layer-sst-dev-out.csv", "last-linear-layer-sst-test-out.csv"] if task == "sentiment"
             else ["para-dev-output.csv", "para-test-output.csv"])
    assert sorted(p.name for p in (tmp_path / "run" / "predictions").iterdir()) == names
    assert ("--finetune last-linear-layer" in log) == (task == "sentiment")
    assert json.loads((tmp_path / "run" / "result.json").read_text())["epochs"] == 2


# ---- the course's model: erf GELU, padding_idx 0 (GPT2Config.gelu, .padding_idx) -----------------------------------
@pytest.mark.parametrize("fused", [True, False])
def test_erf_gelu_is_torchs_exact_gelu_and_differs_from_tanh(fused):
    from minigpt.block import gelu

    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    torch.testing.assert_close(gelu(x, fused, "erf"), F.gelu(x, approximate="none"), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gelu(x, fused, "tanh"), F.gelu(x, approximate="tanh"), rtol=1e-12, atol=1e-12)
    assert (gelu(x, fused, "erf") - gelu(x, fused, "tanh")).abs().max() > 1e-4


def test_erf_gelu_model_equals_transformers_gelu_and_both_paths_agree(tmp_path):
    from transformers import GPT2LMHeadModel

    from minigpt import GPT2, save_pretrained
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    ours = GPT2(tiny_config(gelu="erf", padding_idx=0)).eval()
    with torch.no_grad():  # MLP pre-activations of order 1, where the two GELUs differ most (2e-4)
        for block in ours.h:
            block.mlp.c_fc.weight.mul_(40)
    ids = torch.randint(0, 300, (2, 9))
    save_pretrained(ours, tmp_path / "m")
    written = json.loads((tmp_path / "m" / "config.json").read_text())
    assert written["activation_function"] == "gelu" and written["minigpt_padding_idx"] == 0
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "m").eval()  # "gelu" is transformers' erf GELU
    with torch.no_grad():
        logits = ours(ids).logits
        torch.testing.assert_close(logits, hf(ids).logits, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ours.set_fused(False)(ids).logits, logits, rtol=1e-6, atol=1e-6)
        tanh = load_pretrained(tmp_path / "m", gelu="tanh")(ids).logits  # the same weights, GPT-2's GELU
    assert (tanh - logits).abs().max() > 2e-5  # 10x the tolerances above: the test tells the two apart
    back = load_pretrained(tmp_path / "m")
    assert (back.config.gelu, back.config.padding_idx, back.wte.padding_idx) == ("erf", 0, 0)


def test_public_gpt2_config_keeps_tanh_and_no_padding_idx_and_other_activations_are_refused(tmp_path):
    from minigpt import GPT2Config

    public = {"vocab_size": 300, "n_embd": 64, "n_layer": 2, "n_head": 2, "activation_function": "gelu_new",
              "pad_token_id": 50256}  # pad_token_id is transformers' generation setting, not an embedding's
    cfg = GPT2Config.from_hf_dict(public)
    assert (cfg.gelu, cfg.padding_idx) == ("tanh", None)
    assert "minigpt_padding_idx" not in cfg.to_hf_dict() and cfg.to_hf_dict()["activation_function"] == "gelu_new"
    with pytest.raises(ValueError, match="activation_function 'relu' is neither"):
        GPT2Config.from_hf_dict(public | {"activation_function": "relu"})
    with pytest.raises(ValueError, match="padding_idx must be None or a token id"):
        GPT2Config(vocab_size=10, n_embd=8, n_head=2, n_layer=1, padding_idx=10)


def test_padding_row_gets_no_gradient_from_the_lookup():
    from minigpt import GPT2
    from tests.conftest import tiny_config

    ids = torch.tensor([[0, 5, 0, 7, 9], [3, 0, 4, 0, 0]])
    grads = {}
    for padding_idx in (None, 0):
        torch.manual_seed(0)
        model = GPT2(tiny_config(padding_idx=padding_idx))
        model(ids, logits_to_keep=0).hidden_states.pow(2).sum().backward()  # no LM head: the lookup alone
        grads[padding_idx] = model.wte.weight.grad
    assert grads[None][0].abs().max() > 1e-6  # the plain model trains row 0
    assert torch.equal(grads[0][0], torch.zeros_like(grads[0][0]))  # the course's does not
    torch.testing.assert_close(grads[0][1:], grads[None][1:], rtol=1e-5, atol=1e-7)  # the other rows: the same


def test_course_protocol_loads_the_course_model_and_minigpt_keeps_the_checkpoints(tmp_path):
    from minigpt import GPT2, save_pretrained
    from tasks.modeling import ModelSpec, load_model_and_tokenizer
    from tests.conftest import tiny_config

    tok = write_vocab_files(tmp_path / "m", [("t", "h")])
    save_pretrained(GPT2(tiny_config()), tmp_path / "m", tok)
    plain, _, _ = load_model_and_tokenizer(ModelSpec(model=str(tmp_path / "m")))
    course, _, _ = load_model_and_tokenizer(ModelSpec(model=str(tmp_path / "m"), course_model=True))
    scratch, _, _ = load_model_and_tokenizer(ModelSpec(model="scratch", tokenizer=str(tok), course_model=True,
                                                       scratch_config="n_layer=1,n_head=2,n_embd=32"))
    assert (plain.config.gelu, plain.wte.padding_idx) == ("tanh", None)
    assert (course.config.gelu, course.wte.padding_idx) == ("erf", 0)
    assert (scratch.config.gelu, scratch.wte.padding_idx) == ("erf", 0)
    assert all(m.gelu == "erf" for m in course.modules() if hasattr(m, "c_fc"))
    spec = paraphrase.model_spec_from_args(parse(paraphrase, "--protocol", "course"))
    assert spec.course_model and not paraphrase.model_spec_from_args(parse(paraphrase)).course_model


# ---- the course's generate: sorted-order draws from the global generator -------------------------------------------
def course_top_p_token(logits, temperature, top_p, generator):
    """sonnet_generation.py's sampling step, stated from its description: softmax(logits / T), sorted descending;
    keep a token while the mass before it is <= p (the most likely always), renormalise, draw a position of the
    sorted row with multinomial, map it back through the sort."""
    probs = torch.softmax(logits / temperature, dim=-1)  # (1, V)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    keep = mass_before <= top_p
    keep[..., 0] = True
    filtered = sorted_probs * keep
    filtered = filtered / filtered.sum(dim=-1, keepdim=True)
    return order.gather(-1, torch.multinomial(filtered, 1, generator=generator))  # (1, 1)


def test_sorted_draw_is_the_sorted_order_multinomial_for_the_same_generator_state():
    from decoding.sampling import sample
    from minigpt import GPT2
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    model = GPT2(tiny_config()).eval()
    ids = torch.tensor([[5, 17, 42, 7]])
    with torch.no_grad():
        logits = model(ids).logits[:, -1]  # (1, V)
    differs = 0
    for seed in range(20):
        mine = sample(model, ids, 1, temperature=1.2, top_p=0.9, draw_order="sorted",
                      generator=torch.Generator().manual_seed(seed))[0, -1].item()
        course = course_top_p_token(logits, 1.2, 0.9, torch.Generator().manual_seed(seed)).item()
        vocab = sample(model, ids, 1, temperature=1.2, top_p=0.9, generator=torch.Generator().manual_seed(seed))
        assert mine == course, seed
        differs += vocab[0, -1].item() != course
    assert differs >= 10  # the vocabulary-order draw gives other tokens for the same seeds


def test_course_generate_continues_the_bare_prompt_from_the_global_generator_one_prompt_after_another(tmp_path):
    from decoding.config import DecodeConfig
    from minigpt import GPT2
    from tasks.sonnet import generate_sonnets, trim_lines
    from tests.conftest import tiny_config

    tokenizer = Tokenizer.from_dir(write_vocab_files(tmp_path / "tok", [("t", "h"), ("th", "e")]))
    torch.manual_seed(0)
    model = GPT2(tiny_config(vocab_size=tokenizer.vocab_size, gelu="erf", padding_idx=0)).eval()
    prompts = ["thee thou\nlove fair\nsweet time", "night day\nart thou"]
    cfg = DecodeConfig(decoder="top-p", max_new_tokens=12, batch_size=0)
    torch.manual_seed(7)  # the run's seed_everything
    ours = generate_sonnets(model, tokenizer, prompts, cfg, 0, "test", course=True)
    torch.manual_seed(7)
    expected = []
    for prompt in prompts:  # the course's generate, prompt after prompt, on the global generator
        ids = torch.tensor([tokenizer.encode(prompt)])  # no newline appended
        for _ in range(cfg.max_new_tokens):
            with torch.no_grad():
                token = course_top_p_token(model(ids).logits[:, -1], cfg.temperature, cfg.top_p, None)
            if token.item() == tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, token], dim=1)
        expected.append(trim_lines(tokenizer.decode(ids[0].tolist()), 0))
    assert ours == expected
    torch.manual_seed(7)
    assert generate_sonnets(model, tokenizer, prompts, cfg, 0, "test") != expected  # minigpt's decoding differs


def test_sonnet_course_protocol_numbers_from_zero_and_trims_no_line(tmp_path):
    from tasks.data import sonnet_numbers

    tok = write_vocab_files(tmp_path / "tok", [("t", "h"), ("th", "e")])
    data = write_fixture(tmp_path / "data", n_train=4, n_dev=3)
    argv = ["--protocol", "course", "--epochs", "0", "--decoder", "top-p", "--max-new-tokens", "60"]
    assert run.main(sonnet_args(data, tmp_path / "course", tok, *argv)) == 0
    assert run.main(sonnet_args(data, tmp_path / "plain", tok, *argv[2:])) == 0
    assert sonnet_numbers(tmp_path / "course" / "generated_sonnets_dev.txt") == [0, 1, 2]
    assert sonnet_numbers(tmp_path / "plain" / "generated_sonnets_dev.txt") == [5, 6, 7]
    assert parse(sonnet, "--protocol", "course").max_lines == 0 and parse(sonnet).max_lines == 14  # no line trim
    assert parse(sonnet, "--protocol", "course", "--max-lines", "14").max_lines == 14  # a given flag wins
