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
    """Build what the workers would build first; returns what was warmed. A step that fails (a library missing or
    broken on this machine) is skipped: the workers then build it themselves, as without the warm-up."""
    warmed = []
    for name, step in (("pyplot", _first_figure), ("synthetic_ratings", _ratings)):
        try:
            step()
            warmed.append(name)
        except Exception:  # noqa: BLE001 - only a saving is lost; the worker meets the same error, if any, itself
            pass
    return warmed


def _first_figure() -> None:
    pyplot = importlib.import_module("matplotlib.pyplot")
    try:
        fig, (left, right) = pyplot.subplots(1, 2, figsize=(8, 3))
        left.bar(range(1, 4), [1, 3, 2])
        left.set_title("barras")
        right.semilogy(range(1, 10), range(1, 10), label="$k = 3$, $\\mathbf{p}_u^\\top \\mathbf{q}_i$")
        right.grid(alpha=0.3, which="both")
        right.legend()
        fig.tight_layout()
    finally:
        pyplot.close("all")  # workers start with no figure open


def _ratings() -> None:
    importlib.import_module("autograder.checklib.ratings").synthetic_ratings(seed=0)
