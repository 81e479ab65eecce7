"""How good a text or a prediction is, and how sure that score is: chrF / chrF++ (chrf.py, sacreBLEU's), bootstrap
intervals and paired tests (significance.py, chrf_significance.py), and the chrF floors a sonnet run is read against
(floors.py: what texts written without a model score)."""
from .chrf import corpus_chrf, sentence_chrf

__all__ = ["sentence_chrf", "corpus_chrf"]
