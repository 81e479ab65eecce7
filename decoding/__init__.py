"""Generation strategies (greedy, sampling, contrastive search, beam search) and the metric they rerank with."""
from .beam import beam_search
from .chrf import corpus_chrf, sentence_chrf
from .contrastive import contrastive_search
from .mbr import mbr_select
from .sampling import greedy, sample

__all__ = ["greedy", "sample", "contrastive_search", "beam_search", "mbr_select", "sentence_chrf", "corpus_chrf"]
