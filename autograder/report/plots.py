"""The report's figures, drawn with matplotlib and returned as inline SVG text.

Figures are built with `matplotlib.figure.Figure` (no pyplot, so no global backend or
open-figure state); text stays text (`svg.fonttype: none`) and ids are salted per figure,
so several SVGs can share one page. Output is deterministic: no dates, fixed salts.
Each function returns None when there is nothing to draw.
"""

from __future__ import annotations

import functools
import io
import math
import statistics

import matplotlib

matplotlib.use("Agg")  # never a GUI backend, even if something imports pyplot later

from matplotlib.figure import Figure  # noqa: E402

BLUE = "#3b6ea8"
ORANGE = "#d9822b"
GREY = "#8a8f98"
STYLE = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.color": "#e3e6ea",
    "axes.axisbelow": True,
}



def _styled(draw):
    """Run a drawing function under the report's rcParams (they apply when artists are created)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


@_styled
def score_histogram(scores: list[float], *, max_score: float | None) -> str | None:
    """Histogram of the submissions' scores, with the mean marked."""
    if not scores:
        return None
    top = max([max_score or 0.0, *scores, 1.0])
    bins = _score_bins(top)
    fig, ax = _figure(5.6, 3.0)
    ax.hist(scores, bins=bins, color=BLUE, edgecolor="white")
    mean = sum(scores) / len(scores)
    ax.axvline(mean, color=ORANGE, linestyle="--", linewidth=1.5, label=f"mean {mean:.1f}")
    ax.set_xlim(bins[0], bins[-1])
    ax.set_xlabel(f"score (points, of {max_score:g})" if max_score else "score (points)")
    ax.set_ylabel("submissions")
    ax.set_title("Score distribution")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(frameon=False, loc="best")
    return _svg(fig, "score-histogram")


@_styled
def time_histogram(seconds: list[float]) -> str | None:
    """Histogram of grading time per submission, with the median marked."""
    if not seconds:
        return None
    fig, ax = _figure(5.6, 3.0)
    top = max(max(seconds), 1e-3)
    ax.hist(seconds, bins=min(30, max(5, len(seconds))), range=(0, top * 1.05), color=GREY, edgecolor="white")
    median = statistics.median(seconds)
    ax.axvline(median, color=ORANGE, linestyle="--", linewidth=1.5, label=f"median {median:.1f} s")
    ax.set_xlabel("grading time per submission (s)")
    ax.set_ylabel("submissions")
    ax.set_title("Time per submission")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(frameon=False, loc="upper right")
    return _svg(fig, "time-histogram")


@_styled
def parts_chart(parts: list[tuple[str, float | None, float | None]]) -> str | None:
    """Horizontal bars per graded part: mean score and share of full marks, both in % (None: not drawn)."""
    if not parts:
        return None
    fig, ax = _figure(11.2, 1.1 + 0.3 * len(parts))
    names = [p[0].replace("$", r"\$") for p in parts]  # a literal $, not mathtext
    rows = range(len(parts))
    ax.barh([r - 0.19 for r in rows], [100 * (p[1] or 0.0) for p in parts], height=0.36, color=BLUE,
            label="mean score (% of the part's points)")
    ax.barh([r + 0.19 for r in rows], [100 * (p[2] or 0.0) for p in parts], height=0.36, color=ORANGE,
            label="submissions with full marks (%)")
    ax.set_yticks(list(rows), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% (0-100)")
    ax.grid(axis="x", color="#e3e6ea")
    ax.grid(axis="y", visible=False)
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2)  # it titles the chart
    return _svg(fig, "parts-chart")


def _score_bins(top: float) -> list[float]:
    """One bin per point up to 40 points, else 20 equal bins; every bin centred on its values."""
    step = 1.0 if top <= 40 else math.ceil(top / 20)
    count = int(math.ceil(top / step)) + 1
    return [(i - 0.5) * step for i in range(count + 1)]


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _svg(fig: Figure, salt: str) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML declaration and doctype: the SVG goes inside HTML
