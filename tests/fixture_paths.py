"""Where the golden reference outputs of the official Infinity code live: tests/fixtures/infinity, carried in the
repository so a plain clone runs every test (provenance in its README.md)."""
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "infinity"
TINY = FIXTURES / "tiny_square"
TINY_8B = FIXTURES / "tiny_8b_square"  # Infinity-8B-shaped: sharded weights, f8/d14 VAE, 2x2 spatial patchify
