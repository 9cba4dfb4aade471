"""Infinity (FoundationVision; 2B and 8B): the first model family. family.py says what it provides to the seam;
model.py and layers.py are the transformer, bitvae.py and quantizer.py the bitwise tokenizer, t5.py the text
encoder."""
from .family import INFINITY, InfinityFamily

__all__ = ["INFINITY", "InfinityFamily"]
