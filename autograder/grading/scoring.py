"""How outcomes become points: per check (`plugin.check_score`), per grade cell, per submission."""

from __future__ import annotations

from dataclasses import dataclass

from ..plugin import CaseOutcome, check_score
from .checks import CheckInfo

NOT_RUN = "Esta comprobación no llegó a ejecutarse."


@dataclass
class CheckScore:
    info: CheckInfo
    score: float
    cases: list[CaseOutcome]

    @property
    def passed(self) -> bool:
        return self.score >= self.info.points - 1e-9


def score_checks(checks: list[CheckInfo], outcomes: list[CaseOutcome]) -> list[CheckScore]:
    """Every expected check with its score; a check without outcomes scores zero."""
    by_check: dict[str, list[CaseOutcome]] = {}
    for outcome in outcomes:
        by_check.setdefault(outcome.check, []).append(outcome)
    return [CheckScore(info, check_score(info.points, by_check.get(info.check, [])), by_check.get(info.check, []))
            for info in checks]


def grade_cell_scores(scores: list[CheckScore]) -> dict[str, dict[str, float]]:
    """Score and maximum per nbgrader grade cell."""
    cells: dict[str, dict[str, float]] = {}
    for s in scores:
        cell = cells.setdefault(s.info.grade_id, {"score": 0.0, "max_score": 0.0})
        cell["score"] = round(cell["score"] + s.score, 6)
        cell["max_score"] = round(cell["max_score"] + s.info.points, 6)
    return cells
