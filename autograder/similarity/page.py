"""The similarity report as files and as a terminal table.

`similarity.html` is one self-contained page (inline CSS, no script, nothing fetched):
the summary, the table of reported pairs, then the code of the top pairs side by side,
part by part, as the students wrote it (escaped), matched lines highlighted.
`similarity.csv` has one row per reported pair and part (`all` first: the whole
submission), with the matched lines of each side.
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

from ..grading.store import atomic_write
from .report import PairMatch, PartMatch, SimilarityReport

CSV_FIELDS = ["rank", "student_a", "student_b", "part", "score", "matched_fingerprints", "fingerprints_a",
              "fingerprints_b", "lines_a", "lines_b"]
ALL = "all"


def write_report(report: SimilarityReport, out_dir: Path, *, show: int = 25) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"html": out_dir / "similarity.html", "csv": out_dir / "similarity.csv"}
    atomic_write(files["csv"], to_csv(report))
    atomic_write(files["html"], to_html(report, show=show))
    return files


def line_ranges(lines: dict[int, tuple[int, ...]]) -> str:
    """`{5: (1, 2, 3, 7)}` -> `cell 5: 1-3, 7` (cells as numbered in the notebook)."""
    out = []
    for cell, found in lines.items():
        spans, start, prev = [], None, None
        for line in found:
            if start is None:
                start = prev = line
            elif line == prev + 1:
                prev = line
            else:
                spans.append((start, prev))
                start = prev = line
        if start is not None:
            spans.append((start, prev))
        out.append(f"cell {cell}: " + ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans))
    return "; ".join(out)


def to_csv(report: SimilarityReport) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for rank, pair in enumerate(report.pairs, start=1):
        lines_a = _merge(p.lines_a for p in pair.parts)
        lines_b = _merge(p.lines_b for p in pair.parts)
        writer.writerow(_row(rank, pair, ALL, pair.score, pair.matched, pair.prints_a, pair.prints_b,
                             lines_a, lines_b))
        for part in pair.parts:
            writer.writerow(_row(rank, pair, part.part, part.score, part.matched, part.prints_a, part.prints_b,
                                 part.lines_a, part.lines_b))
    return buffer.getvalue()


def _merge(many) -> dict[int, tuple[int, ...]]:
    merged: dict[int, set[int]] = {}
    for lines in many:
        for cell, found in lines.items():
            merged.setdefault(cell, set()).update(found)
    return {cell: tuple(sorted(found)) for cell, found in sorted(merged.items())}


def _row(rank, pair: PairMatch, part, score, matched, prints_a, prints_b, lines_a, lines_b) -> dict:
    return {"rank": rank, "student_a": pair.student_a, "student_b": pair.student_b, "part": part,
            "score": f"{score:.4f}", "matched_fingerprints": matched, "fingerprints_a": prints_a,
            "fingerprints_b": prints_b, "lines_a": line_ranges(lines_a), "lines_b": line_ranges(lines_b)}


def format_similarity(report: SimilarityReport, *, rows: int = 15) -> str:
    """The terminal summary: counts, then the most similar pairs."""
    n = len(report.students)
    lines = [
        f"{report.assignment}: {n} submissions compared"
        + (f", {len(report.unreadable)} unreadable" if report.unreadable else "")
        + (f", {len(report.without_code)} with no code beyond the release" if report.without_code else ""),
        f"pairs scored: {report.compared} of {report.possible} possible "
        f"({report.sharing} share a fingerprint, {report.settings.min_shared} needed); "
        f"{report.common} fingerprints ignored as common code (in more than {report.holders_limit} submissions); "
        f"{report.seconds:.1f} s",
    ]
    if not report.pairs:
        lines.append("no pair reaches the minimum score")
    else:
        width = max(12, *(len(name) for p in report.pairs[:rows] for name in (p.student_a, p.student_b)))
        lines.append(f"{'rank':>4}  {'score':>5}  {'shared':>6}  {'student A':<{width}}  {'student B':<{width}}  "
                     "most shared parts")
        for rank, pair in enumerate(report.pairs[:rows], start=1):
            parts = ", ".join(f"{p.part} {p.score:.0%}" for p in pair.parts[:3])
            lines.append(f"{rank:>4}  {pair.score:>5.0%}  {pair.matched:>6}  {pair.student_a:<{width}}  "
                         f"{pair.student_b:<{width}}  {parts}")
        if len(report.pairs) > rows:
            lines.append(f"... {len(report.pairs) - rows} more pairs in the report")
    for name, path in report.files.items():
        lines.append(f"wrote {path}")
    return "\n".join(lines)


_CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d2329; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p.note { color: #555; max-width: 980px; }
table.pairs { border-collapse: collapse; margin: 8px 0; }
table.pairs th, table.pairs td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }
table.pairs th { background: #f3f5f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.bar { display: inline-block; height: 9px; background: #d9534f; vertical-align: middle; margin-right: 6px; }
section.pair { border-top: 2px solid #ccd3da; margin-top: 24px; }
.side { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.col h4 { margin: 4px 0; font-size: 13px; }
.cell { font-size: 11px; color: #777; margin: 6px 0 2px; }
pre.code { margin: 0; background: #fafbfc; border: 1px solid #e1e4e8; overflow-x: auto;
           font: 12px/1.45 ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
pre.code span.l { display: block; padding: 0 6px; white-space: pre; }
pre.code span.l:before { content: attr(data-n); display: inline-block; width: 2.6em; color: #9aa3ab; }
pre.code span.hit { background: #fff1a8; }
ul.plain { margin: 4px 0; }
a { color: #0b5cad; }
"""


def to_html(report: SimilarityReport, *, show: int = 25) -> str:
    e = html.escape
    n = len(report.students)
    out = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Similarity: {e(report.assignment)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>Similarity of the graded code: {e(report.assignment)}</h1>",
        f"<p>{n} submissions; {report.compared} pairs shared at least {report.settings.min_shared} fingerprints "
        f"and were scored (of {report.possible} possible pairs; {report.sharing} shared at least one). "
        f"{report.common} fingerprints were ignored as common code (found in more than {report.holders_limit} "
        f"submissions: a copy shared by more students than that is not found; raise --max-holders). "
        f"k = {report.settings.k} tokens, window = {report.settings.window}.</p>",
        '<p class="note">The score is the share of fingerprints two submissions have in common (Jaccard index) after '
        "normalisation: names the student chose, comments, docstrings, formatting and the order of independent "
        "statements are ignored, and so is every piece of code the release already gives. A high score says the "
        "code is alike, not that it was copied: read the code below before deciding anything.</p>",
    ]
    if report.pairs:
        out.append("<h2>Most similar pairs</h2>")
        out.append('<table class="pairs"><tr><th>#</th><th>Student A</th><th>Student B</th><th>Score</th>'
                   "<th>Shared</th><th>Parts (score)</th></tr>")
        for rank, pair in enumerate(report.pairs, start=1):
            name = f'<a href="#pair-{rank}">{rank}</a>' if rank <= show else str(rank)
            parts = ", ".join(f"{e(p.part)} {p.score:.0%}" for p in pair.parts)
            out.append(f"<tr><td>{name}</td><td>{e(pair.student_a)}</td><td>{e(pair.student_b)}</td>"
                       f'<td class="num"><span class="bar" style="width:{round(60 * pair.score)}px"></span>'
                       f"{pair.score:.0%}</td><td class=\"num\">{pair.matched}</td><td>{parts}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p>No pair reaches the minimum score.</p>")
    if report.unreadable:
        out.append("<h2>Not compared</h2><ul class=\"plain\">")
        out += [f"<li>{e(s)}: {e(why)}</li>" for s, why in sorted(report.unreadable.items())]
        out.append("</ul>")
    if report.without_code:
        out.append(f"<p>No code beyond the release ({len(report.without_code)}): "
                   f"{e(', '.join(report.without_code))}.</p>")
    for rank, pair in enumerate(report.pairs[:show], start=1):
        out.append(_pair_section(report, rank, pair))
    out.append("</body></html>")
    return "\n".join(out)


def _pair_section(report: SimilarityReport, rank: int, pair: PairMatch) -> str:
    e = html.escape
    out = [f'<section class="pair" id="pair-{rank}">',
           f"<h2>#{rank} {e(pair.student_a)} and {e(pair.student_b)}: {pair.score:.0%} "
           f"({pair.matched} shared fingerprints of {pair.prints_a} and {pair.prints_b})</h2>"]
    for part in pair.parts:
        out.append(f"<h3>{e(part.part)}: {part.score:.0%} ({part.matched} shared of {part.prints_a} and "
                   f"{part.prints_b})</h3>")
        out.append('<div class="side">')
        out.append(_column(report, pair.student_a, part, part.lines_a))
        out.append(_column(report, pair.student_b, part, part.lines_b))
        out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


def _column(report: SimilarityReport, student: str, part: PartMatch, hits: dict[int, tuple[int, ...]]) -> str:
    e = html.escape
    out = [f'<div class="col"><h4>{e(student)}</h4>']
    for cell in report.students[student].cells.get(part.part, []):
        lit = set(hits.get(cell.position, ()))
        out.append(f'<div class="cell">cell {cell.position}</div><pre class="code">')
        for number, line in enumerate(cell.source.split("\n"), start=1):
            css = "l hit" if number in lit else "l"
            out.append(f'<span class="{css}" data-n="{number}">{e(line) or " "}</span>')
        out.append("</pre>")
    out.append("</div>")
    return "".join(out)
