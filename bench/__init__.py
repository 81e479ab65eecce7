"""Benchmarks: `python run.py bench model|decoding|train` (ours vs the reference implementation, as ratios)."""
