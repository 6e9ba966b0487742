"""After a batch: scores into nbgrader's gradebook and a feedback page per student.

A batch graded from the course's own nbgrader `submitted/<student>/<assignment>/` tree
goes through nbgrader's API, one student at a time: `autograde` (its sanitizing steps,
the timestamp of `timestamp.txt`, `SaveAutoGrades`, late penalties; our
`IsolatedGrade` finds the result the batch just wrote, so nothing is graded twice) and
`generate_feedback` (our page, with the gradebook's scores). Manual grades, extra
credit and comments stay as they are. Any other batch gets the same page written
straight from each result file, under `<results>/feedback/<student>/<assignment>/`, and so
does a submission nbgrader cannot take (a notebook under another name than the released one).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..course import Course
from ..grading.discover import Submission
from ..grading.store import atomic_write
from .annotate import annotate_notebook, set_scores


@dataclass
class HandBack:
    recorded: list[str] = field(default_factory=list)  # students whose scores are in nbgrader's gradebook
    feedback: dict[str, Path] = field(default_factory=dict)  # student -> feedback page
    problems: dict[str, str] = field(default_factory=dict)  # student -> what went wrong (English, for TAs)


def nbgrader_students(course: Course, assignment: str, submissions: list[Submission]) -> dict[str, str]:
    """Result id -> nbgrader student id, for the submissions that sit in the course's own `submitted/` tree."""
    submitted = (course.root / "submitted").resolve()
    found = {}
    for submission in submissions:
        folder = submission.path.parent.resolve() if submission.path else None
        if folder is not None and folder.name == assignment and folder.parent.parent == submitted:
            found[submission.student] = folder.parent.name
    return found


def hand_back(*, course: Course, assignment: str, submissions: list[Submission], results: dict[str, dict],
              out_dir: Path) -> HandBack:
    students = nbgrader_students(course, assignment, submissions)
    done = HandBack()
    if students:
        _through_nbgrader(course, assignment, submissions, students, out_dir, done)
    for submission in submissions:  # elsewhere, or where nbgrader could not take it: the page from the result
        if submission.student not in done.feedback and submission.student in results:
            _direct_page(course, assignment, submission, results[submission.student], out_dir, done)
    return done


def _through_nbgrader(course: Course, assignment: str, submissions: list[Submission], students: dict[str, str],
                      out_dir: Path, done: HandBack) -> None:
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from .settings import course_config

    config = course_config(course.root, results_dir=out_dir)
    notebook_name = course.assignment(assignment).notebook_name
    names = {s.student: s.path.name for s in submissions if s.student in students}
    here = Path.cwd()
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            api = NbGraderAPI(CourseDirectory(config=config), config=config)
            for result_id, student in sorted(students.items()):
                try:
                    _record_one(api, assignment, result_id, student, names[result_id], notebook_name, done)
                except Exception as exc:  # noqa: BLE001 - one student's trouble (a locked database...) stays theirs
                    done.problems[result_id] = f"nbgrader: {type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - nbgrader could not start: every page comes from the results
        for result_id in students:
            done.problems.setdefault(result_id, f"nbgrader: {type(exc).__name__}: {exc}")
    finally:
        os.chdir(here)


def _record_one(api, assignment: str, result_id: str, student: str, name: str, notebook_name: str,
                done: HandBack) -> None:
    """nbgrader's autograde (our result, through `IsolatedGrade`) and feedback page for one student."""
    graded = api.autograde(assignment, student, force=True, create=True)
    if not graded["success"]:
        hint = "" if name == notebook_name else (
            f" (the notebook is named {name}, nbgrader only takes {notebook_name}: rename it and grade again)")
        done.problems[result_id] = "nbgrader autograde failed: " + _last_line(graded) + hint
        return
    done.recorded.append(result_id)
    feedback = api.generate_feedback(assignment, student, force=True)
    if not feedback["success"]:
        done.problems[result_id] = "nbgrader generate_feedback failed: " + _last_line(feedback)
        return
    page = Path(api.coursedir.format_path(api.coursedir.feedback_directory, student, assignment))
    done.feedback[result_id] = next(iter(sorted(page.glob("*.html"))), page)


def _last_line(outcome: dict) -> str:
    text = (outcome.get("error") or outcome.get("log") or "").strip().splitlines()
    return text[-1] if text else "no detail"


def _direct_page(course: Course, assignment: str, submission: Submission, result: dict, out_dir: Path,
                 done: HandBack) -> None:
    from ..feedbackpage.page import PageInfo, render_feedback

    target = course.assignment(assignment)
    info = PageInfo(student=submission.student, assignment=assignment, score=float(result["score"]),
                    max_score=float(result["max_score"]))
    page = None
    if result.get("extra_data", {}).get("status") == "graded":  # else never read it: too big, malformed...
        try:
            nb = _read_notebook(submission.path)
            page = render_feedback(set_scores(annotate_notebook(nb, result), result), info=info)
        except Exception:  # noqa: BLE001 - a notebook our intake took but nbformat does not: the release's page
            page = None
    if page is None:
        nb = _read_notebook(target.release_notebook)
        bare = {**result, "extra_data": {**result.get("extra_data", {}), "cells": []}}
        page = render_feedback(set_scores(annotate_notebook(nb, bare), bare), info=info)
    path = out_dir / "feedback" / submission.student / assignment / f"{Path(target.notebook_name).stem}.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, page)
    except OSError as exc:
        done.problems[submission.student] = f"cannot write {path}: {exc.strerror or exc}"
        return
    done.feedback[submission.student] = path


def _read_notebook(path: Path) -> nbformat.NotebookNode:
    """The notebook as nbformat's version 4 nodes, without the schema check of `nbformat.read`, which rejects
    nothing (it logs what it finds, and fills in or renumbers cell ids, which the page does not show): about 4 ms
    less per page."""
    return nbformat.convert(nbformat.reader.reads(path.read_text(encoding="utf-8")), 4)


def format_hand_back(done: HandBack, *, course_root: Path) -> str:
    """Lines for the end of `autograder grade`: where scores and feedback went, and what failed."""
    lines = []
    if done.recorded:
        lines.append(f"nbgrader gradebook: {len(done.recorded)} submission(s) recorded (formgrader shows them)")
    if done.feedback:
        first = next(iter(done.feedback.values()))
        where = first.parents[2]
        shown = where.relative_to(course_root) if where.is_relative_to(course_root) else where
        lines.append(f"feedback: {len(done.feedback)} page(s) in {shown}/<student>/<assignment>/")
    lines += [f"WARNING: {student}: {problem}" for student, problem in sorted(done.problems.items())]
    return "\n".join(lines)
