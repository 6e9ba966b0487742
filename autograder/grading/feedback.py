"""A result file as text for a terminal: what the student sees, grouped by graded part (Spanish)."""

from __future__ import annotations

MARK = {"passed": "✔", "failed": "✘", "skipped": "omitido"}


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
