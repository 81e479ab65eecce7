"""`python run.py generate --prompt "..."`: continue a prompt with any decoder, using the KV cache.

    python run.py generate --model gpt2 --prompt "Shall I compare thee" --decoder contrastive
    python run.py generate --model runs/sonnet/model --prompt "..." --decoder top-p --temperature 1.2
"""
from __future__ import annotations

import torch

from decoding.common import check_room
from decoding.config import add_decoder_arguments, decode, decode_config_from_args
from minigpt import Tokenizer, load_pretrained
from minigpt.checkpoint import resolve_model_dir
from minigpt.compiling import compile_model
from minigpt.settings import device_type
from minigpt.state_dict import refuse_non_finite
from tasks.model_flags import add_explicit_math_argument
from training.distributed import resolve_device


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="gpt2",
                        help="a preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl: downloaded once into the cache) or "
                             "a directory in the Hugging Face layout")
    parser.add_argument("--tokenizer", default=None, help="directory with vocab.json + merges.txt (default: the "
                                                          "model directory)")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--device", type=device_type, default="auto",
                        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    add_explicit_math_argument(parser)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model's forward (minigpt/compiling.py) with dynamic shapes: one "
                             "graph for the prompt, one for every cached one-token step whatever the length; the "
                             "first call pays for the compilation, the tokens are eager's")
    add_decoder_arguments(parser)


def main(args) -> int:
    cfg = decode_config_from_args(args)
    device = resolve_device(args.device)
    tokenizer = Tokenizer.from_dir(args.tokenizer or resolve_model_dir(args.model))
    ids = tokenizer.encode(args.prompt)
    if not ids:
        raise ValueError("--prompt is empty: give at least one token of text to continue")
    model = load_pretrained(args.model, device=device).eval().set_fused(not args.explicit_math)
    check_room(len(ids), args.max_new_tokens, model.config.n_positions, prompt="--prompt")
    refuse_non_finite(model, "decode")
    if args.compile:
        compile_model(model, device, dynamic=True)
    input_ids = torch.tensor([ids], device=device)
    out = decode(model, input_ids, cfg, eos_token_id=tokenizer.eos_token_id, decode_fn=tokenizer.decode)
    print(tokenizer.decode(out[0].tolist()))
    return 0
