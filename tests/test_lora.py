"""LoRA and DoRA (minigpt/lora.py) against peft 0.21.2 on the transformers GPT-2 with the same weights."""
import pytest
import torch

from minigpt import GPT2
from minigpt.lora import (
    DoRALinear,
    LoRALinear,
    adapter_modules,
    adapter_state_dict,
    inject_adapters,
    load_adapter_state_dict,
    merge_adapters,
    remove_adapters,
    unmerge_adapters,
)
from tests.conftest import tiny_pair

peft = pytest.importorskip("peft")

PEFT_PREFIX = "base_model.model.transformer."
# peft matches target names by their last dotted parts, so "c_proj" also catches mlp.c_proj; ours does the same.
PEFT_TARGETS = ["c_attn", "c_proj"]
OUR_TARGETS = ("c_attn", "c_proj")


def peft_layers(peft_model) -> dict:
    """our module name (h.0.attn.c_attn) -> peft's lora layer wrapping the same Conv1D."""
    return {
        name[len(PEFT_PREFIX) :]: m
        for name, m in peft_model.named_modules()
        if isinstance(m, peft.tuners.lora.LoraLayer)
    }


def adapted_pair(method="lora", r=4, alpha=8, dropout=0.0, peft_targets=PEFT_TARGETS, our_targets=OUR_TARGETS):
    """(ours, peft model) with equal base weights and equal, non-trivial adapter weights (B != 0, m != ||W0||)."""
    ours, hf = tiny_pair(seed=1)
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=peft_targets,
        use_dora=(method == "dora"),
        fan_in_fan_out=True,  # GPT-2's Conv1D stores [in, out]
    )
    ref = peft.get_peft_model(hf, config)
    inject_adapters(ours, method, r=r, alpha=alpha, dropout=dropout, targets=our_targets)
    ref_layers, our_layers = peft_layers(ref), adapter_modules(ours)
    assert sorted(ref_layers) == sorted(our_layers)
    torch.manual_seed(2)
    with torch.no_grad():
        for name, ref_layer in ref_layers.items():
            ours_layer = our_layers[name]
            ref_layer.lora_B["default"].weight.normal_(std=0.1)  # B = 0 would hide every bug in B's use
            # peft's lora_A / lora_B are nn.Linear over the Conv1D's (in, out): the same layout as ours
            ours_layer.lora_A.copy_(ref_layer.lora_A["default"].weight)
            ours_layer.lora_B.copy_(ref_layer.lora_B["default"].weight)
            if method == "dora":
                m = ref_layer.lora_magnitude_vector["default"].weight
                m.mul_(1 + 0.2 * torch.rand_like(m))
                ours_layer.magnitude.copy_(m)
    return ours, ref, our_layers, ref_layers


def inputs(seed=3, B=2, T=9):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 300, (B, T), generator=g)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_fresh_adapter_starts_at_the_base_model(method):
    ours, hf = tiny_pair(seed=1)
    ids = inputs()
    base_logits = ours(ids).logits
    ref = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules=PEFT_TARGETS,
                                                   use_dora=(method == "dora"), fan_in_fan_out=True))
    inject_adapters(ours.eval(), method, r=4, alpha=8, dropout=0.5, targets=OUR_TARGETS)
    torch.testing.assert_close(ours(ids).logits, base_logits, atol=1e-6, rtol=0)  # B = 0: no change
    assert not any(m.training for m in ours.modules())  # injected into an eval model: the new dropout is off too
    for name, layer in adapter_modules(ours).items():
        assert torch.all(layer.lora_B == 0) and layer.lora_A.abs().sum() > 0
        if method == "dora":  # m initialised to ||W0|| per output feature, as peft
            ref_m = peft_layers(ref)[name].lora_magnitude_vector["default"].weight
            torch.testing.assert_close(layer.magnitude, ref_m, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("method", ["lora", "dora"])
@pytest.mark.parametrize(
    "peft_targets, our_targets",
    [
        (PEFT_TARGETS, OUR_TARGETS),
        (r".*\.attn\.(c_attn|c_proj)", ("attn.c_attn", "attn.c_proj")),  # our default: attention only
        (["c_attn", "c_proj", "c_fc"], ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")),
    ],
)
def test_eval_outputs_equal_peft(method, peft_targets, our_targets):
    ours, ref, _, _ = adapted_pair(method, peft_targets=peft_targets, our_targets=our_targets)
    ids = inputs()
    ours.eval(), ref.eval()
    with torch.no_grad():
        expected = ref(ids).logits
        got = ours(ids).logits
        base = ref.get_base_model()
        with ref.disable_adapter():
            plain = base(ids).logits
    assert (expected - plain).abs().max() > 1e-2  # the adapters really change the output
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_training_mode_outputs_and_gradients_equal_peft(method):
    ours, ref, our_layers, ref_layers = adapted_pair(method, dropout=0.0)
    ours.train(), ref.train()
    ids = inputs()
    got, expected = ours(ids).logits, ref(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    target = torch.randn_like(got)
    (got * target).sum().backward()
    (expected * target).sum().backward()
    for name, layer in our_layers.items():
        ref_layer = ref_layers[name]
        torch.testing.assert_close(layer.lora_A.grad, ref_layer.lora_A["default"].weight.grad, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(layer.lora_B.grad, ref_layer.lora_B["default"].weight.grad, atol=1e-5, rtol=1e-4)
        if method == "dora":  # also proves the norm is detached the same way (section 4.3)
            ref_grad = ref_layer.lora_magnitude_vector["default"].weight.grad
            torch.testing.assert_close(layer.magnitude.grad, ref_grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_layer_with_dropout_in_training_equals_peft(method):
    """One layer, dropout 0.3, training mode: the same dropout mask (same seed) gives the same output.

    DoRA with dropout is the subtle case: peft keeps the clean input for the base output and applies the
    magnitude scaling to W0 dropout(x).
    """
    _, _, our_layers, ref_layers = adapted_pair(method, dropout=0.3)
    ours_layer, ref_layer = our_layers["h.0.attn.c_attn"].train(), ref_layers["h.0.attn.c_attn"].train()
    ref_layer.lora_dropout["default"] = ours_layer.dropout  # the same sampler on both sides: same seed, same mask
    x = torch.randn(2, 5, 64)
    torch.manual_seed(7)
    got = ours_layer(x)
    torch.manual_seed(7)
    expected = ref_layer(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.manual_seed(8)
    assert (ours_layer(x) - got).abs().max() > 1e-4  # dropout is really on: another mask, another output


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_merge_equals_peft_and_unmerge_restores_the_base(method):
    ours, ref, our_layers, ref_layers = adapted_pair(method)
    ours.eval(), ref.eval()
    ids = inputs()
    base_weights = {name: layer.weight.detach().clone() for name, layer in our_layers.items()}
    with torch.no_grad():
        unmerged_logits = ours(ids).logits
        merge_adapters(ours)
        ref.merge_adapter()
        for name, layer in our_layers.items():
            assert layer.merged
            ref_weight = ref_layers[name].get_base_layer().weight.T  # Conv1D [in, out] -> [out, in]
            torch.testing.assert_close(layer.weight, ref_weight, atol=1e-6, rtol=1e-5)
            assert (layer.weight - base_weights[name]).abs().max() > 1e-3
        torch.testing.assert_close(ours(ids).logits, unmerged_logits, atol=1e-5, rtol=0)  # added once, not twice
        merge_adapters(ours)  # merging again changes nothing
        torch.testing.assert_close(ours(ids).logits, unmerged_logits, atol=1e-5, rtol=0)
        unmerge_adapters(ours)
        for name, layer in our_layers.items():
            assert not layer.merged
            torch.testing.assert_close(layer.weight, base_weights[name], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ours(ids).logits, unmerged_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_only_adapter_parameters_get_gradients(method):
    ours, _ = tiny_pair(seed=1)
    inject_adapters(ours.train(), method, r=4, alpha=8, dropout=0.1)
    ids = inputs()
    ours(ids).logits.logsumexp(-1).mean().backward()
    names = {"lora": {"lora_A", "lora_B"}, "dora": {"lora_A", "lora_B", "magnitude"}}[method]
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in ours.named_parameters() if p.grad is not None}
    assert trainable == with_grad
    assert {n.rpartition(".")[2] for n in with_grad} == names
    # the default targets: 2 layers x (attn.c_attn, attn.c_proj)
    adapted = {f"h.{i}.attn.{c}" for i in (0, 1) for c in ("c_attn", "c_proj")}
    assert {n.rpartition(".")[0] for n in with_grad} == adapted
    layer = ours.h[0].attn.c_attn
    assert layer.lora_B.grad.abs().sum() > 0
    assert torch.all(layer.lora_A.grad == 0)  # dL/dA = s B^T (dL/dy) x^T = 0 while B = 0: LoRA's zero start


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_adapter_state_dict_round_trips(method):
    ours, ref, _, _ = adapted_pair(method, dropout=0.1)
    saved = adapter_state_dict(ours)
    per_layer = 3 if method == "dora" else 2
    assert len(saved) == per_layer * 6  # 2 layers x (attn.c_attn, attn.c_proj, mlp.c_proj)
    assert all(k.rpartition(".")[2] in ("lora_A", "lora_B", "magnitude") for k in saved)
    fresh, _ = tiny_pair(seed=1)  # the same base weights, new random adapters
    inject_adapters(fresh, method, r=4, alpha=8, dropout=0.1, targets=OUR_TARGETS)
    ids = inputs()
    ours.eval(), fresh.eval()
    assert (fresh(ids).logits - ours(ids).logits).abs().max() > 1e-3
    load_adapter_state_dict(fresh, saved)
    torch.testing.assert_close(fresh(ids).logits, ours(ids).logits, atol=0, rtol=0)


def test_load_adapter_state_dict_names_every_problem():
    ours, _ = tiny_pair(seed=1)
    inject_adapters(ours, "lora", r=4, alpha=8)
    saved = adapter_state_dict(ours)
    broken = dict(saved)
    del broken["h.0.attn.c_attn.lora_A"]
    broken["h.0.mlp.c_fc.lora_A"] = torch.zeros(4, 64)
    broken["h.1.attn.c_proj.lora_B"] = torch.zeros(64, 8)
    with pytest.raises(ValueError) as err:
        load_adapter_state_dict(ours, broken)
    message = str(err.value)
    assert "missing keys: h.0.attn.c_attn.lora_A" in message
    assert "unexpected keys: h.0.mlp.c_fc.lora_A" in message
    assert "h.1.attn.c_proj.lora_B: saved (64, 8), model (64, 4)" in message
    dora, _ = tiny_pair(seed=1)
    inject_adapters(dora, "dora", r=4, alpha=8)
    with pytest.raises(ValueError, match="missing keys: .*magnitude"):
        load_adapter_state_dict(dora, saved)  # a LoRA file into a DoRA model


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_remove_adapters_gives_a_plain_gpt2_that_saves_like_peft_merged(method, tmp_path):
    from transformers import GPT2LMHeadModel

    from minigpt.checkpoint import save_pretrained

    ours, ref, _, _ = adapted_pair(method)
    plain_keys = set(GPT2(ours.config).state_dict())
    ids = inputs()
    remove_adapters(ours.eval())
    assert not adapter_modules(ours)
    assert set(ours.state_dict()) == plain_keys
    assert all(type(m) is torch.nn.Linear for n, m in ours.named_modules() if n.endswith(("c_attn", "c_proj")))
    save_pretrained(ours, tmp_path)
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    merged_ref = ref.merge_and_unload().eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, merged_ref(ids).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(ids).logits, merged_ref(ids).logits, atol=1e-5, rtol=0)


def test_remove_adapters_without_merge_restores_the_base():
    ours, _ = tiny_pair(seed=1)
    ids = inputs()
    base_logits = ours(ids).logits
    inject_adapters(ours, "dora", r=4, alpha=8)
    with torch.no_grad():
        ours.h[0].attn.c_attn.lora_B.normal_()
    merge_adapters(ours)
    remove_adapters(ours, merge=False)
    torch.testing.assert_close(ours(ids).logits, base_logits, atol=1e-5, rtol=0)


def test_bad_arguments_get_clear_errors():
    ours, _ = tiny_pair(seed=1)
    with pytest.raises(ValueError, match="unknown adapter method 'ia3'"):
        inject_adapters(ours, "ia3")
    with pytest.raises(ValueError, match="'attn.q_proj' matches no nn.Linear.*attn.c_attn"):
        inject_adapters(ours, "lora", targets=("attn.c_attn", "attn.q_proj"))
    with pytest.raises(ValueError, match="rank r must be a positive integer, got 0"):
        inject_adapters(ours, "lora", r=0)
    assert not adapter_modules(ours)  # a failed injection leaves the model untouched
    assert all(p.requires_grad for p in ours.parameters())
    with pytest.raises(ValueError, match="rank r must be a positive integer, got 0"):
        LoRALinear(torch.nn.Linear(4, 4), r=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        DoRALinear(torch.nn.Linear(4, 4), r=2, dropout=1.5)
    with pytest.raises(TypeError, match="wraps an nn.Linear, got Embedding"):
        LoRALinear(ours.wte)
    inject_adapters(ours, "lora")
    with pytest.raises(ValueError, match="already has adapters"):
        inject_adapters(ours, "dora")
    merge_adapters(ours)
    with pytest.raises(ValueError, match="unmerge_adapters"):
        load_adapter_state_dict(ours, adapter_state_dict(ours))
