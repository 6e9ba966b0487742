"""The feedback page's rendering of student-controlled text: math as MathML, nothing passed through as markup."""

from html.parser import HTMLParser

import nbformat
import pytest

from autograder.feedbackpage.markdown import markdown_to_html
from autograder.feedbackpage.page import PageInfo, render_feedback

PAYLOADS = [
    r"$\text{<form/action=https://evil.example><input/name=pw></form>}$",
    r'$\text{<meta/http-equiv="refresh"/content="0;url=https://evil.example">}$',
    r"$\style{position:fixed;top:0;left:0;width:100%;height:100%;background:#fff}{x}$",
    r"$\href{https://evil.example}{clic}$",
    r"[clic]($\text{x}$) <script>alert(1)</script> <img src=x onerror=alert(1)>",
    "$$\n\\text{</math><form action=https://evil.example>}\n$$",
]


class _Markup(HTMLParser):
    """Every element and attribute a browser would build from the text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[tuple[str, str]] = set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes |= {(tag, name) for name, _ in attrs}


@pytest.mark.parametrize("text", PAYLOADS)
def test_student_markdown_and_latex_cannot_inject_markup(text):
    """No element or attribute beyond MathML's and mistune's own reaches the page, whatever the LaTeX says."""
    markup = _Markup(markdown_to_html(text))
    assert markup.tags <= {"p", "a", "code", "math", "mrow", "mtext", "mi", "mo", "mn"}, markup.tags
    assert markup.attributes <= {("math", "xmlns"), ("math", "display"), ("a", "href")}, markup.attributes


def test_math_becomes_mathml_and_code_keeps_its_dollars():
    """Inline and display math (aligned included) become MathML; code spans and escaped dollars stay text."""
    rendered = markdown_to_html("Sea $\\hat{y} = x^\\top w$ y\n\n$$\n\\begin{aligned} a &= b \\\\ c &= d\\end{aligned}\n$$\n\n"
                                "`$no$` cuesta \\$5")
    assert rendered.count("<math") == 2 and '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' \
        in rendered
    assert "<mtable" in rendered and "&amp;#x" not in rendered
    assert "<code>$no$</code>" in rendered and "cuesta $5" in rendered


def test_a_formula_the_converter_cannot_read_is_shown_as_its_source():
    """Bad LaTeX never breaks the page: it is shown, escaped, as code."""
    rendered = markdown_to_html(r"$\begin{pmatrix} <b>$")
    assert "<b>" not in rendered and '<code class="latex">' in rendered and "&lt;b&gt;" in rendered


def test_the_page_forbids_every_load_and_form_and_escapes_student_code():
    """The page's policy allows no script, no load, no form target; student code and outputs are escaped."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Título con $x^2$"),
        nbformat.v4.new_code_cell("print('</pre><script>alert(1)</script>')", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="<script>alert(2)</script>\n")]),
    ])
    page = render_feedback(nb, info=PageInfo(student="<b>ana</b>", assignment="u1", score=1, max_score=2))
    assert "default-src 'none'" in page and "form-action 'none'" in page
    assert "<script" not in page and "&lt;script&gt;" in page and "<b>ana</b>" not in page


def test_an_annotated_notebook_is_a_valid_notebook():
    """Are the outputs the annotation writes (check reports, scores, printed text, dropped bytes, errors, a cell
    that timed out) valid nbformat v4, as nbgrader and Jupyter read them, though each is made without a schema
    check?"""
    from autograder.nbgrader_bridge.annotate import annotate_notebook, set_scores

    test_cell = nbformat.v4.new_code_cell("check('parte')", metadata={"nbgrader": {
        "grade": True, "grade_id": "parte", "points": 2, "solution": False, "locked": True, "schema_version": 3}})
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print('hola')"), nbformat.v4.new_code_cell("1 / 0"),
        nbformat.v4.new_code_cell("while True: pass"), test_cell])
    result = {"score": 1.0, "max_score": 2.0, "tests": [], "extra_data": {
        "grade_cells": {"parte": {"score": 1.0, "max_score": 2.0}},
        "cells": [
            {"index": 1, "status": "ok", "preview": "print('hola')", "output": "hola\n", "output_dropped": 12},
            {"index": 2, "status": "error", "preview": "1 / 0", "output": "",
             "error": {"type": "ZeroDivisionError", "message": "division by zero", "traceback": "a\nb"}},
            {"index": 3, "status": "timeout", "preview": "while True: pass", "output": ""}]}}
    annotated = set_scores(annotate_notebook(nb, result), result)
    nbformat.validate(annotated)
    assert [len(cell.outputs) for cell in annotated.cells] == [2, 1, 1, 2]
    assert annotated.cells[1].outputs[0].ename == "ZeroDivisionError"
    assert annotated.cells[3].outputs[1].data["text/plain"] == "1"
