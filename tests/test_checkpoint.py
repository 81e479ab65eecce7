"""checkpoint.py: the handwritten safetensors reader/writer and the Hugging Face name mapping, against
the `safetensors` package and transformers' GPT2LMHeadModel."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import GPT2Config as HFConfig
from transformers import GPT2LMHeadModel

from minigpt import GPT2, GPT2Config
from minigpt.checkpoint import hf_state_dict_to_minigpt, load_pretrained, minigpt_state_dict_to_hf, save_pretrained
from minigpt.safetensors import load_safetensors, save_safetensors
from minigpt.tokenizer import write_vocab_files

from .conftest import tiny_config

CONFIGS = [  # (n_layer, n_head, n_embd, vocab_size)
    (2, 1, 32, 300),
    (3, 2, 48, 517),
    (4, 4, 64, 1000),
]


def random_hf(n_layer=2, n_head=2, n_embd=64, vocab_size=300, seed=0) -> GPT2LMHeadModel:
    """A reference model whose every parameter (LayerNorm and biases too) is random, so no mix-up can hide."""
    cfg = tiny_config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size)
    torch.manual_seed(seed)
    hf_cfg = HFConfig(**{k: v for k, v in cfg.to_hf_dict().items() if k not in ("architectures", "model_type")})
    hf = GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return hf


def reference_outputs(hf, ids):
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
    return out.logits, out.hidden_states[-1]  # the last entry is after ln_f


def write_header(path, header: dict, data: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


# ----- equivalence with transformers ------------------------------------------------------------------------------
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
@pytest.mark.parametrize("n_layer,n_head,n_embd,vocab", CONFIGS)
def test_transformers_checkpoint_loads_with_same_outputs(tmp_path, n_layer, n_head, n_embd, vocab, safe):
    hf = random_hf(n_layer, n_head, n_embd, vocab, seed=n_layer)
    hf.save_pretrained(tmp_path, safe_serialization=safe)
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).is_file()
    ours = load_pretrained(tmp_path)
    ids = torch.randint(0, vocab, (2, 17), generator=torch.Generator().manual_seed(1))
    logits, hidden = reference_outputs(hf, ids)
    with torch.no_grad():
        out = ours(ids)
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.hidden_states, hidden, atol=1e-5, rtol=0)


def test_public_layout_without_prefix_and_with_mask_buffers(tmp_path):
    """The hub's gpt2 files hold GPT2Model names (no `transformer.`) and the old attn.bias/masked_bias buffers."""
    hf = random_hf()
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in hf.state_dict().items()
             if k != "lm_head.weight"}
    n_pos = hf.config.n_positions
    for i in range(hf.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.ones(n_pos, n_pos).tril().view(1, 1, n_pos, n_pos)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    hf.config.to_json_file(tmp_path / "config.json")
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(load_pretrained(tmp_path)(ids).logits, hf(ids).logits, atol=1e-5, rtol=0)


def test_state_dict_mapping_without_a_file():
    """hf_state_dict_to_minigpt on a live GPT2LMHeadModel.state_dict() (tied lm_head included) fits strictly."""
    hf = random_hf(n_layer=2, n_head=4, n_embd=32, vocab_size=350)
    ours = GPT2(tiny_config(n_layer=2, n_head=4, n_embd=32, vocab_size=350)).eval()
    ours.load_state_dict(hf_state_dict_to_minigpt(hf.state_dict()))  # strict: same keys, same shapes
    ids = torch.randint(0, 350, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=0)
    state = minigpt_state_dict_to_hf(ours)
    assert state.keys() == {k for k in hf.state_dict() if k != "lm_head.weight"}
    assert all(torch.equal(state[k], v) for k, v in hf.state_dict().items() if k in state)


def test_save_pretrained_loads_in_transformers_and_back(tmp_path):
    hf = random_hf(n_layer=3, n_head=4, n_embd=32, vocab_size=400)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_pretrained(tmp_path / "hf")
    write_vocab_files(tmp_path / "tok", merges=[("a", "b")])
    save_pretrained(ours, tmp_path / "ours", tokenizer_dir=tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == [
        "config.json", "merges.txt", "model.safetensors", "vocab.json"]  # no temporary files left
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "tok" / name).read_bytes()

    back, info = GPT2LMHeadModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or mismatched
    assert back.lm_head.weight.data_ptr() == back.transformer.wte.weight.data_ptr()  # tied again
    ids = torch.randint(0, 400, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(ids).logits, hf(ids).logits, atol=1e-5, rtol=0)
    again = load_pretrained(tmp_path / "ours")
    for (name, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_bf16_checkpoint_and_dtype_argument(tmp_path):
    hf = random_hf().to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path, dtype="bfloat16")
    assert ours.wte.weight.dtype == torch.bfloat16
    assert torch.equal(ours.h[1].attn.c_attn.weight, hf.transformer.h[1].attn.c_attn.weight.t())
    assert load_pretrained(tmp_path).wte.weight.dtype == torch.float32  # default: float32
    save_pretrained(ours, tmp_path / "again")
    assert load_file(tmp_path / "again" / "model.safetensors")["transformer.wte.weight"].dtype == torch.bfloat16


def test_config_overrides_and_eval_mode(tmp_path):
    random_hf().save_pretrained(tmp_path)
    model = load_pretrained(tmp_path, dropout=0.25)
    assert model.config.dropout == 0.25 and not model.training
    assert all(p.requires_grad and p.device.type == "cpu" for p in model.parameters())
    with pytest.raises(TypeError, match="unknown GPT2Config fields.*n_embed"):
        load_pretrained(tmp_path, n_embed=32)


def test_parameter_count_of_gpt2():
    with torch.device("meta"):
        model = GPT2(GPT2Config.from_name("gpt2"))
    assert model.num_parameters() == 124_439_808


# ----- our safetensors reader/writer against the safetensors package ----------------------------------------------
def sample_tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 5, generator=g),
        "f16": torch.randn(7, generator=g).half(),  # 14 bytes: later tensors must stay aligned
        "bf16": torch.randn(2, 3, 4, generator=g).bfloat16(),
        "f64": torch.randn(2, generator=g).double(),
        "i64": torch.arange(-3, 3),
        "i32": torch.arange(5, dtype=torch.int32),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


def test_reader_equals_safetensors_package(tmp_path):
    tensors = sample_tensors()
    save_file(tensors, tmp_path / "ref.safetensors", metadata={"format": "pt"})
    ours = load_safetensors(tmp_path / "ref.safetensors")
    reference = load_file(tmp_path / "ref.safetensors")
    assert ours.keys() == reference.keys()
    for name, t in reference.items():
        assert ours[name].dtype == t.dtype and ours[name].shape == t.shape and torch.equal(ours[name], t), name


def test_safetensors_package_reads_our_writer(tmp_path):
    tensors = sample_tensors()
    tensors["transposed"] = torch.randn(4, 6).t()  # not contiguous: written in its logical row-major order
    save_safetensors(tensors, tmp_path / "ours.safetensors", metadata={"format": "pt", "note": "hi"})
    reference = load_file(tmp_path / "ours.safetensors")
    with safe_open(tmp_path / "ours.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt", "note": "hi"}
    for name, t in tensors.items():
        assert reference[name].dtype == t.dtype and torch.equal(reference[name], t), name
    raw = (tmp_path / "ours.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    for name, entry in json.loads(raw[8 : 8 + n]).items():  # every tensor starts aligned to its element size
        if name != "__metadata__":
            assert (8 + n + entry["data_offsets"][0]) % tensors[name].element_size() == 0, name


def test_writes_are_atomic(tmp_path):
    """A write that fails half-way leaves the previous file as it was and no temporary file behind."""
    path = tmp_path / "x.safetensors"
    save_safetensors({"a": torch.ones(4)}, path)
    before = path.read_bytes()
    with pytest.raises(NotImplementedError):  # the meta tensor has a shape but no data to write
        save_safetensors({"a": torch.zeros(4), "b": torch.empty(3, device="meta")}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


def test_save_refuses_a_model_with_extra_parameters(tmp_path):
    model = GPT2(tiny_config())
    model.h[0].attn.lora_A = torch.nn.Parameter(torch.zeros(2, 64))
    with pytest.raises(ValueError, match=r"save_pretrained: the model's parameters differ from GPT-2's "
                                         r"\(h\.0\.attn\.lora_A\); merge or remove adapters first"):
        save_pretrained(model, tmp_path)


# ----- bad input --------------------------------------------------------------------------------------------------
def test_truncated_before_header_length(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(ValueError, match=r"x\.safetensors: truncated safetensors file \(3 bytes"):
        load_safetensors(tmp_path / "x.safetensors")


def test_truncated_data(tmp_path):
    save_file({"a": torch.randn(10)}, tmp_path / "x.safetensors")
    data = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "x.safetensors").write_bytes(data[:-6])
    with pytest.raises(ValueError, match=r"x\.safetensors: tensor 'a' at data bytes \[0, 40\) lies outside the data "
                                         r"\(34 bytes\): the file is truncated"):
        load_safetensors(tmp_path / "x.safetensors")


def test_header_length_larger_than_file(tmp_path):
    (tmp_path / "x.safetensors").write_bytes((1000).to_bytes(8, "little") + b'{"a": 1}')
    with pytest.raises(ValueError, match=r"x\.safetensors: header length 1000 is larger than the file \(16 bytes\)"):
        load_safetensors(tmp_path / "x.safetensors")


def test_header_not_json(tmp_path):
    raw = b'{"a": {"dtype": "F32",'
    (tmp_path / "x.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(ValueError, match=r"x\.safetensors: safetensors header is not JSON"):
        load_safetensors(tmp_path / "x.safetensors")


def test_unknown_dtype(tmp_path):
    write_header(tmp_path / "x.safetensors", {"a": {"dtype": "F42", "shape": [2], "data_offsets": [0, 8]}}, bytes(8))
    with pytest.raises(ValueError, match=r"x\.safetensors: tensor 'a' has unknown dtype 'F42'"):
        load_safetensors(tmp_path / "x.safetensors")


def test_offsets_outside_data(tmp_path):
    write_header(tmp_path / "x.safetensors", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, bytes(8))
    with pytest.raises(ValueError, match=r"tensor 'a' at data bytes \[8, 16\) lies outside the data \(8 bytes\)"):
        load_safetensors(tmp_path / "x.safetensors")


def test_overlapping_offsets(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    write_header(tmp_path / "x.safetensors", header, bytes(12))
    overlap = r"x\.safetensors: tensors 'a' \(data bytes \[0, 8\)\) and 'b' \(\[4, 12\)\) overlap"
    with pytest.raises(ValueError, match=overlap):
        load_safetensors(tmp_path / "x.safetensors")


def test_byte_size_not_matching_shape(tmp_path):
    header = {"a": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 8]}}
    write_header(tmp_path / "x.safetensors", header, bytes(8))
    with pytest.raises(ValueError, match=r"tensor 'a' has 8 bytes, but shape \[2, 3\] of F16 needs 12"):
        load_safetensors(tmp_path / "x.safetensors")


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    random_hf().config.to_json_file(tmp_path / "config.json")
    torch.save({"transformer.wte.weight": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: refused to load: .*mkdir.*could run code"):
        load_pretrained(tmp_path)
    assert not marker.exists()


def test_missing_unexpected_and_mismatched_keys_in_one_message(tmp_path):
    hf = random_hf()
    state = {k: v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    del state["transformer.h.1.ln_2.bias"]
    state["transformer.h.0.attn.rotary.weight"] = torch.zeros(3)
    state["transformer.h.0.attn.c_attn.weight"] = state["transformer.h.0.attn.c_attn.weight"].t().contiguous()
    save_file(state, tmp_path / "model.safetensors")
    hf.config.to_json_file(tmp_path / "config.json")
    with pytest.raises(ValueError) as err:
        load_pretrained(tmp_path)
    message = str(err.value)
    assert f"checkpoint {tmp_path / 'model.safetensors'} does not fit GPT2Config(vocab_size=300" in message
    assert "missing: h.1.ln_2.bias;" in message
    assert "unexpected: transformer.h.0.attn.rotary.weight;" in message
    assert "shape mismatch: transformer.h.0.attn.c_attn.weight checkpoint (192, 64) vs model (64, 192)" in message


def test_checkpoint_of_another_size(tmp_path):
    random_hf(n_layer=2, n_embd=64).save_pretrained(tmp_path)
    with pytest.raises(ValueError) as err:
        load_pretrained(tmp_path, n_layer=3, n_embd=32)
    message = str(err.value)
    assert "n_embd=32, n_layer=3" in message
    assert "missing: h.2.ln_1.weight, h.2.ln_1.bias," in message
    assert "transformer.wte.weight checkpoint (300, 64) vs model (300, 32)" in message


def test_untied_lm_head_is_an_error(tmp_path):
    hf = random_hf()
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    state["lm_head.weight"] += 1.0
    torch.save(state, tmp_path / "pytorch_model.bin")
    hf.config.to_json_file(tmp_path / "config.json")
    with pytest.raises(ValueError, match="lm_head.weight differs from wte.weight"):
        load_pretrained(tmp_path)


def test_directory_without_weights_and_leftover_part(tmp_path):
    random_hf().config.to_json_file(tmp_path / "config.json")
    (tmp_path / "model.safetensors.part").write_bytes(b"unfinished")
    with pytest.raises(FileNotFoundError, match=r"no model.safetensors or pytorch_model.bin .*\.part file is an "
                                                r"unfinished download, never loaded"):
        load_pretrained(tmp_path)


def test_not_a_directory_nor_preset(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model '.*nowhere' is neither a directory nor a preset name"):
        load_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no config.json"):
        load_pretrained(tmp_path / "empty")
