"""minigpt: a from-scratch GPT-2 to read top to bottom, proven equal to the reference by tests."""
from .config import GPT2Config
from .model import GPT2, ModelOutput

__all__ = ["GPT2Config", "GPT2", "ModelOutput"]
