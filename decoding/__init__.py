"""Generation strategies: greedy, sampling, contrastive search, beam search, MBR selection (metrics/chrf.py)."""
from .beam import beam_search
from .contrastive import contrastive_search
from .mbr import mbr_select
from .sampling import greedy, sample

__all__ = ["greedy", "sample", "contrastive_search", "beam_search", "mbr_select"]
