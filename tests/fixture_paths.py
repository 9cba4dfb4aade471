"""Where the golden reference outputs of the official Infinity code live (../shared/fixtures)."""
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "infinity"
TINY = FIXTURES / "tiny_square"
