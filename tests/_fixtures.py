"""Helpers several test files share: the tiny models and data fixtures (the sonnet files, the affine regression
the trainer tests train), and the reference helpers (transformers' generate, random prompts, forward counting,
noisy strings). Not a test module (its name starts with an underscore); pytest fixtures live in conftest.py."""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.trainer import TrainConfig

# ---- the sonnet task: files in the course layout, the CLI arguments of a tiny run (tests/test_sonnet.py) ----------
WORDS = "thee thou love fair summer day sweet time beauty eyes heart doth art night world death youth".split()
TINY = "n_layer=2,n_head=2,n_embd=32,n_positions=256"


def sonnet_file(path: Path, numbered: list[tuple[int, str]]) -> Path:
    """The course layout: a header, then per sonnet its number alone on a line, a blank line and the text."""
    body = "".join(f"\n\n{n}\n\n{text}" for n, text in numbered)
    path.write_text("THE SONNETS\nby a test fixture" + body + "\n", encoding="utf-8")
    return path


def fake_sonnet(rng: random.Random) -> str:
    lines = [" ".join(rng.choice(WORDS) for _ in range(6)).capitalize() + "," for _ in range(14)]
    lines[-2:] = ["  " + line for line in lines[-2:]]
    return "\n".join(lines)


def write_fixture(data_dir: Path, n_train=24, n_dev=4, n_test=3) -> Path:
    rng = random.Random(0)
    data_dir.mkdir(parents=True, exist_ok=True)
    train = [(i + 1, fake_sonnet(rng)) for i in range(n_train)]
    dev = [(n_train + i + 1, fake_sonnet(rng)) for i in range(n_dev)]
    test = [(n_train + n_dev + i + 1, fake_sonnet(rng)) for i in range(n_test)]
    first3 = lambda items: [(n, "\n".join(t.split("\n")[:3])) for n, t in items]  # noqa: E731
    sonnet_file(data_dir / "sonnets.txt", train)
    sonnet_file(data_dir / "TRUE_sonnets_held_out_dev.txt", dev)
    sonnet_file(data_dir / "sonnets_held_out_dev.txt", first3(dev))
    sonnet_file(data_dir / "sonnets_held_out.txt", first3(test))
    return data_dir


def sonnet_args(data_dir, out_dir, tokenizer, *extra):
    return ["sonnet", "--data-dir", str(data_dir), "--out-dir", str(out_dir), "--model", "scratch",
            "--scratch-config", TINY, "--tokenizer", str(tokenizer), "--decoder", "greedy",
            "--max-new-tokens", "24", "--batch-size", "4", "--lr", "3e-3", "--device", "cpu", *extra]


# ---- the trainer: a tiny regression, its config, a scripted evaluation, run records (tests/test_trainer.py) -------
TIMING = {"seconds", "eval_seconds", "tokens_per_s"}  # the only fields allowed to differ between equal runs


def metrics_of(out_dir: Path) -> list[dict]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


class Affine(nn.Module):
    """y = w . x + b: the smallest model with something to learn."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(4, 1)

    def forward(self, x):
        return self.proj(x).squeeze(-1)


def affine_data(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=g)
    return [{"x": x[i], "y": y[i]} for i in range(n)]


def collate_xy(examples):
    return {"x": torch.stack([e["x"] for e in examples]), "y": torch.stack([e["y"] for e in examples])}


def mse(model, batch):
    return F.mse_loss(model(batch["x"]), batch["y"])


def cfg_for(tmp_path, **kw) -> TrainConfig:
    base = dict(out_dir=str(tmp_path), epochs=3, batch_size=2, lr=1e-2, device="cpu", seed=3)
    return TrainConfig(**(base | kw))


class Scripted:
    """A fake dev evaluation returning scripted scores; records the weights and best files it sees."""

    def __init__(self, scores, out_dir):
        self.scores, self.out_dir = scores, Path(out_dir)
        self.weights, self.files_seen = [], []

    def __call__(self, model):
        assert not model.training and not torch.is_grad_enabled()
        self.files_seen.append(sorted(f.name for f in self.out_dir.glob("best-epoch*.pt")))
        self.weights.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"dev_acc": self.scores[len(self.weights) - 1], "dev_other": 1.0}


# ---- decoding references: transformers' generate, random prompts, forward counts (test_sampling, test_contrastive)
def hf_generate(hf, ids, n, eos=None, **kw):
    pad = 0 if eos is None else eos
    return hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, eos_token_id=eos,
                       pad_token_id=pad, **kw)


def random_prompts(count, seed=1, vocab=300):
    g = torch.Generator().manual_seed(seed)
    for _ in range(count):
        T = int(torch.randint(1, 12, (1,), generator=g))
        n = int(torch.randint(1, 30, (1,), generator=g))
        yield torch.randint(0, vocab, (1, T), generator=g), n


def count_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


# ---- chrF significance: noisy strings (tests/test_significance.py) -------------------------------------------------
ALPHABET = "abcdefgh ,."


def noisy(text: str, rate: float, rng: random.Random) -> str:
    """text with a fraction `rate` of its characters replaced at random."""
    return "".join(rng.choice(ALPHABET) if rng.random() < rate else c for c in text)
