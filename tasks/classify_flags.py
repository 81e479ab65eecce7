"""The flags the classification tasks (sentiment, paraphrase, multitask) share: their data and their methods."""
from __future__ import annotations

from minigpt.settings import number
from tasks.heads import POOLINGS


def add_data_arguments(parser, max_length: int) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--data-dir", default=None,
                   help="directory of the course data files (None: $MINIGPT_DATA, else data/)")
    g.add_argument("--max-length", type=number(int, 1), default=max_length,
                   help="tokens per text; longer texts are cut (the count is logged)")
    g.add_argument("--eval-batch-size", type=number(int, 1), default=64, help="examples per batch when predicting")
    g.add_argument("--limit", type=number(int, 0), default=0,
                   help="smoke runs only: keep the first N examples of every split (0: all)")


def add_method_arguments(parser, pooling: bool = True) -> None:
    g = parser.add_argument_group("methods (tasks/losses.py)")
    if pooling:
        g.add_argument("--pooling", choices=POOLINGS, default="last",
                       help="last: the hidden state of the last real token; mean: the mean over real tokens")
    g.add_argument("--rdrop", type=number(float, 0), default=0.0, metavar="ALPHA",
                   help="R-Drop (Liang et al. 2021): two dropout passes, CE on both + ALPHA * symmetric KL (0: off)")
    g.add_argument("--simcse", type=number(float, 0), default=0.0, metavar="WEIGHT",
                   help="unsupervised SimCSE (Gao et al. 2021): + WEIGHT * InfoNCE between two dropout views of "
                        "the pooled embeddings, in-batch negatives (0: off)")
    g.add_argument("--simcse-temp", type=number(float, 0, low_open=True), default=0.05, help="SimCSE temperature tau")
    g.add_argument("--augment", default=None, metavar="FILE",
                   help="back-translation: extra training rows in the training file's format (tasks/data/augment.py)")
    g.add_argument("--load-head", default=None, metavar="FILE",
                   help="start the classification head from a head-*.safetensors file of an exported model")
