"""Grading the mutants through the real pipeline, and one verdict per mutant.

Every mutant notebook (and the unchanged solution, as a baseline) is graded by
`grade_batch`: isolated workers, every public and hidden check, the limits of grading.
A mutant is *killed* when the part it lives in lost points (by a public check, the
part's by-hand rule included, or else only by hidden ones), *survived* when that part
kept full marks, *equivalent* when it survived and the instructors' list says it
computes the same as the solution, and *other* when grading itself failed or the
baseline already loses points in that part.
"""

from __future__ import annotations

import json
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..course import Course, CourseError
from ..grading.store import atomic_write
from .mutate import Generation, Mutant, generate_mutants, write_mutant

EQUIVALENTS_FILE = "equivalent_mutants.toml"
BASELINE = "solution"
VERDICTS = ("killed", "survived", "equivalent", "other")


class AuditError(Exception):
    """The audit cannot run (for instructors, English)."""


@dataclass(frozen=True)
class FailedCheck:
    check: str
    grade_id: str
    hidden: bool
    status: str


@dataclass
class Verdict:
    mutant: Mutant
    verdict: str  # killed | survived | equivalent | other
    killed_by: str | None = None  # public | hidden (killed only)
    failed: list[FailedCheck] = field(default_factory=list)  # the part's checks that did not pass
    other_parts: list[str] = field(default_factory=list)  # other grade cells that lost points
    reason: str = ""  # why equivalent, or what went wrong (other)

    def to_dict(self) -> dict:
        return {**self.mutant.summary(), "verdict": self.verdict, "killed_by": self.killed_by,
                "failed": [asdict(f) for f in self.failed], "other_parts": self.other_parts, "reason": self.reason}


@dataclass
class PartTally:
    grade_id: str
    definitions: tuple[str, ...]
    candidates: int = 0
    mutants: int = 0
    killed_public: int = 0
    killed_hidden: int = 0
    equivalent: int = 0
    survived: int = 0
    other: int = 0

    def add(self, verdict: Verdict) -> None:
        self.mutants += 1
        if verdict.verdict == "killed":
            if verdict.killed_by == "public":
                self.killed_public += 1
            else:
                self.killed_hidden += 1
        else:
            setattr(self, verdict.verdict, getattr(self, verdict.verdict) + 1)

    @property
    def score(self) -> float | None:
        """Killed over the mutants that are not equivalent and were graded (None when there are none)."""
        judged = self.killed_public + self.killed_hidden + self.survived
        return (self.killed_public + self.killed_hidden) / judged if judged else None


@dataclass
class AuditReport:
    assignment: str
    out_dir: Path
    seed: int
    max_mutants: int | None
    parts: list[PartTally]
    verdicts: list[Verdict]
    baseline: dict[str, tuple[float, float]]  # grade cell -> (score, max) of the unchanged solution
    equivalents_file: Path
    stale_equivalents: list[str]  # listed ids that are not among this run's mutants (or were killed)
    skipped_cells: list[str]
    seconds: float

    @property
    def total(self) -> PartTally:
        total = PartTally("overall", ())
        for tally in self.parts:
            for name in ("candidates", "mutants", "killed_public", "killed_hidden", "equivalent", "survived", "other"):
                setattr(total, name, getattr(total, name) + getattr(tally, name))
        return total

    def survivors(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.verdict == "survived"]

    def to_dict(self) -> dict:
        def tally(t: PartTally) -> dict:
            return {"grade_id": t.grade_id, "definitions": list(t.definitions), "candidates": t.candidates,
                    "mutants": t.mutants, "killed_public": t.killed_public, "killed_hidden": t.killed_hidden,
                    "equivalent": t.equivalent, "survived": t.survived, "other": t.other, "kill_rate": t.score}
        return {
            "assignment": self.assignment, "seed": self.seed, "max_mutants": self.max_mutants,
            "parts": [tally(t) for t in self.parts], "overall": tally(self.total),
            "baseline": {g: {"score": s, "max_score": m} for g, (s, m) in self.baseline.items()},
            "equivalents_file": str(self.equivalents_file), "stale_equivalents": self.stale_equivalents,
            "skipped_cells": self.skipped_cells, "seconds": round(self.seconds, 1),
            "mutants": [v.to_dict() for v in self.verdicts],
        }


def load_equivalents(path: Path) -> dict[str, str]:
    """Mutant id -> reason, from `[[mutant]]` tables with `id` and `reason` (no file: none)."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise AuditError(f"{path}: not valid TOML: {exc}") from None
    listed = {}
    for number, entry in enumerate(data.get("mutant", []), 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) \
                or not str(entry.get("reason", "")).strip():
            raise AuditError(f"{path}: entry {number} of [[mutant]] needs an `id` and a non-empty `reason`")
        listed[entry["id"]] = entry["reason"].strip()
    return listed


def audit(*, course: Course, assignment: str, out_dir: Path, workers: int, options: dict, seed: int = 0,
          max_mutants: int | None = None, parts: list[str] | None = None, progress: bool = True,
          force: bool = False) -> AuditReport:
    """Mutate the solution's graded code, grade every mutant, and judge the checks.

    Mutant notebooks go to `out_dir/mutants/`, grading results to `out_dir/results/`
    (kept between runs like `autograder grade` keeps them), and `audit.json` next to them.
    """
    from ..grading.batch import BatchError, grade_batch
    from ..grading.discover import Submission

    started = time.monotonic()
    target = course.assignment(assignment)
    solution = course.solutions_dir(assignment) / target.notebook_name
    if not solution.is_file():
        raise CourseError(f"{solution.relative_to(course.root)} does not exist: run `autograder build {assignment}`")
    notebook = json.loads(solution.read_text(encoding="utf-8"))
    try:
        generation = generate_mutants(notebook, seed=seed, max_mutants=max_mutants, parts=parts)
    except ValueError as exc:
        raise AuditError(str(exc)) from None
    equivalents_file = target.checks_dir / EQUIVALENTS_FILE
    equivalents = load_equivalents(equivalents_file)

    work = out_dir / "mutants"
    submissions = [Submission(BASELINE, write_mutant(notebook, None, work / f"{BASELINE}.ipynb"))]
    submissions += [Submission(f"mutant-{m.id}", write_mutant(notebook, m, work / f"mutant-{m.id}.ipynb"))
                    for m in generation.mutants]
    try:
        batch = grade_batch(course=course, assignment=assignment, submissions=submissions,
                            out_dir=out_dir / "results", workers=workers, options=options, progress=progress,
                            force=force)
    except BatchError as exc:
        raise AuditError(str(exc)) from None

    report = judge(generation, batch.results, equivalents=equivalents, assignment=assignment, out_dir=out_dir,
                   seed=seed, max_mutants=max_mutants, equivalents_file=equivalents_file)
    report.seconds = time.monotonic() - started
    atomic_write(out_dir / "audit.json", json.dumps(report.to_dict(), ensure_ascii=False, indent=1) + "\n")
    from .page import write_page

    write_page(report, out_dir / "audit.html")
    return report


def judge(generation: Generation, results: dict[str, dict], *, equivalents: dict[str, str], assignment: str,
          out_dir: Path, seed: int, max_mutants: int | None, equivalents_file: Path) -> AuditReport:
    """One verdict per mutant from its result (and the baseline's); tallies per part."""
    baseline_result = results.get(BASELINE, {})
    baseline = {g: (float(c["score"]), float(c["max_score"]))
                for g, c in baseline_result.get("extra_data", {}).get("grade_cells", {}).items()}
    tallies = {p.grade_id: PartTally(p.grade_id, p.definitions, sum(generation.candidates.get(p.grade_id, {}).values()))
               for p in generation.parts}
    verdicts = []
    for mutant in generation.mutants:
        verdict = verdict_of(mutant, results.get(f"mutant-{mutant.id}"), baseline=baseline, equivalents=equivalents)
        tallies[mutant.part].add(verdict)
        verdicts.append(verdict)
    generated = {v.mutant.id: v for v in verdicts}
    stale = sorted(i for i in equivalents if i not in generated or generated[i].verdict == "killed")
    return AuditReport(assignment, out_dir, seed, max_mutants, list(tallies.values()), verdicts, baseline,
                       equivalents_file, stale, generation.skipped_cells, 0.0)


def verdict_of(mutant: Mutant, result: dict | None, *, baseline: dict[str, tuple[float, float]],
               equivalents: dict[str, str]) -> Verdict:
    """The verdict on one mutant: what its part scored, and which of the part's checks failed."""
    if result is None:
        return Verdict(mutant, "other", reason="no result")
    extra = result.get("extra_data", {})
    if extra.get("status") != "graded":
        return Verdict(mutant, "other", reason=f"grading status {extra.get('status')!r}: {extra.get('ta_detail', '')}")
    cells = extra.get("grade_cells", {})
    if mutant.part not in cells:
        return Verdict(mutant, "other", reason=f"no grade cell {mutant.part!r} in the result")
    base_score, base_max = baseline.get(mutant.part, (None, None))
    if base_score is None or base_score < base_max:
        return Verdict(mutant, "other", reason="the unchanged solution does not earn this part's full marks")
    lost = [g for g, c in cells.items() if float(c["score"]) < float(c["max_score"]) and
            baseline.get(g, (0.0, 0.0))[0] >= baseline.get(g, (0.0, 0.0))[1]]
    failed = [FailedCheck(t["extra_data"]["check"], t["extra_data"]["grade_id"], bool(t["extra_data"].get("hidden")),
                          t["status"])
              for t in result.get("tests", []) if t.get("status") != "passed"
              and t.get("extra_data", {}).get("grade_id") == mutant.part]
    others = [g for g in lost if g != mutant.part]
    if mutant.part in lost:
        killed_by = "public" if any(not f.hidden for f in failed) else "hidden"
        return Verdict(mutant, "killed", killed_by, failed, others)
    if mutant.id in equivalents:
        return Verdict(mutant, "equivalent", None, failed, others, reason=equivalents[mutant.id])
    return Verdict(mutant, "survived", None, failed, others)
