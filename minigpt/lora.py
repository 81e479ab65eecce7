"""Low-rank adapters: LoRA (Hu et al. 2021) and DoRA (Liu et al. 2024), for the projections of a GPT2.

LoRA ("LoRA: Low-Rank Adaptation of Large Language Models", eq. 3) freezes a pretrained weight W0 (out, in) and
learns a low-rank update:

    y = W0 x + b + s * B A x,      A: (r, in), B: (out, r), s = alpha / r

A starts random and B at zero, so training starts from the pretrained model exactly.

DoRA ("DoRA: Weight-Decomposed Low-Rank Adaptation", eq. 5) splits the weight into a magnitude m (one number per
output feature) and a direction, and lets LoRA move the direction only:

    W' = m * (W0 + s B A) / ||W0 + s B A||        norm of each row (output feature), m initialised to ||W0||

Section 4.3 of the paper treats the norm as a constant (detached from the gradient) to save memory.

A wrapped layer keeps the base parameters under their old names (`weight`, `bias`), so `h.0.attn.c_attn.weight`
stays `h.0.attn.c_attn.weight`; the adapters add `lora_A`, `lora_B` (and `magnitude` for DoRA) next to them.
`remove_adapters` puts plain nn.Linear layers back, and the state dict is the plain GPT2 one again.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dropout import Dropout
from .state_dict import state_dict_problems

ADAPTER_NAMES = ("lora_A", "lora_B", "magnitude")  # the only parameters an adapter state dict holds
DEFAULT_TARGETS = ("attn.c_attn", "attn.c_proj")  # add "mlp.c_fc", "mlp.c_proj" to adapt the MLP too


class LoRALinear(nn.Module):
    """y = W0 x + b + (alpha / r) * B A dropout(x), with W0 and b frozen."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0, fused: bool = True):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"{type(self).__name__} wraps an nn.Linear, got {type(base).__name__}")
        if not isinstance(r, int) or r < 1:
            raise ValueError(f"LoRA rank r must be a positive integer, got {r!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.weight = base.weight  # (out, in): the same Parameter object, frozen
        self.bias = base.bias  # (out,) or None
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **factory))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **factory))  # (out, r): zero, so BA = 0
        # A as nn.Linear's default init (kaiming-uniform, a = sqrt(5)), as the LoRA reference code and peft do
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = Dropout(dropout, fused) if dropout > 0 else nn.Identity()  # fused: as the model's
        self.merged = False  # True: W0 + update lives in self.weight and forward must not add it again

    def delta_weight(self) -> torch.Tensor:
        """s * B A, the update to W0, (out, in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        result = F.linear(x, self.weight, self.bias)
        if self.merged:
            return result
        lora = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)  # B A x, never forming B A
        return result + lora * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W0 + s B A, so inference costs one matmul. Idempotent."""
        if not self.merged:
            self.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - s B A, back to W0 (up to float rounding). Idempotent."""
        if self.merged:
            self.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha}, merged={self.merged}"


class DoRALinear(LoRALinear):
    """W' = m * (W0 + s B A) / ||W0 + s B A||_row (norm detached), m: (out,) initialised to ||W0||_row."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0, fused: bool = True):
        super().__init__(base, r, alpha, dropout, fused)
        with torch.no_grad():
            self.magnitude = nn.Parameter(self.weight_norm())  # (out,); B = 0 here, so this is ||W0||
        self.merged_norm: torch.Tensor | None = None  # the norm used by merge, needed again by unmerge

    def weight_norm(self) -> torch.Tensor:
        """||W0 + s B A|| per output feature, (out,), as a constant (DoRA section 4.3)."""
        return torch.linalg.norm(self.weight + self.scaling * (self.lora_B @ self.lora_A).detach(), dim=1).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        """y = b + (m / n) * (W0 x + s B A x), n = ||W0 + s B A||, written the way peft computes it:

            y = [W0 x + b] + (m / n - 1) * W0 x' + (m / n) * s * B A x'

        with x' = x in eval mode or without dropout, so W0 x is reused from the base output. With dropout in
        training, x' = dropout(x) and the base output keeps the clean input, exactly as peft 0.21.2 does.
        """
        result = F.linear(x, self.weight, self.bias)  # (..., out)
        if self.merged:
            return result
        scale = self.magnitude / self.weight_norm()  # (out,): m / ||W0 + s B A||
        if isinstance(self.dropout, nn.Identity) or not self.training:
            x_adapter = x
            base = result if self.bias is None else result - self.bias  # W0 x
        else:
            x_adapter = self.dropout(x)
            base = F.linear(x_adapter, self.weight)  # W0 dropout(x)
        lora = F.linear(F.linear(x_adapter, self.lora_A), self.lora_B)  # B A x'
        y = result + (scale - 1) * base + scale * lora * self.scaling
        return y.to(result.dtype)  # under bf16 autocast the fp32 scale would otherwise promote the output

    @torch.no_grad()
    def merge(self) -> None:
        """W <- (m / n) * (W0 + s B A), with n remembered for unmerge."""
        if not self.merged:
            self.merged_norm = self.weight_norm()
            factor = (self.magnitude / self.merged_norm)[:, None]  # (out, 1)
            self.weight.copy_(factor * (self.weight + self.delta_weight()))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W * n / m - s B A, back to W0 (up to float rounding)."""
        if self.merged:
            factor = (self.magnitude / self.merged_norm)[:, None]  # (out, 1)
            self.weight.copy_(self.weight / factor - self.delta_weight())
            self.merged, self.merged_norm = False, None


ADAPTERS = {"lora": LoRALinear, "dora": DoRALinear}


def adapter_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """name -> adapter layer, for every LoRALinear / DoRALinear in the model."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def matches(name: str, target: str) -> bool:
    """'h.0.attn.c_attn' matches 'attn.c_attn' and 'c_attn' (whole dotted parts from the end), as peft matches."""
    return name == target or name.endswith("." + target)


def inject_adapters(
    model: nn.Module,
    method: str = "lora",
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.1,
    targets: tuple[str, ...] = DEFAULT_TARGETS,
) -> nn.Module:
    """Wrap every nn.Linear whose name ends with one of `targets` in place; freeze all other parameters.

    Only lora_A, lora_B (and magnitude for DoRA) train afterwards. Returns the model.
    """
    if method not in ADAPTERS:
        raise ValueError(f"unknown adapter method {method!r}; choose one of {', '.join(ADAPTERS)}")
    if adapter_modules(model):
        raise ValueError("this model already has adapters; call remove_adapters(model) first")
    if isinstance(targets, str):
        targets = (targets,)
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = [name for name in linears if any(matches(name, t) for t in targets)]
    for t in targets:
        if not any(matches(name, t) for name in chosen):
            raise ValueError(
                f"adapter target {t!r} matches no nn.Linear of this model; its linear layers end with: "
                f"{', '.join(sorted({n.split('.', 2)[-1] for n in linears}))}"
            )
    # build every adapter first (a bad r or dropout fails here), then freeze and swap them in
    fused = getattr(getattr(model, "config", None), "fused", True)  # a model set to the explicit math stays so
    adapters = {}
    for name in chosen:
        base = model.get_submodule(name)
        adapters[name] = ADAPTERS[method](base, r, alpha, dropout, fused).train(base.training)  # eval: no dropout
    model.requires_grad_(False)
    for name, adapter in adapters.items():
        parent, child = split_name(model, name)
        setattr(parent, child, adapter)
    return model


def split_name(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """'h.0.attn.c_attn' -> (the module h.0.attn, 'c_attn')."""
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def merge_adapters(model: nn.Module) -> nn.Module:
    for m in adapter_modules(model).values():
        m.merge()
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    for m in adapter_modules(model).values():
        m.unmerge()
    return model


def remove_adapters(model: nn.Module, merge: bool = True) -> nn.Module:
    """Put plain nn.Linear layers back (holding W0 + update if merge, else W0); the adapters are dropped.

    Afterwards model.state_dict() is the plain GPT2 one, so save_pretrained works. Parameters stay frozen:
    call model.requires_grad_(True) to train them all again.
    """
    for name, m in adapter_modules(model).items():
        if merge:
            m.merge()
        else:
            m.unmerge()
        linear = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
        linear.weight, linear.bias = m.weight, m.bias  # the real (merged) parameters, no copy
        parent, child = split_name(model, name)
        setattr(parent, child, linear)
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter parameters (lora_A, lora_B, magnitude), by their names in the model."""
    return {k: v for k, v in model.state_dict().items() if k.rpartition(".")[2] in ADAPTER_NAMES}


def load_adapter_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Copy saved adapter parameters into a model injected the same way (method, r, targets).

    Raises ValueError naming every missing, unexpected or wrongly shaped key; nothing is copied then.
    """
    if any(m.merged for m in adapter_modules(model).values()):
        raise ValueError("cannot load adapter weights into merged layers; call unmerge_adapters(model) first")
    problems = state_dict_problems(adapter_state_dict(model), state_dict)
    if problems:
        raise ValueError("adapter state dict does not fit this model (inject with the same method, r and targets; "
                         "a shape mismatch means another rank r): " + " | ".join(problems))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state_dict.items():
            params[k].copy_(v)
    return model
