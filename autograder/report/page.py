"""The class report as one self-contained HTML page (English for staff; student text as written).

Everything is inline: CSS in a <style> element, figures as <svg>, no scripts and no
external resources, so the page opens offline from the file system. Every piece of text
from a result file goes through `html.escape`; links are relative and already quoted.
"""

from __future__ import annotations

import statistics
from html import escape

from .collect import CheckSummary, ClassSummary, StudentRow
from .plots import parts_chart, score_histogram, time_histogram

DASH = "—"
OPEN_CELL_ERRORS = 40  # the cell-error list starts folded when it is longer

CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #dde2e8; --bg: #f5f7fa; --blue: #3b6ea8;
        --orange: #d9822b; --red: #c23b3b; --green: #2f8f5b; --yellow: #fff4d6; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: var(--bg); }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
p.meta { color: var(--muted); margin: 0 0 4px; }
p.note { color: var(--muted); margin: 4px 0 10px; }
a { color: var(--blue); }
nav.toc { margin: 10px 0 0; }
nav.toc a { display: inline-block; margin: 0 6px 4px 0; padding: 2px 10px; border: 1px solid var(--line);
            border-radius: 12px; background: #fff; text-decoration: none; font-size: 13px; }
code { font: 12px/1.3 ui-monospace, "DejaVu Sans Mono", monospace; background: #eef1f5; padding: 1px 4px;
       border-radius: 3px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 12px; margin: 18px 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 24px; font-weight: 600; margin-top: 2px; }
.card .sub { color: var(--muted); font-size: 12.5px; }
.card.warn { border-color: var(--orange); background: var(--yellow); }
.alerts { list-style: none; padding: 0; margin: 12px 0; }
.alerts li { background: var(--yellow); border-left: 4px solid var(--orange); padding: 8px 12px; margin: 6px 0;
             border-radius: 4px; }
.alerts li.bad { background: #fde8e8; border-left-color: var(--red); }
.plots { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.plot { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px; }
.plot.wide { grid-column: 1 / -1; }
.plot svg { width: 100%; height: auto; display: block; }
.plot .empty { color: var(--muted); padding: 24px; text-align: center; }
.table-wrap { overflow-x: auto; background: #fff; border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef1f5; font-size: 12.5px; color: #3e4c59; position: sticky; top: 0; white-space: nowrap; }
tbody tr:hover { background: #f8fafc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.problem { background: #fff8ec; }
tr.group td { background: #f3f5f8; font-weight: 600; }
td.files { white-space: nowrap; }
table.heat td.num { text-align: center; }
table.heat th.num { text-align: center; }
.bar { display: inline-block; width: 70px; height: 8px; background: #e6e9ee; border-radius: 4px;
       vertical-align: middle; margin-left: 6px; overflow: hidden; }
.bar span { display: block; height: 100%; background: var(--blue); }
.bar.fail span { background: var(--red); }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; white-space: nowrap;
         background: #e6e9ee; color: #3e4c59; margin: 1px 2px 1px 0; }
.badge.graded { background: #e3f4ea; color: var(--green); }
.badge.invalid, .badge.warn { background: var(--yellow); color: #8a5a00; }
.badge.error, .badge.bad { background: #fde8e8; color: var(--red); }
.badge.hidden { background: #ece8f6; color: #5b3f99; }
ul.msgs { margin: 0; padding-left: 16px; }
ul.msgs li { margin: 2px 0; }
.count { color: var(--muted); font-variant-numeric: tabular-nums; }
.muted { color: var(--muted); }
pre { white-space: pre-wrap; margin: 4px 0; font: 12px/1.35 ui-monospace, "DejaVu Sans Mono", monospace; }
details summary { cursor: pointer; color: var(--blue); }
footer { margin-top: 36px; color: var(--muted); font-size: 12.5px; }
@media (max-width: 900px) { .plots { grid-template-columns: 1fr; } }
"""


def render(summary: ClassSummary, *, grader_version: str = "") -> str:
    """The report page for `summary`."""
    title = f"Class report: {summary.assignment}"
    body = [f"<h1>{escape(title)}</h1>", _meta(summary)]
    if not summary.students:
        body.append(f'<ul class="alerts"><li class="bad">No result files in <code>{escape(str(summary.out_dir))}'
                    "</code>: nothing was graded into this folder yet.</li></ul>")
    else:
        body += [_nav(summary), _cards(summary), _alerts(summary), _plots(summary), _parts(summary),
                 _checks(summary), _students(summary), _problems(summary), _cell_errors(summary)]
    body.append(f"<footer>Written by the Datitos autograder{' ' + escape(grader_version) if grader_version else ''}"
                " from the result files in this folder. Hidden checks are included: this page is for course "
                "staff only; do not publish it.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(part for part in body if part) + "\n</main>\n</body>\n</html>\n")


# -- pieces -----------------------------------------------------------------------------------

def _meta(summary: ClassSummary) -> str:
    links = []
    if (summary.out_dir / "gradebook.csv").is_file():
        links.append('<a href="gradebook.csv">gradebook.csv</a>')
    if summary.similarity_href:
        links.append(f'<a href="{escape(summary.similarity_href)}">similarity report</a>')
    skipped = len(summary.skipped_files)
    text = (f"{len(summary.students)} result file{_s(len(summary.students))} in "
            f"<code>{escape(str(summary.out_dir))}</code>"
            + (f"; {skipped} other JSON file{_s(skipped)} skipped" if skipped else "") + ".")
    return f'<p class="meta">{text}</p>' + (f'<p class="meta">See also: {" · ".join(links)}</p>' if links else "")


def _nav(summary: ClassSummary) -> str:
    sections = [("distribution", "Distribution"), ("parts", "Graded parts"), ("checks", "Checks"),
                ("students", "Students"), ("points-per-part", "Points per part")]
    if any(s.status != "graded" for s in summary.students):
        sections.append(("problems", "Not graded"))
    sections.append(("cell-errors", "Cell errors"))
    return '<nav class="toc">' + " ".join(f'<a href="#{key}">{escape(text)}</a>' for key, text in sections) + "</nav>"


def _cards(summary: ClassSummary) -> str:
    students, scores, seconds = summary.students, summary.scores, summary.seconds
    top = summary.max_score
    mean = statistics.fmean(scores) if scores else None
    median = statistics.median(scores) if scores else None
    full = sum(1 for s in students if s.fraction is not None and s.fraction >= 1 - 1e-9)
    statuses = ", ".join(f"{summary.count(st)} {st}" for st in dict.fromkeys(s.status for s in students))
    cell_errors = sum(s.cell_errors + s.cell_crashes for s in students)
    restarts = sum(s.restarts for s in students)
    timeouts = sum(s.timeouts for s in students)
    missing = [s for s in students if s.missing_layers]
    cuda = [s for s in students if s.cuda_skipped]
    cards = [
        _card("Submissions", str(len(students)), statuses),
        _card("Mean score", _num(mean, ".1f"), f"of {_num(top, 'g')}" + (f" ({_pct(mean / top)})" if mean is not None
                                                                          and top else "")),
        _card("Median score", _num(median, "g"),
              f"min {_num(min(scores) if scores else None, 'g')}, max {_num(max(scores) if scores else None, 'g')}"),
        _card("Full marks", str(full), f"{_pct(full / len(students))} of submissions"),
        _card("Time per submission", _num(statistics.median(seconds) if seconds else None, ".1f", " s"),
              f"median; max {_num(max(seconds) if seconds else None, '.1f', ' s')}, "
              f"total {_num(sum(seconds) if seconds else None, '.0f', ' s')}"),
        _card("Cell errors", str(cell_errors),
              f"in {sum(1 for s in students if s.cell_errors + s.cell_crashes)} submission(s)"),
        _card("Timeouts", str(timeouts), "cells and check cases that ran out of time", warn=timeouts > 0),
        _card("Worker restarts", str(restarts), f"in {sum(1 for s in students if s.restarts)} submission(s)"),
        _card("Sandbox", "missing layers" if missing else "all layers",
              f"in {len(missing)} submission(s)" if missing else "in force for every submission", warn=bool(missing)),
        _card("cuda cases", "skipped" if cuda else "ran", f"skipped in {len(cuda)} submission(s)" if cuda
              else "no cuda case was skipped", warn=bool(cuda)),
    ]
    return '<div class="cards">' + "".join(cards) + "</div>"


def _card(label: str, value: str, sub: str, *, warn: bool = False) -> str:
    return (f'<div class="card{" warn" if warn else ""}"><div class="label">{escape(label)}</div>'
            f'<div class="value">{escape(value)}</div><div class="sub">{escape(sub)}</div></div>')


def _alerts(summary: ClassSummary) -> str:
    items = []
    missing = [s for s in summary.students if s.missing_layers]
    if missing:
        layers = sorted({layer for s in missing for layer in s.missing_layers})
        items.append(("bad", f"{len(missing)} submission(s) graded with missing sandbox layers "
                             f"({', '.join(layers)}): {', '.join(s.student for s in missing)}. "
                             "Run `autograder doctor` on the grading machine."))
    errors = [s for s in summary.students if s.status == "error"]
    if errors:
        items.append(("bad", f"{len(errors)} submission(s) hit a grader error and scored 0 through no fault of "
                             f"their own; grade them again: {', '.join(s.student for s in errors)}."))
    invalid = [s for s in summary.students if s.status == "invalid"]
    if invalid:
        items.append(("", f"{len(invalid)} submission(s) could not be read as a notebook: "
                          f"{', '.join(s.student for s in invalid)}."))
    cuda = [s for s in summary.students if s.cuda_skipped]
    if cuda:
        items.append(("", f"cuda cases were skipped (no GPU) in {len(cuda)} submission(s); their checks' points "
                          "went to the cases that ran."))
    if not items:
        return ""
    return '<ul class="alerts">' + "".join(f'<li class="{kind}">{escape(text)}</li>' for kind, text in items) + "</ul>"


def _plots(summary: ClassSummary) -> str:
    scores = score_histogram(summary.scores, max_score=summary.max_score)
    times = time_histogram(summary.seconds)
    parts = parts_chart([(p.grade_id, p.mean_fraction, p.full_marks_share) for p in summary.parts])
    return ('<h2 id="distribution">Distribution</h2><div class="plots">'
            + _plot(scores, "No scores to plot.") + _plot(times, "No grading times recorded.")
            + _plot(parts, "No graded parts.", wide=True) + "</div>")


def _plot(svg: str | None, empty: str, *, wide: bool = False) -> str:
    inner = svg if svg is not None else f'<div class="empty">{escape(empty)}</div>'
    return f'<div class="plot{" wide" if wide else ""}">{inner}</div>'


def _parts(summary: ClassSummary) -> str:
    rows = []
    for part in summary.parts:
        rows.append(
            f'<tr id="part-{escape(part.grade_id)}"><td><code>{escape(part.grade_id)}</code></td>'
            f'<td class="num">{_num(part.max_score, "g")}</td>'
            f'<td class="num">{_num(part.mean, ".2f")}</td>'
            f'<td class="num">{_pct(part.mean_fraction)}{_bar(part.mean_fraction)}</td>'
            f'<td class="num">{part.full_marks} of {len(part.scores)}</td>'
            f'<td class="num">{_pct(part.full_marks_share)}{_bar(part.full_marks_share)}</td></tr>')
    if not rows:
        return '<h2 id="parts">Graded parts</h2><p class="note">No graded parts in these results.</p>'
    return ('<h2 id="parts">Graded parts</h2>'
            '<p class="note">One row per nbgrader grade cell: mean points over the submissions, and how many '
            "got every point of the part.</p>"
            '<div class="table-wrap"><table id="parts-table"><thead><tr><th>Part (grade cell)</th>'
            '<th class="num">Points</th><th class="num">Mean points</th><th class="num">Mean %</th>'
            '<th class="num">Full marks</th><th class="num">Full marks %</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></div>")


def _checks(summary: ClassSummary) -> str:
    rows, group = [], None
    for check in summary.checks:
        if check.grade_id != group:
            group = check.grade_id
            rows.append(f'<tr class="group"><td colspan="6">Part <code>{escape(group)}</code></td></tr>')
        rows.append(_check_row(check))
    if not summary.checks:
        return '<h2 id="checks">Checks</h2><p class="note">No checks ran (no submission reached grading).</p>'
    return ('<h2 id="checks">Checks</h2>'
            '<p class="note">Every check and by-hand rule, hidden ones included, with its failure rate and the '
            "most common first line of its failure messages (students' messages are in Spanish, as they saw "
            "them; hidden checks' messages here may hold detail students do not see).</p>"
            '<div class="table-wrap"><table id="checks-table"><thead><tr><th>Check</th><th>Kind</th>'
            '<th class="num">Points</th><th class="num">Failed</th><th class="num">Failure rate</th>'
            "<th>Most common failure messages</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _check_row(check: CheckSummary) -> str:
    kind = ('<span class="badge">by-hand rule</span>' if check.rule else
            '<span class="badge hidden">hidden</span>' if check.hidden else '<span class="badge">public</span>')
    messages = "".join(f'<li><span class="count">{count}×</span> {escape(text)}</li>'
                       for text, count in check.common_messages())
    more = len(check.messages) - len(check.common_messages())
    if more > 0:
        messages += f'<li class="muted">{more} other message{_s(more)}</li>'
    listing = f'<ul class="msgs">{messages}</ul>' if messages else '<span class="muted">none</span>'
    return (f'<tr id="check-{escape(check.check)}"><td>{escape(check.name)}<br><code>{escape(check.check)}</code></td>'
            f"<td>{kind}</td><td class=\"num\">{_num(check.points, 'g')}</td>"
            f'<td class="num">{check.failures} of {check.runs}</td>'
            f'<td class="num">{_pct(check.failure_rate)}{_bar(check.failure_rate, fail=True)}</td>'
            f"<td>{listing}</td></tr>")


def _students(summary: ClassSummary) -> str:
    head = ('<th>Student</th><th class="num">Score</th><th class="num">%</th><th>Status</th>'
            '<th class="num">Time (s)</th><th class="num">Cell errors</th><th class="num">Timeouts</th>'
            '<th class="num">Restarts</th><th>Sandbox / devices</th><th>Files</th>')
    rows = "".join(_student_row(s) for s in summary.students)
    return ('<h2 id="students">Students</h2>'
            '<p class="note">One row per result file; highlighted rows need a look (not graded, timeouts, '
            "crashed cells or missing sandbox layers).</p>"
            f'<div class="table-wrap"><table id="students-table"><thead><tr>{head}</tr></thead><tbody>{rows}'
            "</tbody></table></div>" + _points_per_part(summary))


def _student_row(s: StudentRow) -> str:
    flags = [f'<span class="badge bad">missing: {escape(", ".join(s.missing_layers))}</span>'] if s.missing_layers \
        else []
    if s.cuda_skipped:
        flags.append(f'<span class="badge warn" title="checks whose cuda case was skipped">cuda skipped '
                     f"({s.cuda_skipped})</span>")
    if not flags:
        flags.append('<span class="muted">ok</span>')
    files = [f'<a href="{escape(s.result_href)}">result</a>']
    if s.feedback_href:
        files.append(f'<a href="{escape(s.feedback_href)}">feedback</a>')
    problem = s.status != "graded" or s.missing_layers or s.timeouts or s.cell_crashes
    highlight = ' class="problem"' if problem else ""
    status = escape(s.status)
    return (f'<tr id="student-{escape(s.student)}"{highlight}><td>{escape(s.student)}</td>'
            f'<td class="num">{_num(s.score, "g")} / {_num(s.max_score, "g")}</td>'
            f'<td class="num">{_pct(s.fraction)}</td><td><span class="badge {status}">{status}</span></td>'
            f'<td class="num">{_num(s.seconds, ".1f")}</td>'
            f'<td class="num">{s.cell_errors + s.cell_crashes}</td><td class="num">{s.timeouts}</td>'
            f'<td class="num">{s.restarts}</td><td>{"".join(flags)}</td>'
            f'<td class="files">{" · ".join(files)}</td></tr>')


def _points_per_part(summary: ClassSummary) -> str:
    """Student x part points, each cell shaded by its share of the part's points."""
    if not summary.parts:
        return ""
    head = "<th>Student</th>" + "".join(
        f'<th class="num"><code>{escape(p.grade_id)}</code><br><span class="muted">/ {_num(p.max_score, "g")}'
        "</span></th>" for p in summary.parts)
    rows = []
    for s in summary.students:
        cells = []
        for part in summary.parts:
            score = s.grade_cells.get(part.grade_id)
            fraction = None if score is None or not part.max_score else max(0.0, min(1.0, score / part.max_score))
            shade = "" if fraction is None else f' style="background:{_shade(fraction)}"'
            cells.append(f'<td class="num"{shade}>{_num(score, "g")}</td>')
        rows.append(f"<tr><td>{escape(s.student)}</td>{''.join(cells)}</tr>")
    return ('<h3 id="points-per-part">Points per part</h3>'
            '<div class="table-wrap"><table id="points-table" class="heat"><thead><tr>' + head
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _shade(fraction: float) -> str:
    """Red (no points) through yellow to green (every point), light enough to read text on."""
    if fraction < 0.5:
        a, b, t = (253, 226, 226), (255, 243, 205), fraction / 0.5
    else:
        a, b, t = (255, 243, 205), (220, 242, 228), (fraction - 0.5) / 0.5
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b))


def _problems(summary: ClassSummary) -> str:
    problems = [s for s in summary.students if s.status != "graded"]
    if not problems:
        return ""
    rows = []
    for s in problems:
        detail = (f"<details><summary>grader detail</summary><pre>{escape(s.detail)}</pre></details>"
                  if s.detail else "")
        rows.append(f'<tr><td>{escape(s.student)}</td><td><span class="badge {escape(s.status)}">{escape(s.status)}'
                    f"</span></td><td><pre>{escape(s.message) or DASH}</pre>{detail}</td></tr>")
    return ('<h2 id="problems">Submissions not graded</h2>'
            '<div class="table-wrap"><table id="problems-table"><thead><tr><th>Student</th><th>Status</th>'
            "<th>What the student was told</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _cell_errors(summary: ClassSummary) -> str:
    if not summary.cell_errors:
        return ('<h2 id="cell-errors">Cell errors</h2><p class="note">Every notebook cell ran without error.</p>')
    rows = "".join(
        f"<tr><td>{escape(e.student)}</td><td class=\"num\">{_num(e.index, 'd')}</td>"
        f'<td><span class="badge {"bad" if e.status != "error" else ""}">{escape(e.status)}</span></td>'
        f"<td><code>{escape(e.preview)}</code></td><td>{escape(e.text)}</td></tr>" for e in summary.cell_errors)
    n = len(summary.cell_errors)
    return ('<h2 id="cell-errors">Cell errors</h2>'
            f'<details{" open" if n <= OPEN_CELL_ERRORS else ""}><summary>{n} cell{_s(n)} failed to run '
            f"(error, timeout or crash)</summary>"
            '<div class="table-wrap"><table id="cell-errors-table"><thead><tr><th>Student</th>'
            '<th class="num">Cell</th><th>Status</th><th>Cell starts with</th><th>Error</th></tr></thead><tbody>'
            + rows + "</tbody></table></div></details>")


# -- formatting --------------------------------------------------------------------------------

def _num(value, spec: str, unit: str = "") -> str:
    return DASH if value is None else f"{value:{spec}}{unit}"


def _pct(fraction: float | None) -> str:
    return DASH if fraction is None else f"{100 * fraction:.0f}%"


def _bar(fraction: float | None, *, fail: bool = False) -> str:
    if fraction is None:
        return ""
    width = max(0.0, min(1.0, fraction)) * 100
    return f'<span class="bar{" fail" if fail else ""}"><span style="width:{width:.0f}%"></span></span>'


def _s(n: int) -> str:
    return "" if n == 1 else "s"
