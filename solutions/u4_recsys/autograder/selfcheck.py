"""Public checks from inside the student's notebook.

The released notebook's setup cell does

    from autograder.selfcheck import make_check
    check = make_check("u1_backprop")

and each test cell calls `check("<grade cell id>")`. That runs the public check
files shipped next to the notebook (the same files that grade) with pytest, against
the notebook's own globals, and prints a summary in Spanish. It never raises, so
"Run all" reaches every part. While grading (AUTOGRADER_GRADING=1) it does nothing:
there the checks run in a separate process.

This module is imported inside the grading worker too, so it imports nothing heavy
at module level.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
MARKS = {"passed": "✔", "failed": "✘", "skipped": "–"}


def make_check(assignment: str) -> Callable[[str], None]:
    """The `check(grade_id)` function for one assignment's notebook."""

    def check(grade_id: str) -> None:
        if os.environ.get("AUTOGRADER_GRADING") == "1":
            return
        namespace = sys._getframe(1).f_globals
        show(run_public_checks(assignment, grade_id, namespace))

    return check


def show(report: str) -> None:
    """Markdown in a notebook (LaTeX and code rendered), plain text anywhere else."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:
        print(report)
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        display(Markdown(report))
    else:
        print(report)


def run_public_checks(assignment: str, grade_id: str, namespace: dict) -> str:
    """Run the public checks of one grade cell against `namespace`; returns the report."""
    try:
        import pytest  # noqa: F401  (the checks run under it: say so now if it is missing)
        import torch
    except ImportError as exc:
        return f"No se pueden ejecutar las comprobaciones: falta el paquete `{exc.name}` (instálalo con pip)."
    from .plugin import CheckRun, run_args, run_pytest
    from .remote import Client, LocalTransport, StudentNamespace
    from .rules import RuleWatch

    checks_dir = HERE / "checks" / assignment
    files = sorted(str(p) for p in checks_dir.glob("test_*.py"))
    if not files:
        return (f"No se encontraron las comprobaciones de `{assignment}` en {checks_dir}. Si instalaste el paquete "
                "del curso para otra unidad, reinstálalo para traer esta: `pip install --force-reinstall` con la "
                "dirección que muestra la primera celda del notebook.")
    watch = RuleWatch(cells=executed_cells(namespace))
    client = Client(LocalTransport(namespace), watch=watch)
    run = CheckRun(lambda: StudentNamespace(client), watch=watch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as grading does: small operations on a busy laptop are far faster on one thread
    try:
        run_pytest(run_args(files, str(checks_dir), extra=["--ag-public-only", "--ag-grade-id", grade_id]),
                   plugins=[run])
    finally:
        torch.set_num_threads(threads)
    return format_report(grade_id, run, points=_points(checks_dir).get(grade_id))


def executed_cells(namespace: dict) -> list[tuple[str, str]]:
    """The cells this kernel ran, in order, as IPython keeps them (`In`, already turned into Python)."""
    history = namespace.get("In")
    if not isinstance(history, list):
        return []
    return [(f"celda [{n}]", source) for n, source in enumerate(history) if isinstance(source, str) and source]


def _points(checks_dir: Path) -> dict:
    try:
        return json.loads((checks_dir / "points.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def format_report(grade_id: str, run, *, points: dict | None) -> str:
    """The report as Markdown: one line per check with its device cases, failures indented below."""
    from .plugin import check_score
    from .rules import RAN

    if run.errors:
        return "No se pudieron cargar las comprobaciones:\n\n" + "\n".join(f"    {e}" for e in run.errors)
    if not run.outcomes:
        return f"No hay comprobaciones públicas para «{grade_id}»."
    lines = [f"**Comprobaciones públicas de «{grade_id}»**", ""]
    earned = total = 0.0
    checks: dict[str, list] = {}
    for outcome in run.outcomes:
        checks.setdefault(outcome.check, []).append(outcome)
    for cases in checks.values():
        ran = [c for c in cases if c.outcome != "skipped"]
        passed = bool(ran) and all(c.outcome == "passed" for c in ran)
        devices = " · ".join(f"{c.device} {MARKS[c.outcome]}" for c in cases)
        lines.append(f"- {MARKS['passed' if passed else 'failed']} {cases[0].title} ({devices})")
        for case in cases:
            if case.outcome == "failed":
                lines += [f"    - {line}" for line in case.message.splitlines()]
        earned += check_score(cases[0].points, cases)
        total += cases[0].points
    broken = False
    for verdict in run.verdicts:
        mark = {"passed": MARKS["passed"], "violated": MARKS["failed"]}.get(verdict.status, MARKS["skipped"])
        lines.append(f"- {mark} {verdict.rule.title}")
        lines += [f"    {line}" if line else "" for line in verdict.message().splitlines()]
        broken = broken or verdict.violated
    if broken:
        earned = 0.0
        if any(e.how != RAN for v in run.verdicts for e in v.evidence):
            lines += ["", "(Se lee el código de todas las celdas que ejecutaste en esta sesión: si ya lo corregiste, "
                          "reinicia el kernel y vuelve a ejecutar todo.)"]
    lines += ["", f"Puntos de estas comprobaciones públicas: **{earned:g} de {total:g}**."]
    if points and points["points"] > points["public"]:
        hidden = points["points"] - points["public"]
        lines.append(f"Al corregir se suman comprobaciones ocultas que valen {hidden:g} punto(s) más.")
    skipped = {c.message for c in run.outcomes if c.outcome == "skipped"}
    lines += [f"(Casos omitidos: {reason}.)" for reason in sorted(skipped)]
    return "\n".join(lines)
