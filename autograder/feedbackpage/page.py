"""One student's feedback as a self-contained HTML page (Spanish; inline CSS, MathML, no script, no network).

Input: the annotated notebook (`nbgrader_bridge.annotate`): each graded part's report in
its test cell's outputs and its score in the cell's nbgrader metadata (`score`,
`points`; set by nbgrader's `GetGrades` from the gradebook, so manual grades count, or
by `annotate.set_scores` from a result file). The page shows the notebook as graded:
the student's code as written, what each cell printed in the sandbox, each part's
result inline, the score per part and in total, and the staff's comments.
"""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from ..grading.intake import cell_source, is_test_cell_metadata
from .markdown import CACHED_CHARS, markdown_to_html

_FORMATTER = HtmlFormatter(cssclass="code", nowrap=False)
MAX_OUTPUT_CHARS = 20_000
#: nbgrader's automatic comment on an answer cell the student left as released
NBGRADER_NO_RESPONSE = "No response."


@dataclass(frozen=True)
class PageInfo:
    student: str
    assignment: str
    score: float
    max_score: float
    late_penalty: float = 0.0
    course: str = "Aprendizaje Profundo — Datitos 2021"


@dataclass(frozen=True)
class Part:
    grade_id: str
    score: float | None
    points: float


def render_feedback(nb, *, info: PageInfo) -> str:
    parts = graded_parts(nb)
    body = "\n".join(_cell(cell) for cell in nb.cells)
    return _PAGE.format(title=html.escape(f"Devolución · {info.assignment} · {info.student}"),
                        css=_CSS + _FORMATTER.get_style_defs(".code"), header=_header(info, parts), body=body)


def graded_parts(nb) -> list[Part]:
    """Every cell that carries points (test cells, and manually graded answers), in notebook order."""
    parts = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") or meta.get("task"):
            score = meta.get("score")
            parts.append(Part(meta.get("grade_id", ""), None if score is None else float(score),
                              float(meta.get("points", 0) or 0)))
    return parts


def _header(info: PageInfo, parts: list[Part]) -> str:
    rows = "\n".join(
        f'<tr class="{_state(p)}"><td><a href="#parte-{html.escape(p.grade_id)}">{html.escape(p.grade_id)}</a></td>'
        f"<td>{_points(p.score)} de {p.points:g}</td></tr>" for p in parts)
    late = (f'<p class="late">Penalización por entrega tardía: −{info.late_penalty:g} puntos '
            "(ya descontada del total).</p>" if info.late_penalty else "")
    return f"""<header>
<p class="course">{html.escape(info.course)}</p>
<h1>Devolución de {html.escape(info.assignment)}</h1>
<p class="student">Estudiante: <strong>{html.escape(info.student)}</strong></p>
<p class="total">Puntaje: <strong>{info.score:g}</strong> de {info.max_score:g}</p>
{late}
<table class="parts"><thead><tr><th>Parte</th><th>Puntos</th></tr></thead>
<tbody>
{rows}
</tbody></table>
<p class="note">Abajo está tu notebook tal como se corrigió: tu código, lo que imprimió cada celda al ejecutarse
en el corrector y, en cada parte calificada, el resultado de sus comprobaciones. De las comprobaciones ocultas
mostramos solo el título y si se superaron.</p>
</header>"""


def _state(part: Part) -> str:
    if part.score is None:
        return "pending"
    if part.score >= part.points - 1e-9:
        return "full"
    return "partial" if part.score > 0 else "zero"


def _points(score: float | None) -> str:
    return "pendiente" if score is None else f"{score:g}"


def _cell(cell) -> str:
    if cell.cell_type == "markdown":
        return f'<section class="markdown">{markdown_to_html(cell_source(cell))}</section>'
    if cell.cell_type != "code":
        return ""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    if is_test_cell_metadata(cell):
        return _test_cell(cell, meta)
    source = cell_source(cell)
    code = _highlighted(source) if len(source) <= CACHED_CHARS else _highlight(source)
    comment = meta.get("comment")
    if comment == NBGRADER_NO_RESPONSE:
        comment_html = '<aside class="comment untouched">Esta celda quedó igual que en el enunciado.</aside>'
    elif comment:
        comment_html = (f'<aside class="comment"><strong>Comentario del equipo docente:</strong> '
                        f"{markdown_to_html(comment)}</aside>")
    else:
        comment_html = ""
    return f'<section class="code-cell">{code}{_outputs(cell.get("outputs", []))}{comment_html}</section>'


def _highlight(source: str) -> str:
    """A code cell as highlighted HTML."""
    return highlight(source, PythonLexer(), _FORMATTER) if source.strip() else ""


_highlighted = functools.lru_cache(maxsize=4096)(_highlight)  # a class's pages share most of the notebook's code


def _test_cell(cell, meta: dict) -> str:
    grade_id = meta.get("grade_id", "")
    part = Part(grade_id, None if meta.get("score") is None else float(meta["score"]), float(meta.get("points", 0)))
    reports = [o for o in cell.get("outputs", []) if o.get("output_type") == "display_data"
               and "text/markdown" in o.get("data", {})]
    report = "".join(markdown_to_html(_without_heading(_text(o["data"]["text/markdown"]))) for o in reports) \
        or "<p>Esta parte no tiene resultado todavía.</p>"
    return (f'<section class="part {_state(part)}" id="parte-{html.escape(grade_id)}">'
            f'<h2>Parte «{html.escape(grade_id)}»: {_points(part.score)} de {part.points:g} puntos</h2>'
            f"{report}</section>")


def _without_heading(report: str) -> str:
    """The part's report without its first line (the score, which the section's title already shows)."""
    first, _, rest = report.partition("\n")
    return rest if first.startswith("**Parte «") else report


def _outputs(outputs: list) -> str:
    shown = []
    for output in outputs:
        kind = output.get("output_type")
        if kind == "stream":
            shown.append(f'<pre class="stream {html.escape(output.get("name", ""))}">'
                         f"{html.escape(_clip(_text(output.get('text', ''))))}</pre>")
        elif kind == "error":
            trace = "\n".join(output.get("traceback") or [])
            shown.append(f'<pre class="error"><strong>{html.escape(output.get("ename", ""))}</strong>: '
                         f'{html.escape(_clip(output.get("evalue", "")))}'
                         + (f"\n{html.escape(_clip(trace))}" if trace else "") + "</pre>")
        elif kind in ("execute_result", "display_data") and "text/plain" in output.get("data", {}):
            shown.append(f'<pre class="result">{html.escape(_clip(_text(output["data"]["text/plain"])))}</pre>')
    return "".join(shown)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _clip(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return text[:MAX_OUTPUT_CHARS] + f"\n[… {len(text) - MAX_OUTPUT_CHARS} caracteres más omitidos]"


_PAGE = """<!DOCTYPE html>
<html lang="es">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; base-uri 'none'">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
{header}
{body}
<footer>Generado por el corrector del curso. Si algo no se entiende, pregunta en el foro del curso.</footer>
</main>
</body>
</html>
"""

_CSS = """
body { margin: 0; background: #f4f5f7; color: #1f2328; font: 16px/1.55 system-ui, -apple-system, "Segoe UI",
  Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 960px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; min-height: 100vh; }
header { border-bottom: 2px solid #d0d7de; margin-bottom: 24px; padding-bottom: 12px; }
.course { color: #57606a; margin: 0; font-size: 14px; }
h1 { margin: 4px 0 8px; font-size: 28px; }
.total { font-size: 22px; margin: 6px 0 12px; }
.late { color: #9a6700; }
table.parts { border-collapse: collapse; min-width: 320px; margin: 8px 0; }
table.parts th, table.parts td { border: 1px solid #d0d7de; padding: 4px 12px; text-align: left; }
table.parts tr.full td:last-child { color: #1a7f37; font-weight: 600; }
table.parts tr.partial td:last-child { color: #9a6700; font-weight: 600; }
table.parts tr.zero td:last-child { color: #cf222e; font-weight: 600; }
.note { color: #57606a; font-size: 14px; }
section { margin: 12px 0; }
.markdown table { border-collapse: collapse; }
.markdown th, .markdown td { border: 1px solid #d0d7de; padding: 3px 8px; }
.code-cell .code { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 2px 12px;
  overflow-x: auto; }
.code-cell .code pre { margin: 8px 0; font-size: 14px; }
pre.stream, pre.result, pre.error { margin: 4px 0 0; padding: 6px 12px; border-left: 3px solid #8c959f;
  white-space: pre-wrap; word-break: break-word; font-size: 13.5px; }
pre.error { border-left-color: #cf222e; background: #fff5f5; }
.part { border: 2px solid #8c959f; border-radius: 8px; padding: 4px 16px 8px; }
.part h2 { font-size: 19px; margin: 8px 0; }
.part.full { border-color: #1a7f37; background: #f3fbf5; }
.part.partial { border-color: #bf8700; background: #fffbea; }
.part.zero { border-color: #cf222e; background: #fff5f5; }
.comment { border-left: 4px solid #0969da; background: #f0f6ff; padding: 4px 12px; margin-top: 6px; }
.comment.untouched { border-left-color: #8c959f; background: #f6f8fa; color: #57606a; font-size: 14px; }
code { background: #eff1f3; padding: 0 4px; border-radius: 4px; font-size: 90%; }
math[display="block"] { margin: 8px 0; }
footer { margin-top: 32px; color: #57606a; font-size: 13px; border-top: 1px solid #d0d7de; padding-top: 8px; }
"""
