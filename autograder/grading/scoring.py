"""How outcomes become points: per check (`plugin.check_score`), per grade cell, per submission.

A by-hand rule that is broken voids its grade cell: every check of that cell scores
zero, whatever its cases did (`autograder.rules`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..plugin import CaseOutcome, check_score
from ..rules import RuleVerdict
from .checks import CheckInfo

NOT_RUN = "Esta comprobación no llegó a ejecutarse."


@dataclass
class CheckScore:
    info: CheckInfo
    score: float
    cases: list[CaseOutcome]
    voided_by: RuleVerdict | None = None  # the broken rule that took this check's points

    @property
    def passed(self) -> bool:
        return self.score >= self.info.points - 1e-9


def score_checks(checks: list[CheckInfo], outcomes: list[CaseOutcome],
                 verdicts: list[RuleVerdict] = ()) -> list[CheckScore]:
    """Every expected check with its score; a check without outcomes, or in a voided cell, scores zero."""
    by_check: dict[str, list[CaseOutcome]] = {}
    for outcome in outcomes:
        by_check.setdefault(outcome.check, []).append(outcome)
    voided = {v.rule.grade_id: v for v in verdicts if v.violated}
    scores = []
    for info in checks:
        cases = by_check.get(info.check, [])
        rule = voided.get(info.grade_id)
        scores.append(CheckScore(info, 0.0 if rule else check_score(info.points, cases), cases, rule))
    return scores


def grade_cell_scores(scores: list[CheckScore]) -> dict[str, dict[str, float]]:
    """Score and maximum per nbgrader grade cell."""
    cells: dict[str, dict[str, float]] = {}
    for s in scores:
        cell = cells.setdefault(s.info.grade_id, {"score": 0.0, "max_score": 0.0})
        cell["score"] = round(cell["score"] + s.score, 6)
        cell["max_score"] = round(cell["max_score"] + s.info.points, 6)
    return cells
