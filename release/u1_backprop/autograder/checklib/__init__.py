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
from .data import randint, randn, size, spiral
from .timing import SpeedBudget, SpeedReport, compare_speed

__all__ = [
    "SpeedBudget", "SpeedReport", "compare_speed", "describe", "expect_close", "expect_number",
    "expect_sequence", "expect_tensor", "randint", "randn", "relative_error", "size", "spiral",
    "tolerance",
]
