"""The three course tasks (sonnet generation, sentiment, paraphrase), their shared trainer, data and losses."""
