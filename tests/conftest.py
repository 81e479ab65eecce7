"""Shared test helpers: tiny random models (ours and the transformers reference with the same weights)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from minigpt import GPT2Config
from minigpt.tokenizer import write_vocab_files

SHARED = os.environ.get("MINIGPT_SHARED")


def pytest_configure(config):
    config.addinivalue_line("markers", "compile: runs torch.compile (inductor builds C++ kernels: tens of seconds "
                                       "on a cold cache); -m 'not compile' leaves them out")


def shared_path(*parts: str) -> Path:
    """A path under $MINIGPT_SHARED (the real data and tokenizer), or skip the test with the reason."""
    if not SHARED:
        pytest.skip("MINIGPT_SHARED is not set: the real data/tokenizer tests need it (.ci/run sets ../shared)")
    path = Path(SHARED, *parts)
    if not path.exists():
        pytest.skip(f"{path} does not exist")
    return path


def tiny_config(**kw) -> GPT2Config:
    base = dict(vocab_size=300, n_positions=128, n_embd=64, n_layer=2, n_head=2, dropout=0.0)
    base.update(kw)
    return GPT2Config(**base)


def tiny_pair(seed: int = 0, **kw):
    """(our GPT2, transformers GPT2LMHeadModel) with identical random weights, both in eval mode.

    The reference writes its checkpoint in the public format and our loader reads it, so every
    equivalence test that uses this pair also exercises the loader.
    """
    import tempfile

    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    from minigpt.checkpoint import load_pretrained

    cfg = tiny_config(**kw)
    torch.manual_seed(seed)
    hf_cfg = HFConfig(**{k: v for k, v in cfg.to_hf_dict().items() if k not in ("architectures", "model_type")})
    hf = GPT2LMHeadModel(hf_cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_pretrained(d).eval()
    return ours, hf


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread (and subprocesses use one too); the count is restored afterwards.
    Test modules that train take it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_tok(tmp_path):
    return write_vocab_files(tmp_path / "tok", [("t", "h"), ("th", "e"), ("Ġ", "th"), ("o", "u")])
