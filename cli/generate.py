"""`python run.py generate --prompt "..."`: continue a prompt with any decoder, using the KV cache.

    python run.py generate --model gpt2 --prompt "Shall I compare thee" --decoder contrastive
    python run.py generate --model runs/sonnet/model --prompt "..." --decoder top-p --temperature 1.2
"""
from __future__ import annotations

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
    parser.add_argument("--prompt", required=True, action="append",
                        help="the text to continue; give it several times to decode all the prompts as one batch "
                             "(left-padded), each continuation printed after a '--- prompt N' line")
    parser.add_argument("--device", type=device_type, default="auto",
                        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    add_explicit_math_argument(parser)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model's forward (minigpt/compiling.py) with dynamic shapes: one "
                             "graph for the prompt, one for every cached one-token step whatever the length; the "
                             "first call pays for the compilation, the tokens are eager's")
    add_decoder_arguments(parser)


def up_to_eos(tokens: list[int], eos: int | None) -> list[int]:
    """The generated tokens up to and including the first eos (a finished row is padded with eos after it)."""
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


def main(args) -> int:
    cfg = decode_config_from_args(args)
    device = resolve_device(args.device)
    tokenizer = Tokenizer.from_dir(args.tokenizer or resolve_model_dir(args.model))
    batch = tokenizer.encode_batch(args.prompt, padding_side="left")  # padded with eos
    lengths = batch.attention_mask.sum(dim=1).tolist()  # tokens of each prompt
    for n, length in enumerate(lengths, 1):
        if not length:
            raise ValueError(f"--prompt {'' if len(lengths) == 1 else f'{n} '}is empty: give at least one token of "
                             "text to continue")
    model = load_pretrained(args.model, device=device).eval().set_fused(not args.explicit_math)
    T = batch.input_ids.size(1)  # the longest prompt
    check_room(T, args.max_new_tokens, model.config.n_positions, prompt="--prompt")
    refuse_non_finite(model, "decode")
    if args.compile:
        compile_model(model, device, dynamic=True)
    eos = tokenizer.eos_token_id
    input_ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)  # (B, T) each
    out = decode(model, input_ids, cfg, attention_mask=None if len(lengths) == 1 else mask, eos_token_id=eos,
                 decode_fn=tokenizer.decode)  # (B, T + n)
    for b, length in enumerate(lengths):
        if len(lengths) > 1:
            print(f"--- prompt {b + 1}")
        prompt = out[b, T - length:T].tolist()  # without its left padding
        print(tokenizer.decode(prompt + up_to_eos(out[b, T:].tolist(), eos)))
    return 0
