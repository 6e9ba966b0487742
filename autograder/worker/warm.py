"""Work every worker would repeat, done once in the zygote before it forks them.

A worker is a fork of the zygote, so whatever the zygote has built it starts with, at no
cost. Two things every notebook pays for on its first use in a fresh process:

- pyplot's first figure: fonts, the mathtext parser and the Agg renderer load lazily and
  cost about 0.1 s more than any later figure (plotting cells still run while grading);
- Unit 4's data set: each notebook draws `synthetic_ratings(seed=0)` first (0.15 s), which
  keeps recent draws (`autograder.checklib.ratings`).

Nothing here is the student's: it runs before any student code, in the zygote.
"""

from __future__ import annotations

import importlib


def warm_up() -> list[str]:
    """Build what the workers would build first; returns what was warmed (what this machine lacks is skipped)."""
    warmed = []
    if _first_figure():
        warmed.append("pyplot")
    if _ratings():
        warmed.append("synthetic_ratings")
    return warmed


def _first_figure() -> bool:
    try:
        pyplot = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return False
    fig, (left, right) = pyplot.subplots(1, 2, figsize=(8, 3))
    left.bar(range(1, 4), [1, 3, 2])
    left.set_title("barras")
    right.semilogy(range(1, 10), range(1, 10), label="$k = 3$, $\\mathbf{p}_u^\\top \\mathbf{q}_i$")
    right.grid(alpha=0.3, which="both")
    right.legend()
    fig.tight_layout()
    pyplot.close("all")
    return True


def _ratings() -> bool:
    try:
        ratings = importlib.import_module("autograder.checklib.ratings")
    except ImportError:
        return False
    ratings.synthetic_ratings(seed=0)
    return True
