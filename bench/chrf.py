"""`python run.py bench decoding`, its last two rows: corpus chrF over --chrf-pairs sentence pairs against
sacrebleu's CHRF, and MBR over --mbr-candidates sonnet-sized candidates against a brute-force loop of sacrebleu
sentence scores; seconds, the speed-up and whether the results are identical.

The sentences are pseudo-English from a fixed random lexicon (random_sentences): chrF counts character and word
n-grams, so what matters is their lengths and overlap, not their meaning.
"""
from __future__ import annotations

import random
import statistics
import string

from bench.timing import timed_pair


def random_sentences(count: int, seed: int, words_per: tuple[int, int] = (5, 25)):
    """Pseudo-English: words from a fixed random lexicon, some punctuation and capitals; references are the
    hypotheses with about a third of their words replaced, so the pairs overlap partly, as real ones do."""
    rng = random.Random(seed)
    lexicon = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 9))) for _ in range(3000)]
    lexicon += ["thee", "thou", "love", "time", "beauty", "éclat", "naïve", "—", "l'amour"]

    def sentence(n):
        words = [rng.choice(lexicon) for _ in range(n)]
        words[0] = words[0].capitalize()
        return " ".join(words) + rng.choice([".", "!", "?", ";", ""])

    hyps = [sentence(rng.randint(*words_per)) for _ in range(count)]
    refs = [" ".join(w if rng.random() > 0.33 else rng.choice(lexicon) for w in h.split()) for h in hyps]
    return hyps, refs


def bench_chrf(pairs: int, n_candidates: int, repeats: int, warmup: int) -> bool:
    """Print the two rows; True when ours and sacrebleu's agree (chrF to 1e-9, MBR on the same index)."""
    from sacrebleu.metrics import CHRF

    from decoding import mbr_select
    from metrics import corpus_chrf, sentence_chrf

    reference_chrf = CHRF()
    hyps, refs = random_sentences(pairs, seed=0)
    t_ours, t_ref, ours, ref = timed_pair(
        lambda: corpus_chrf(hyps, refs), lambda: reference_chrf.corpus_score(hyps, [refs]).score,
        repeats, warmup,
    )
    chrf_same = abs(ours - ref) <= 1e-9
    print(f"  {'':18} {'ours s':>10} {'sacrebleu s':>12} {'speedup':>7}  identical")
    print(f"  {f'corpus chrF x{len(hyps)}':18} {t_ours:10.3f} {t_ref:12.3f} {t_ref / t_ours:6.1f}x  "
          f"{'yes' if chrf_same else 'NO'} ({ours:.6f} vs {ref:.6f})")

    candidates, _ = random_sentences(n_candidates, seed=1, words_per=(60, 110))  # sonnet-sized

    def brute_force():
        means = [statistics.fmean(reference_chrf.sentence_score(c, [o]).score
                                  for j, o in enumerate(candidates) if j != i) for i, c in enumerate(candidates)]
        return max(range(len(means)), key=means.__getitem__)  # the first of equal maxima

    t_ours, t_ref, ours, ref = timed_pair(lambda: mbr_select(candidates), brute_force, repeats, warmup)
    # and one sentence-level check on the same strings
    sentence_same = abs(sentence_chrf(candidates[0], [candidates[1]])
                        - reference_chrf.sentence_score(candidates[0], [candidates[1]]).score) <= 1e-9
    print(f"  {f'MBR x{len(candidates)}':18} {t_ours:10.3f} {t_ref:12.3f} {t_ref / t_ours:6.1f}x  "
          f"{'yes' if ours == ref and sentence_same else 'NO'} (index {ours} vs {ref})")
    return chrf_same and sentence_same and ours == ref
