"""Markdown with LaTeX math to HTML, offline: the math becomes MathML, which browsers draw natively.

Raw HTML in the Markdown is escaped, not rendered (a student's copy of the notebook
may hold anything). Math inside code spans and fenced code stays as written.
"""

from __future__ import annotations

import html
import re

import mistune
from latex2mathml.converter import convert

#: code first (left as is), then an escaped dollar, display math, inline math
_TOKENS = re.compile(r"(```.*?```|`[^`\n]*`)|(\\\$)|\$\$(.+?)\$\$|\$([^$\n]+?)\$", re.S)
_PLACEHOLDER = "MATHPLACEHOLDER{}X"
_PLACED = re.compile(r"MATHPLACEHOLDER(\d+)X")
_RENDER = mistune.create_markdown(escape=True, plugins=["table", "strikethrough"])
MAX_LATEX = 5_000


def markdown_to_html(text: str) -> str:
    formulas: list[str] = []

    def protect(match: re.Match) -> str:
        code, dollar, display, inline = match.groups()
        if code is not None or dollar is not None:
            return match.group(0)
        formulas.append(latex_to_mathml(display if display is not None else inline, block=display is not None))
        return _PLACEHOLDER.format(len(formulas) - 1)

    rendered = _RENDER(_TOKENS.sub(protect, text))
    return _PLACED.sub(lambda m: formulas[int(m.group(1))] if int(m.group(1)) < len(formulas) else m.group(0),
                       rendered)


def latex_to_mathml(latex: str, *, block: bool) -> str:
    """MathML for a formula; one the converter cannot read is shown as its LaTeX source."""
    try:
        if len(latex) > MAX_LATEX:
            raise ValueError("formula too long")
        return convert(latex.strip(), display="block" if block else "inline")
    except Exception:  # noqa: BLE001 - any converter failure: show the source, never fail the page
        return f'<code class="latex">{html.escape(latex)}</code>'
