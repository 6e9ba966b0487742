"""A result file as text for students (Spanish): for a terminal, and one graded part at a time.

Hidden checks never show more than their title and outcome: their output may describe
inputs the student must not learn, so it stays in the result file for the staff.
"""

from __future__ import annotations

MARK = {"passed": "✔", "failed": "✘"}


def format_feedback(result: dict, *, show_hidden: bool = False) -> str:
    lines = [result["output"], ""]
    parts: dict[str, list[dict]] = {}
    for test in result["tests"]:
        parts.setdefault(test["tags"][0] if test.get("tags") else "", []).append(test)
    for grade_id, tests in parts.items():
        visible = [t for t in tests if show_hidden or t["visibility"] == "visible"]
        if not visible:
            continue
        score = sum(t["score"] for t in visible)
        total = sum(t["max_score"] for t in visible)
        lines.append(f"Parte «{grade_id}»: {score:g} de {total:g} puntos")
        for test in visible:
            mark = MARK["passed"] if test["status"] == "passed" else MARK["failed"]
            lines.append(f"  {mark} {test['name']}")
            if test["status"] != "passed":
                lines += [f"      {line}" for line in test["output"].splitlines()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def part_score(result: dict, grade_id: str) -> tuple[float, float]:
    """(points earned, points possible) of one graded part; a part the result does not know is worth 0 of 0."""
    cell = result.get("extra_data", {}).get("grade_cells", {}).get(grade_id) or {}
    return float(cell.get("score", 0.0)), float(cell.get("max_score", 0.0))


def part_report(result: dict, grade_id: str) -> str:
    """The report of one graded part, in Markdown: public checks in detail, hidden checks by title and outcome."""
    score, total = part_score(result, grade_id)
    lines = [f"**Parte «{grade_id}»: {score:g} de {total:g} puntos.**", ""]
    status = result.get("extra_data", {}).get("status")
    tests = [t for t in result.get("tests", []) if (t.get("tags") or [""])[0] == grade_id]
    if status != "graded" or not tests:
        lines.append("Esta parte no se pudo corregir. El motivo está en el resumen de la entrega:")
        lines += ["", *[f"> {line}" for line in (result.get("output") or "").splitlines()]]
        return "\n".join(lines).rstrip() + "\n"
    public = [t for t in tests if t.get("visibility") == "visible"]
    hidden = [t for t in tests if t.get("visibility") != "visible"]
    if public:
        lines.append("Comprobaciones públicas (las mismas que corriste en tu notebook):")
        lines.append("")
        for test in public:
            lines.append(f"- {_mark(test)} {test['name']}")
            if test["status"] != "passed":
                lines += [f"    {line}" for line in test.get("output", "").splitlines()]
        lines.append("")
    if hidden:
        passed = sum(t["status"] == "passed" for t in hidden)
        lines.append(f"Comprobaciones ocultas: {passed} de {len(hidden)} superadas "
                     f"({sum(t['score'] for t in hidden):g} de {sum(t['max_score'] for t in hidden):g} puntos). "
                     "De estas solo mostramos el título y el resultado.")
        lines.append("")
        lines += [f"- {_mark(test)} {test['name']}" for test in hidden]
    return "\n".join(lines).rstrip() + "\n"


def _mark(test: dict) -> str:
    return MARK["passed"] if test.get("status") == "passed" else MARK["failed"]
