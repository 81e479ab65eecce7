"""`python run.py download gpt2|gpt2-medium|gpt2-large|gpt2-xl|data`.

A model goes into the cache ($MINIGPT_HOME, default ~/.cache/minigpt/<name>/): config.json, model.safetensors,
vocab.json, merges.txt, resumable. `data` fetches the public data sets into --data-dir in the course formats.
"""
from __future__ import annotations

import sys

from minigpt.config import PRESETS

DATA_SOURCES = ("sonnets", "sst", "quora")


def add_arguments(parser) -> None:
    parser.add_argument("what", choices=[*PRESETS, "data"],
                        help="a GPT-2 size to fetch into the cache, or 'data' for the public data sets")
    parser.add_argument("--cache-dir", default=None,
                        help="model cache (default: $MINIGPT_HOME or ~/.cache/minigpt)")
    parser.add_argument("--data-dir", default=None, help="where data goes (default: $MINIGPT_DATA or data/)")
    parser.add_argument("--only", nargs="+", choices=DATA_SOURCES, default=list(DATA_SOURCES),
                        help="with 'data': which sources to fetch")
    parser.add_argument("--force", action="store_true", help="with 'data': rebuild files that already exist")


def main(args) -> int:
    if args.what == "data":
        from tasks.data import resolve_data_dir
        from tasks.data.fetch_data import FetchError, fetch_data

        data_dir = resolve_data_dir(args.data_dir, must_exist=False)
        try:
            written = fetch_data(data_dir, what=tuple(args.only), force=args.force)
        except FetchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for path in written:
            print(f"wrote {path}")
        return 0

    from minigpt.download import DownloadError, download_model

    try:
        download_model(args.what, cache_dir=args.cache_dir)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
