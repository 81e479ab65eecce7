"""minigpt: a from-scratch GPT-2 to read top to bottom, proven equal to the reference by tests."""
from .checkpoint import load_pretrained, save_pretrained
from .config import GPT2Config
from .model import GPT2, ModelOutput
from .tokenizer import Tokenizer

__all__ = ["GPT2Config", "GPT2", "ModelOutput", "Tokenizer", "load_pretrained", "save_pretrained"]
