"""GPT-2 hyperparameters: one dataclass, four public presets, and the Hugging Face `config.json` mapping.

The four sizes OpenAI released (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners",
Table 2) differ only in depth and width; everything else (vocabulary, context length, LayerNorm epsilon) is shared.

Two settings exist for the course's model (CS224N's GPT-2 starter code, `--protocol course`), which is not quite
GPT-2; public GPT-2 keeps its own values (tanh, None):

    gelu="erf"      GELU(x) = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))    (Hendrycks & Gimpel 2016, the exact form)
    gelu="tanh"     GELU(x) ~ 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (their approximation; GPT-2's)
    padding_idx=0   the token embedding's row 0 gets no gradient from the lookup W_te[x] (nn.Embedding's
                    padding_idx); the tied LM head still trains it. None: every row trains.

Why: the course's given layer calls F.gelu (erf), which moves next-token logits by up to ~1e-3, and its config
sets pad_token_id=0, which freezes the lookup of token 0 ("!") during fine-tuning. Both change the numbers a run
reports, so --protocol course turns both on. In config.json: activation_function "gelu" is transformers' erf GELU
(GELUActivation), "gelu_new" its tanh form; padding_idx goes under "minigpt_padding_idx", a key transformers keeps
but does not use (its GPT-2 has no such setting; the forward pass is the same, only a transformers fine-tune would
train that row).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

# name -> (n_layer, n_head, n_embd); all four use vocab 50257 and 1024 positions.
PRESETS = {
    "gpt2": (12, 12, 768),  # 124M
    "gpt2-medium": (24, 16, 1024),  # 355M
    "gpt2-large": (36, 20, 1280),  # 774M
    "gpt2-xl": (48, 25, 1600),  # 1558M
}


GELUS = ("tanh", "erf")
COURSE_MODEL = {"gelu": "erf", "padding_idx": 0}  # the course's model: GPT2Config fields that --protocol course sets
# config.json's activation_function -> our gelu; "gelu" is transformers' erf GELU, the other two its tanh forms
HF_ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "erf"}
HF_ACTIVATION_OF = {"tanh": "gelu_new", "erf": "gelu"}

# config.json keys minigpt reads -> the JSON type each must have
HF_TYPES = {"vocab_size": int, "n_positions": int, "n_ctx": int, "n_embd": int, "n_layer": int, "n_head": int,
            "eos_token_id": int, "resid_pdrop": float, "embd_pdrop": float, "attn_pdrop": float,
            "layer_norm_epsilon": float, "minigpt_padding_idx": int}


def _is_number(value) -> bool:
    """An int or a finite float, not a bool (JSON's true would pass isinstance(value, int))."""
    return type(value) in (int, float) and math.isfinite(value)


MAX_PARAMETERS = 20_000_000_000  # 80 GB of fp32 weights, 13x gpt2-xl: a larger config is a typo, not a model


@dataclass
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    dropout: float = 0.1  # one rate for embeddings, attention probabilities and residual branches
    layer_norm_epsilon: float = 1e-5
    # True: PyTorch's fused kernels (scaled_dot_product_attention, F.layer_norm, F.gelu) -- fast.
    # False: the explicit equations, written out line by line -- for reading and stepping through.
    # Tests prove both give the same numbers.
    fused: bool = True
    eos_token_id: int = 50256
    gelu: str = "tanh"  # "tanh": GPT-2's approximation; "erf": the exact GELU (the course's model; module docstring)
    padding_idx: int | None = None  # a token whose embedding lookup gets no gradient (the course's: 0)

    def __post_init__(self):
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPT2Config.{name} must be a positive integer, got {value!r}")
        if self.num_parameters > MAX_PARAMETERS:  # refused before torch tries to allocate it
            raise ValueError(f"GPT2Config: {self.num_parameters:,} parameters ({4 * self.num_parameters / 2**30:,.0f} "
                             f"GiB in fp32) is over minigpt's limit of {MAX_PARAMETERS:,} (gpt2-xl has 1.56e9); "
                             f"check n_positions={self.n_positions}, n_embd={self.n_embd}, n_layer={self.n_layer}, "
                             f"vocab_size={self.vocab_size}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPT2Config: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}), "
                "since each head gets n_embd / n_head dimensions"
            )
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPT2Config.dropout must be a number in [0, 1), got {self.dropout!r}")
        if not _is_number(self.layer_norm_epsilon) or self.layer_norm_epsilon <= 0:
            raise ValueError(f"GPT2Config.layer_norm_epsilon must be a number > 0, got {self.layer_norm_epsilon!r}")
        if type(self.eos_token_id) is not int or self.eos_token_id < 0:
            raise ValueError(f"GPT2Config.eos_token_id must be a non-negative integer, got {self.eos_token_id!r}")
        if self.gelu not in GELUS:
            raise ValueError(f"GPT2Config.gelu must be one of {', '.join(GELUS)}, got {self.gelu!r}")
        if self.padding_idx is not None and not (type(self.padding_idx) is int
                                                 and 0 <= self.padding_idx < self.vocab_size):
            raise ValueError(f"GPT2Config.padding_idx must be None or a token id in [0, {self.vocab_size}), got "
                             f"{self.padding_idx!r}")

    @property
    def num_parameters(self) -> int:
        """The model's parameter count, from the shapes alone (GPT2.num_parameters counts the tensors):
        token and position embeddings, per block two LayerNorms (2 * 2C), attention (C x 3C + 3C, C x C + C) and
        the MLP (C x 4C + 4C, 4C x C + C), the final LayerNorm; the LM head is tied to the token embedding."""
        C = self.n_embd
        block = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
        return (self.vocab_size + self.n_positions) * C + self.n_layer * block + 2 * C

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_name(cls, name: str, **overrides) -> "GPT2Config":
        """One of the public presets: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl'."""
        if name not in PRESETS:
            raise ValueError(f"unknown GPT-2 preset {name!r}; choose one of {', '.join(PRESETS)}")
        n_layer, n_head, n_embd = PRESETS[name]
        return cls(n_layer=n_layer, n_head=n_head, n_embd=n_embd, **overrides)

    # ----- Hugging Face config.json -----------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict, source: str = "config.json") -> "GPT2Config":
        missing = [k for k in ("vocab_size", "n_embd", "n_layer", "n_head") if k not in d]
        if missing:
            raise ValueError(f"{source}: missing GPT-2 keys {missing}")
        for key, kind in HF_TYPES.items():  # a string or a float where a count belongs fails here, not mid-forward
            if key in d and not (type(d[key]) is int if kind is int else _is_number(d[key])):
                want = "an integer" if kind is int else "a number"
                raise ValueError(f"{source}: {key} must be {want}, got {d[key]!r} ({type(d[key]).__name__})")
        act = d.get("activation_function", "gelu_new")
        if act not in HF_ACTIVATIONS:
            raise ValueError(f"{source}: activation_function {act!r} is neither GPT-2's tanh GELU (gelu_new, "
                             "gelu_pytorch_tanh) nor the erf GELU (gelu)")
        for key, plain in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False)):
            if d.get(key, plain) != plain:
                raise ValueError(f"{source}: {key}={d[key]} is not the GPT-2 architecture minigpt implements")
        if d.get("n_inner") not in (None, 4 * d["n_embd"]):
            raise ValueError(f"{source}: n_inner={d['n_inner']}, but GPT-2's MLP is 4 * n_embd = {4 * d['n_embd']}")
        rates = {d.get(k, 0.1) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
        if len(rates) > 1:
            warnings.warn(f"{source}: differing dropout rates {sorted(rates)}; minigpt uses resid_pdrop for all",
                          stacklevel=2)
        try:
            return cls(
                vocab_size=d["vocab_size"],
                n_positions=d.get("n_positions", d.get("n_ctx", 1024)),
                n_embd=d["n_embd"],
                n_layer=d["n_layer"],
                n_head=d["n_head"],
                dropout=d.get("resid_pdrop", 0.1),
                layer_norm_epsilon=d.get("layer_norm_epsilon", 1e-5),
                eos_token_id=d.get("eos_token_id", 50256),
                gelu=HF_ACTIVATIONS[act],
                padding_idx=d.get("minigpt_padding_idx"),
            )
        except ValueError as e:  # a value out of range: name the file
            raise ValueError(f"{source}: {e}") from None

    def to_hf_dict(self) -> dict:
        padding = {} if self.padding_idx is None else {"minigpt_padding_idx": self.padding_idx}
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "activation_function": HF_ACTIVATION_OF[self.gelu],
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "resid_pdrop": self.dropout,
            "embd_pdrop": self.dropout,
            "attn_pdrop": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": 0.02,
            "bos_token_id": self.eos_token_id,
            "eos_token_id": self.eos_token_id,
            **padding,
        }

    @classmethod
    def from_json_file(cls, path: str | Path) -> "GPT2Config":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_hf_dict(d, source=str(path))

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n", encoding="utf-8")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPT2Config":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
