"""What checks are written with: expectations, random inputs and speed comparisons."""

from .compare import (
    describe,
    expect_close,
    expect_number,
    expect_sequence,
    expect_tensor,
    relative_error,
    tolerance,
)
from .data import GLYPH_CLASSES, glyphs, randint, randn, size, spiral
from .timing import SpeedBudget, SpeedReport, compare_speed

__all__ = [
    "GLYPH_CLASSES", "SpeedBudget", "SpeedReport", "compare_speed", "describe", "expect_close", "expect_number",
    "expect_sequence", "expect_tensor", "glyphs", "randint", "randn", "relative_error", "size", "spiral",
    "tolerance",
]
