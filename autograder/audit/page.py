"""The audit's report: a terminal table with the survivors' diffs, and a self-contained HTML page."""

from __future__ import annotations

import html
from pathlib import Path

from ..grading.store import atomic_write
from .run import AuditReport, PartTally, Verdict

COLUMNS = ("part", "candidates", "mutants", "killed (public)", "killed (hidden)", "equivalent", "survived", "other",
           "kill rate")


def _row(tally: PartTally) -> list[str]:
    rate = "-" if tally.score is None else f"{100 * tally.score:.0f}%"
    return [tally.grade_id, str(tally.candidates), str(tally.mutants), str(tally.killed_public),
            str(tally.killed_hidden), str(tally.equivalent), str(tally.survived), str(tally.other), rate]


def format_audit(report: AuditReport) -> str:
    """The table per grade cell and overall, then every survivor with its diff."""
    rows = [_row(t) for t in report.parts] + [_row(report.total)]
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in rows)) for i in range(len(COLUMNS))]

    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"Mutation audit of {report.assignment} (seed {report.seed}, "
           f"cap {report.max_mutants if report.max_mutants is not None else 'none'}, {report.seconds:.0f}s)", "",
           line(COLUMNS), line(["-" * w for w in widths])]
    out += [line(r) for r in rows[:-1]] + [line(["-" * w for w in widths]), line(rows[-1])]
    lost = [g for g, (score, most) in report.baseline.items() if score < most]
    if lost:
        out.append(f"\nWARNING: the unchanged solution loses points in {', '.join(lost)}; "
                   "their mutants count as 'other'.")
    for note in report.skipped_cells:
        out.append(f"skipped: {note}")
    survivors = report.survivors()
    out.append("")
    out.append(f"{len(survivors)} survivor(s)" + (":" if survivors else "."))
    for verdict in survivors:
        out.append("")
        out.append(_title(verdict))
        out.append(verdict.mutant.diff)
    others = [v for v in report.verdicts if v.verdict == "other"]
    if others:
        out.append("")
        out.append(f"{len(others)} mutant(s) without a verdict:")
        out += [f"  {v.mutant.id} {v.mutant.part}: {v.reason}" for v in others]
    if report.stale_equivalents:
        out.append("")
        out.append(f"{report.equivalents_file.name}: ids not among this run's mutants, or killed: "
                   f"{', '.join(report.stale_equivalents)}")
    out.append("")
    out.append(f"report: {report.out_dir / 'audit.html'}, {report.out_dir / 'audit.json'}; "
               f"mark equivalent mutants in {report.equivalents_file}")
    return "\n".join(out)


def _title(verdict: Verdict) -> str:
    m = verdict.mutant
    return f"[{m.id}] {m.part} / {m.function}, line {m.line}: {m.operator}: {m.description}"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.total td { font-weight: bold; border-top: 2px solid #888; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; font-size: 90%; }
pre span { display: block; min-height: 1.2em; }
.add { background: #e6ffec; } .del { background: #ffebe9; } .hunk { color: #888; }
.survived { color: #b00; } .killed { color: #070; } .equivalent { color: #666; } .other { color: #a60; }
details { margin: .4em 0; } summary { cursor: pointer; }
code { background: #f0f0f0; padding: 0 .2em; }
"""


def _diff_html(diff: str) -> str:
    lines = []
    for text in diff.splitlines():
        cls = ("hunk" if text.startswith(("@@", "---", "+++")) else "add" if text.startswith("+")
               else "del" if text.startswith("-") else "")
        lines.append(f'<span class="{cls}">{html.escape(text)}</span>' if cls else f"<span>{html.escape(text)}</span>")
    return "<pre>" + "".join(lines) + "</pre>"  # one block per line


def _mutant_html(verdict: Verdict, *, open_: bool = False) -> str:
    m = verdict.mutant
    detail = ""
    if verdict.verdict == "killed":
        checks = ", ".join(f"<code>{html.escape(f.check)}</code> ({'hidden' if f.hidden else 'public'})"
                           for f in verdict.failed) or "(no check entry failed)"
        detail = f"<p>Killed by {html.escape(verdict.killed_by or '')}: {checks}</p>"
    elif verdict.reason:
        detail = f"<p>{html.escape(verdict.reason)}</p>"
    if verdict.other_parts:
        detail += f"<p>Other parts that lost points: {html.escape(', '.join(verdict.other_parts))}</p>"
    summary = (f'<span class="{verdict.verdict}">{verdict.verdict}</span> <code>{m.id}</code> '
               f"{html.escape(m.function)}, line {m.line}: {html.escape(m.operator)}: {html.escape(m.description)}")
    return f"<details{' open' if open_ else ''}><summary>{summary}</summary>{detail}{_diff_html(m.diff)}</details>"


def render_page(report: AuditReport) -> str:
    """A self-contained HTML page (inline CSS, no scripts, every piece of code escaped)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _row(t)) + "</tr>" for t in report.parts)
    body += '<tr class="total">' + "".join(f"<td>{html.escape(c)}</td>" for c in _row(report.total)) + "</tr>"
    parts = []
    for tally in report.parts:
        verdicts = [v for v in report.verdicts if v.mutant.part == tally.grade_id]
        survivors = [_mutant_html(v, open_=True) for v in verdicts if v.verdict == "survived"]
        rest = [_mutant_html(v) for v in verdicts if v.verdict != "survived"]
        names = ", ".join(f"<code>{html.escape(n)}</code>" for n in tally.definitions) or "no definitions"
        parts.append(f"<h2 id=\"{html.escape(tally.grade_id)}\">{html.escape(tally.grade_id)}</h2>"
                     f"<p>Mutated: {names}. {tally.mutants} of {tally.candidates} candidate mutants graded.</p>"
                     + ("<h3>Survivors</h3>" + "".join(survivors) if survivors else "<p>No survivors.</p>")
                     + (f"<details><summary>The other {len(rest)} mutants</summary>{''.join(rest)}</details>"
                        if rest else ""))
    notes = []
    lost = [g for g, (score, most) in report.baseline.items() if score < most]
    if lost:
        notes.append(f"The unchanged solution loses points in {', '.join(lost)}; their mutants count as 'other'.")
    if report.stale_equivalents:
        notes.append(f"{report.equivalents_file.name} lists ids that are not among this run's mutants, or were "
                     f"killed: {', '.join(report.stale_equivalents)}.")
    notes += [f"Skipped: {s}" for s in report.skipped_cells]
    notes_html = "".join(f"<p><strong>{html.escape(n)}</strong></p>" for n in notes)
    title = f"Mutation audit of {report.assignment}"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Seed {report.seed}, cap {report.max_mutants if report.max_mutants is not None else 'none'}, "
            f"{report.seconds:.0f} s. A mutant is one small change to the solution's graded code; it is killed when "
            f"its part loses points. Equivalent mutants are listed in "
            f"<code>{html.escape(str(report.equivalents_file))}</code>.</p>{notes_html}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{''.join(parts)}</body></html>\n")


def write_page(report: AuditReport, path: Path) -> Path:
    atomic_write(path, render_page(report))
    return path
