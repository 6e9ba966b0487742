"""`similarity_report`: who handed in the same code, from discovered submissions to the report files.

A pipeline of small steps: the release's layout (`extract.layout`) -> every student's
graded code per part (`extract.student_parts`) -> normalised tokens
(`normalize.tokens`) -> winnowed fingerprints minus every k-gram of the release
(`winnow`) -> candidate pairs from the inverted index (`index.search`) -> the
reported pairs with their matched lines -> `similarity.html` and `similarity.csv`
(`page`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..course import Course
from . import extract
from .extract import Cell, Layout, Unreadable
from .index import Document, Search, matched_lines, search
from .normalize import tokens
from .winnow import Fingerprint, fingerprints, kgram_hashes


@dataclass(frozen=True)
class Settings:
    """How code is fingerprinted and what counts as common code."""

    k: int = 8  # tokens per k-gram: shorter shared runs are noise
    window: int = 4  # any shared run of window + k - 1 tokens is guaranteed to be found
    #: A fingerprint in more submissions than this is common code and ignored (MOSS's -m, default 10);
    #: None: max(10, 1% of the class). A copy shared by more students than this is not found.
    max_holders: int | None = None
    min_shared: int = 2  # pairs sharing fewer fingerprints are not scored

    def holders_limit(self, students: int) -> int:
        return self.max_holders if self.max_holders is not None else max(10, math.ceil(0.01 * students))


@dataclass(frozen=True)
class PartMatch:
    part: str
    score: float
    matched: int
    prints_a: int
    prints_b: int
    lines_a: dict[int, tuple[int, ...]]  # cell position -> matched lines of that cell
    lines_b: dict[int, tuple[int, ...]]


@dataclass(frozen=True)
class PairMatch:
    student_a: str
    student_b: str
    score: float  # Jaccard index of all fingerprints (all parts)
    matched: int
    prints_a: int
    prints_b: int
    parts: tuple[PartMatch, ...]  # parts with shared fingerprints, most shared first


@dataclass(frozen=True)
class Student:
    """A readable submission: its graded code per part and how many fingerprints are its own."""

    student: str
    cells: dict[str, list[Cell]]
    prints: int


@dataclass(frozen=True)
class SimilarityReport:
    assignment: str
    settings: Settings
    students: dict[str, Student]
    unreadable: dict[str, str]  # student -> why their notebook could not be read
    without_code: tuple[str, ...]  # students with nothing beyond the release's code
    pairs: tuple[PairMatch, ...]  # the reported pairs, most similar first
    compared: int  # pairs scored (those sharing at least `settings.min_shared` fingerprints)
    sharing: int  # pairs sharing at least one fingerprint (found through the index, not compared)
    common: int  # fingerprints ignored as common code
    holders_limit: int
    seconds: float
    parts: tuple[str, ...]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def possible(self) -> int:
        n = len(self.students)
        return n * (n - 1) // 2


def similarity_report(*, course: Course, assignment: str, submissions: list, out_dir: Path | None,
                      top: int = 50, min_score: float = 0.1, settings: Settings = Settings(),
                      show: int = 25) -> SimilarityReport:
    """Fingerprint every submission, find the most similar pairs and write the report into `out_dir`.

    `submissions` are `grading.discover.Submission`s; `top` caps the reported pairs, `min_score`
    drops pairs below that overall score, `show` caps the pairs shown side by side in the HTML.
    `out_dir=None` writes nothing.
    """
    started = time.perf_counter()
    plan = extract.layout(course.assignment(assignment).release_notebook)
    release = release_hashes(plan, settings)
    students: dict[str, Student] = {}
    documents: list[Document] = []
    unreadable: dict[str, str] = {}
    for submission in submissions:
        if submission.path is None:
            unreadable[submission.student] = "no usable notebook: " + (submission.problem or "nothing handed in")
            continue
        try:
            cells = extract.student_parts(extract.load(submission.path), plan)
        except Unreadable as exc:
            unreadable[submission.student] = str(exc)
            continue
        document = fingerprint(submission.student, cells, plan, settings, release)
        documents.append(document)
        students[submission.student] = Student(submission.student, cells,
                                               sum(len(p) for p in document.prints.values()))
    found = search(documents, max_holders=settings.holders_limit(len(documents)), min_shared=settings.min_shared)
    pairs = tuple(_pair(documents, c, found) for c in found.candidates[:top] if c.score >= min_score)
    report = SimilarityReport(
        assignment=assignment, settings=settings, students=students, unreadable=unreadable,
        without_code=tuple(sorted(s for s, student in students.items() if student.prints == 0)),
        pairs=pairs, compared=len(found.candidates), sharing=found.sharing, common=len(found.common),
        holders_limit=found.holders_limit,
        seconds=time.perf_counter() - started, parts=plan.parts)
    if out_dir is not None:
        from .page import write_report

        report.files.update(write_report(report, out_dir, show=show))
    return report


def release_hashes(plan: Layout, settings: Settings) -> frozenset[int]:
    """Every k-gram hash of the release's code: stubs, signatures and given code are nobody's own."""
    hashes: set[int] = set()
    for cells in plan.code.values():
        for cell in cells:  # one cell at a time, as a student may move or split cells
            hashes |= set(kgram_hashes([t[0] for t in tokens([cell.source], given=plan.given)], settings.k))
        hashes |= set(kgram_hashes([t[0] for t in tokens([c.source for c in cells], given=plan.given)], settings.k))
    return frozenset(hashes)


def fingerprint(student: str, cells: dict[str, list[Cell]], plan: Layout, settings: Settings,
                release: frozenset[int]) -> Document:
    """A student's winnowed fingerprints per part, without those the release also has."""
    prints: dict[str, dict[int, list]] = {}
    for part, part_cells in cells.items():
        stream = tokens([c.source for c in part_cells], given=plan.given)
        texts = [t[0] for t in stream]
        kept: dict[int, list] = {}
        for print_ in fingerprints(texts, k=settings.k, window=settings.window):
            if print_.hash in release:
                continue
            kept.setdefault(print_.hash, []).append(_where(stream, print_, settings.k, part_cells))
        if kept:
            prints[part] = kept
    return Document(student, prints)


def _where(stream: list, print_: Fingerprint, k: int, cells: list[Cell]) -> frozenset[tuple[int, int]]:
    return frozenset((cells[cell].position, line) for _, cell, line in stream[print_.start:print_.start + k])


def _pair(documents: list[Document], candidate, found: Search) -> PairMatch:
    a, b = documents[candidate.a], documents[candidate.b]
    parts = tuple(
        PartMatch(p.part, p.score, p.matched, p.prints_a, p.prints_b,
                  _sorted(matched_lines(a, b, p.part, common=found.common)),
                  _sorted(matched_lines(b, a, p.part, common=found.common)))
        for p in candidate.parts)
    return PairMatch(a.student, b.student, candidate.score, candidate.matched, candidate.prints_a,
                     candidate.prints_b, parts)


def _sorted(lines: dict[int, set[int]]) -> dict[int, tuple[int, ...]]:
    return {cell: tuple(sorted(found)) for cell, found in sorted(lines.items())}
