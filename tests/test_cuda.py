"""The GPU paths: model, training step, decoders, AdamW and the sonnet task on CUDA. Skipped where CUDA is absent.

Dry run on another device: MINIGPT_CUDA_TEST_DEVICE=cpu runs every test here on the CPU instead (the reference
side stays on the CPU), so the tests can be checked on a machine without a GPU:

    MINIGPT_CUDA_TEST_DEVICE=cpu python -m pytest -q tests/test_cuda.py

Comparisons between devices use tolerances (other kernels, other summation orders); token-level comparisons run
only where the tiny model's top-2 logit margin is asserted to be far above those differences.
"""
import json
import os

import pytest
import torch

import run
from decoding.beam import beam_search
from decoding.contrastive import contrastive_search
from decoding.ensemble import candidate_ensemble
from decoding.mbr import mbr_decode
from decoding.sampling import greedy, sample
from minigpt import GPT2
from minigpt.optim import AdamW, param_groups
from tests._margins import assert_stable, greedy_margin
from tests.conftest import tiny_config

DEVICE = os.environ.get("MINIGPT_CUDA_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                reason="no CUDA GPU visible (MINIGPT_CUDA_TEST_DEVICE=cpu runs these on the CPU)")
EOS = 299  # the tiny vocabulary's last id


def tiny_model(seed: int = 0, **kw) -> GPT2:
    """A tiny random GPT2 on DEVICE, eval mode. Its embeddings (tied with the LM head) are scaled up 4x so that
    the logits are spread out: greedy choices are not near-ties that another device's rounding could flip."""
    torch.manual_seed(seed)
    model = GPT2(tiny_config(**kw)).eval()
    with torch.no_grad():
        model.wte.weight.mul_(4)
    return model.to(DEVICE)


def prompts(lengths=(5, 9, 3), seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, EOS, (1, n), generator=g).to(DEVICE) for n in lengths]


@pytest.mark.parametrize("fused", [True, False])
def test_forward_on_device_equals_cpu_fp32(fused):
    model = tiny_model(fused=fused)
    ids = prompts((12,))[0].repeat(3, 1)
    with torch.no_grad():
        got = model(ids).logits.cpu()
        want = model.cpu()(ids.cpu()).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_bf16_autocast_training_step_lowers_the_loss():
    torch.manual_seed(0)
    model = GPT2(tiny_config()).to(DEVICE).train()
    opt = AdamW(param_groups(model, 0.01), lr=3e-3)
    ids = torch.randint(0, 300, (4, 32)).to(DEVICE)
    losses = []
    for _ in range(5):
        with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
            logits = model(ids).logits
            assert logits.dtype == torch.bfloat16  # really in bf16
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32
    assert losses[-1] < losses[0] - 0.1, losses


def text(ids: list[int]) -> str:
    """The decoders' `decode` (token ids -> text) for a model without a tokenizer."""
    return " ".join(str(t) for t in ids)


@pytest.mark.parametrize("decoder", ["greedy", "sample", "contrastive", "beam", "mbr", "ensemble"])
def test_every_decoder_runs_on_the_device(decoder):
    model = tiny_model()
    ids = prompts((6,))[0]
    g = torch.Generator(device=DEVICE).manual_seed(0)
    run_decoder = {
        "greedy": lambda: greedy(model, ids, 8, eos_token_id=EOS),
        "sample": lambda: sample(model, ids, 8, top_p=0.9, generator=g, eos_token_id=EOS),
        "contrastive": lambda: contrastive_search(model, ids, 8, top_k=4, alpha=0.6, eos_token_id=EOS),
        "beam": lambda: beam_search(model, ids, 8, num_beams=3, num_return_sequences=2, eos_token_id=EOS),
        "mbr": lambda: mbr_decode(model, ids, 8, text, num_beams=3, eos_token_id=EOS),
        "ensemble": lambda: candidate_ensemble(model, ids, 8, text, num_samples=2, alphas=(0.6,), num_beams=2,
                                               generator=g, eos_token_id=EOS),
    }[decoder]
    out = run_decoder()
    assert out.device.type == torch.device(DEVICE).type and out.dtype == torch.long
    assert torch.equal(out[:, :6], ids.expand(out.size(0), -1)) and 6 < out.size(1) <= 6 + 8
    assert int(out.min()) >= 0 and int(out.max()) < 300


def test_greedy_on_the_device_equals_greedy_on_cpu():
    model = tiny_model()
    for ids in prompts():
        got = greedy(model, ids, 10)
        assert greedy_margin(model, got, ids.size(1)) > 1e-2  # no near-tie: the devices' rounding cannot flip one
        want = greedy(model.cpu(), ids.cpu(), 10)
        model.to(DEVICE)
        assert torch.equal(got.cpu(), want)


# ----- batched decoding: a left-padded batch gives each row what that prompt alone gives --------------------------
# (the batched API: decoder(model, input_ids (B, T) left-padded, max_new_tokens, attention_mask=(B, T), ...))


def left_padded(rows: list[torch.Tensor], pad: int = EOS) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T_max) ids, left-padded with `pad`, and the (B, T_max) mask (1 = token, 0 = padding)."""
    T = max(r.size(1) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long, device=DEVICE)
    mask = torch.zeros((len(rows), T), dtype=torch.long, device=DEVICE)
    for i, r in enumerate(rows):
        ids[i, T - r.size(1):], mask[i, T - r.size(1):] = r[0], 1
    return ids, mask


def assert_row_is_alone(batched_row: torch.Tensor, alone: torch.Tensor, prompt_len: int, T_max: int) -> None:
    """batched_row (T_max + n,) == the left padding, then `alone` (1, prompt_len + n_i), then eos to the end."""
    got = batched_row.cpu()[T_max - prompt_len:]
    assert torch.equal(got[: alone.size(1)], alone[0].cpu()), (got, alone)
    assert bool((got[alone.size(1):] == EOS).all())  # a row that stopped early is padded with eos


@pytest.mark.parametrize("decoder", ["greedy", "contrastive", "beam"])
def test_batched_decoding_on_the_device_equals_each_prompt_alone(decoder):
    model = tiny_model()
    rows = prompts((5, 9, 3))
    decode = {
        "greedy": lambda ids, **kw: greedy(model, ids, 10, eos_token_id=EOS, **kw),
        "contrastive": lambda ids, **kw: contrastive_search(model, ids, 10, top_k=4, alpha=0.6, eos_token_id=EOS,
                                                            **kw),
        "beam": lambda ids, **kw: beam_search(model, ids, 10, num_beams=3, eos_token_id=EOS, **kw),
    }[decoder]
    alone = [assert_stable(lambda: decode(r), model) for r in rows]  # no near-tie another batch shape could flip
    if decoder == "greedy":
        assert min(greedy_margin(model, a, r.size(1)) for a, r in zip(alone, rows)) > 1e-2  # clear margins
    ids, mask = left_padded(rows)
    batched = decode(ids, attention_mask=mask)
    assert batched.size(0) == len(rows) and batched.device.type == torch.device(DEVICE).type
    for row, a, r in zip(batched, alone, rows):
        assert_row_is_alone(row, a, r.size(1), ids.size(1))


# ----- AdamW ----------------------------------------------------------------------------------------------------


def adamw_run(make_optimizer, steps: int = 20) -> torch.Tensor:
    """A tiny GPT2's parameters on DEVICE after `steps` optimizer steps on fixed random gradients (generated on
    the CPU, so both sides see the same ones; no backward, whose CUDA kernels need not be deterministic)."""
    torch.manual_seed(0)
    model = GPT2(tiny_config()).to(DEVICE)
    opt = make_optimizer(param_groups(model, 0.1))
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g).to(DEVICE)
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()]).cpu()


def test_adamw_on_the_device_equals_torch_fused_and_foreach():
    """Our equations (--explicit-math) against torch's fused kernel (the trainer's fast path) and foreach form."""
    got = adamw_run(lambda groups: AdamW(groups, lr=1e-3))
    for kind in ("fused", "foreach"):
        want = adamw_run(lambda groups: torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.1, **{kind: True}))
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5, msg=kind)


# ----- the sonnet task end to end ---------------------------------------------------------------------------------


def test_sonnet_end_to_end_on_fixtures_on_the_device(tmp_path):
    from minigpt.tokenizer import write_vocab_files
    from tasks.data import read_sonnets
    from tests._fixtures import sonnet_args, write_fixture

    data = write_fixture(tmp_path / "data")
    tok = write_vocab_files(tmp_path / "tok", [("t", "h"), ("th", "e"), ("Ġ", "th"), ("o", "u")])
    out = tmp_path / "out"
    argv = sonnet_args(data, out, tok, "--epochs", "2", "--decoder", "contrastive")
    assert run.main([*argv, "--device", DEVICE]) == 0  # the last --device wins
    assert len(read_sonnets(out / "generated_sonnets_dev.txt")) == 4
    assert len(read_sonnets(out / "generated_sonnets.txt")) == 3
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and all("dev_chrf" in x for x in lines)
    result = json.loads((out / "result.json").read_text())
    assert 0 <= result["dev_chrf"] <= 100
