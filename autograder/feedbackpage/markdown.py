"""Markdown with LaTeX math to HTML, offline: the math becomes MathML, which browsers draw natively.

Everything here may come from a student (their copy of the notebook's Markdown, the text
of their own exceptions in a check's message), so nothing is passed through as markup:
raw HTML is escaped; math is parsed by mistune's math plugin (never inside code or a
link's target) and converted to a MathML tree that keeps only MathML elements and
presentation attributes (`\\href`, `\\style` and anything else are dropped) before it is
serialised, text escaped.
"""

from __future__ import annotations

import functools
import html
import xml.etree.ElementTree as ET

import mistune
from latex2mathml.converter import convert_to_element

MAX_LATEX = 5_000
MATHML_TAGS = frozenset({
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "mfrac", "msqrt", "mroot",
    "mstyle", "mtable", "mtr", "mtd", "mlabeledtr", "munder", "mover", "munderover", "mpadded", "mphantom",
    "menclose", "merror", "mmultiscripts", "mprescripts", "none", "semantics",
})
MATHML_ATTRIBUTES = frozenset({
    "xmlns", "display", "mathvariant", "stretchy", "fence", "separator", "lspace", "rspace", "accent",
    "accentunder", "movablelimits", "columnalign", "rowalign", "columnspacing", "rowspacing", "columnlines",
    "rowlines", "frame", "displaystyle", "scriptlevel", "minsize", "maxsize", "largeop", "symmetric", "form",
    "linethickness", "width", "height", "depth", "notation", "columnspan", "rowspan", "align", "linebreak",
})


def latex_to_mathml(latex: str, *, block: bool) -> str:
    """MathML for a formula; one the converter cannot read is shown as its LaTeX source. `aligned`, which the
    converter does not know, is read as `align*` (the same layout outside an equation's numbering)."""
    try:
        if len(latex) > MAX_LATEX:
            raise ValueError("formula too long")
        latex = latex.strip().replace(r"\begin{aligned}", r"\begin{align*}").replace(r"\end{aligned}", r"\end{align*}")
        tree = convert_to_element(latex, display="block" if block else "inline")
        return ET.tostring(_clean(tree), encoding="unicode", short_empty_elements=False)
    except Exception:  # noqa: BLE001 - any converter failure: show the source, never fail the page
        return f'<code class="latex">{html.escape(latex)}</code>'


def _clean(element: ET.Element) -> ET.Element:
    """`element` with only MathML elements and presentation attributes, recursively (in place)."""
    for name in [name for name in element.attrib if name not in MATHML_ATTRIBUTES]:
        del element.attrib[name]
    # the converter leaves character references (`&#x0003D;`) in the text: make them characters, which
    # serialising escapes again where needed
    element.text = html.unescape(element.text) if element.text else element.text
    element.tail = html.unescape(element.tail) if element.tail else element.tail
    for child in list(element):
        if child.tag in MATHML_TAGS:
            _clean(child)
        else:
            element.remove(child)
    return element


class _Renderer(mistune.HTMLRenderer):
    def block_math(self, text: str) -> str:
        return latex_to_mathml(text, block=True) + "\n"

    def inline_math(self, text: str) -> str:
        return latex_to_mathml(text, block=False)


_RENDER = mistune.create_markdown(escape=True, renderer=_Renderer(escape=True),
                                  plugins=["table", "strikethrough", "math"])


#: Texts up to this long are cached (a class's pages share most of the notebook); longer ones are rendered each time.
CACHED_CHARS = 65536


def markdown_to_html(text: str) -> str:
    """Markdown (with LaTeX) as safe HTML."""
    return _cached_markdown(text) if len(text) <= CACHED_CHARS else _RENDER(text)


@functools.lru_cache(maxsize=4096)
def _cached_markdown(text: str) -> str:
    return _RENDER(text)
