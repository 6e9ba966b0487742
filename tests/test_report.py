"""The class report for TAs (`autograder report`, and the end of `autograder grade`).

Content is checked against numbers computed here from the result files themselves;
robustness on folders without results, with one broken submission, NaN or a zero maximum;
and in headless Chromium, that the page opens offline with no console errors.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from autograder import cli
from autograder.grading.store import crash_result
from autograder.report import REPORT, write_class_report
from browser import needs_chromium, open_page
from conftest import FIXTURE_COURSE, run_cli, with_cells, write

# -- reading the page back ---------------------------------------------------------------------


class _Tables(HTMLParser):
    """Every <table id=...>: its body rows as (cell texts, hrefs in the row)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[list[str], list[str]]]] = {}
        self._table: str | None = None
        self._in_body = False
        self._row: tuple[list[str], list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self._table = attrs["id"]
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._table and self._in_body:
            self._row = ([], [])
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "a" and self._row is not None and "href" in attrs:
            self._row[1].append(attrs["href"])
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row[0].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables(page: Path) -> dict[str, list[tuple[list[str], list[str]]]]:
    parser = _Tables()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.tables


def rows_by_first_cell(page: Path, table: str) -> dict[str, tuple[list[str], list[str]]]:
    return {cells[0]: (cells, hrefs) for cells, hrefs in tables(page)[table] if len(cells) > 1}


# -- a graded class --------------------------------------------------------------------------

STUDENTS = {  # cells each student adds at the end of the solution notebook
    "ana": (),  # the solution: every point
    "beto": ("def double(x):\n    return 3 * x",),  # wrong values: both double checks fail
    "carla": ("class Counter:\n    def __init__(self):\n        self.total = 0\n"
              "    def add(self, k):\n        self.total += k",),  # add returns None: the hidden chain check fails
    "dario": ("def double(x)\n    return 2 * x", "del double"),  # a syntax error, and no double left
}


@pytest.fixture(scope="module")
def graded(demo_course, tmp_path_factory):
    """The fixture course graded through `autograder grade` (four notebooks and a .py): (course, out, stdout)."""
    subs = tmp_path_factory.mktemp("report-subs")
    solution = demo_course.solutions_dir("demo") / "demo.ipynb"
    for student, cells in STUDENTS.items():
        write(with_cells(solution, *cells), subs / f"{student}.ipynb")
    (subs / "eva.py").write_text("print('hola')\n")  # not a notebook: an invalid submission
    out = tmp_path_factory.mktemp("report-out") / "demo"
    done = run_cli("--course", str(demo_course.root), "grade", "demo", str(subs), "--out", str(out),
                   "--workers", "1", "--seed", "1234", "--call-seconds", "3")
    assert done.returncode == 0, done.stderr
    return demo_course, out, done.stdout


def results(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


@pytest.mark.slow
def test_grade_writes_the_class_report_next_to_the_results(graded):
    """Does `autograder grade` end by writing report.html in the output folder and printing its path?"""
    _, out, stdout = graded
    assert f"class report: {out / REPORT}" in stdout
    assert (out / REPORT).is_file()


@pytest.mark.slow
def test_every_student_has_a_row_linking_their_result_and_existing_feedback(graded):
    """Is there one row per result file, linking `<student>.json`, and the feedback page exactly where one exists?"""
    course, out, _ = graded
    rows = rows_by_first_cell(out / REPORT, "students-table")
    assert sorted(rows) == sorted(results(out)) == sorted([*STUDENTS, "eva"])
    for student, (cells, hrefs) in rows.items():
        assert f"{student}.json" in hrefs
        pages = [root / "feedback" / student / "demo" / "demo.html" for root in (out, course.root)]
        existing = [p for p in pages if p.is_file()]
        feedback = [h for h in hrefs if h.endswith(".html")]
        assert len(feedback) == (1 if existing else 0), (student, hrefs)
        if existing:
            assert (out / feedback[0]).resolve() == existing[0].resolve()
    assert rows["eva"][0][3] == "invalid" and rows["ana"][0][1] == "4 / 4"


@pytest.mark.slow
def test_part_means_and_full_marks_match_the_result_files(graded):
    """Are each part's mean points and share of full marks those computed from the result files?"""
    _, out, _ = graded
    rows = rows_by_first_cell(out / REPORT, "parts-table")
    data = results(out)
    assert list(rows) == ["double", "counter"]
    for grade_id, (cells, _) in rows.items():
        scores = [r["extra_data"]["grade_cells"][grade_id]["score"] for r in data.values()]
        top = next(iter(data.values()))["extra_data"]["grade_cells"][grade_id]["max_score"]
        full = sum(s == top for s in scores)
        assert cells[1] == f"{top:g}"
        assert cells[2] == f"{sum(scores) / len(scores):.2f}"
        assert cells[3].startswith(f"{100 * sum(scores) / len(scores) / top:.0f}%")
        assert cells[4] == f"{full} of {len(scores)}"
        assert cells[5].startswith(f"{100 * full / len(scores):.0f}%")


@pytest.mark.slow
def test_hidden_checks_show_failure_rates_and_their_messages(graded):
    """Do hidden checks appear with their failure rate and most common messages, including grader crashes?"""
    _, out, _ = graded
    rows = rows_by_first_cell(out / REPORT, "checks-table")
    by_check = {cells[0].rsplit(" ", 1)[-1]: cells for cells, _ in rows.values()}
    data = results(out).values()
    for check in ("test_double_keeps_shape_and_dtype", "test_counter_chains"):
        failed = sum(t["status"] != "passed" for r in data for t in r["tests"] if t["extra_data"]["check"] == check)
        cells = by_check[check]
        assert cells[1] == "hidden" and cells[3] == f"{failed} of {len(data)}"
    assert "no coincide con la referencia" in by_check["test_double_keeps_shape_and_dtype"][5]
    assert "Tu notebook no define `double`" in by_check["test_double_keeps_shape_and_dtype"][5]
    assert "[grader: AttributeError" in by_check["test_counter_chains"][5]
    assert by_check["test_counter_adds"][1] == "public"


@pytest.mark.slow
def test_cell_errors_and_unreadable_submissions_are_listed(graded):
    """Are a student's failing cell (with its error) and an invalid submission's reason on the page?"""
    _, out, _ = graded
    cell_errors = [cells for cells, _ in tables(out / REPORT)["cell-errors-table"]]
    assert any(c[0] == "dario" and c[4].startswith("SyntaxError") for c in cell_errors)
    assert {c[0] for c in cell_errors} == {"dario"}
    problems = rows_by_first_cell(out / REPORT, "problems-table")
    assert list(problems) == ["eva"] and ".py" in problems["eva"][0][2]


@pytest.mark.slow
def test_missing_sandbox_layers_and_skipped_cuda_are_flagged(graded, tmp_path):
    """Is a submission graded without some sandbox layers, or with its cuda cases skipped, flagged by name?"""
    _, out, _ = graded
    for path in out.glob("*.json"):
        shutil.copy(path, tmp_path)
    doctored = results(tmp_path)
    doctored["ana"]["extra_data"]["isolation"]["missing"] = ["seccomp", "network"]
    for student, outcome in (("ana", "passed"), ("carla", "passed"), ("beto", "skipped")):
        for test in doctored[student]["tests"]:  # as if graded with (ana, carla) or without (beto) a GPU
            test["extra_data"]["cases"] = [c for c in test["extra_data"]["cases"] if c["device"] != "cuda"]
            if test["extra_data"]["cases"]:
                test["extra_data"]["cases"].append({"device": "cuda", "outcome": outcome, "seconds": 0.0,
                                                    "properties": {}, "ta_detail": ""})
    for student, data in doctored.items():
        (tmp_path / f"{student}.json").write_text(json.dumps(data, ensure_ascii=False))
    page = write_class_report(out_dir=tmp_path, assignment="demo", course_root=None)
    rows = rows_by_first_cell(page, "students-table")
    assert "missing: seccomp, network" in rows["ana"][0][8]
    with_cases = sum(bool(t["extra_data"]["cases"]) for t in doctored["beto"]["tests"])
    assert f"cuda skipped ({with_cases})" in rows["beto"][0][8]
    assert rows["carla"][0][8] == "ok"
    text = page.read_text()
    assert re.search(r"1 submission\(s\) graded with missing sandbox layers \(network, seccomp\): ana\.", text)
    assert '<tr id="student-ana" class="problem">' in text


@pytest.mark.slow
def test_page_loads_nothing_from_outside(graded):
    """Is the page self-contained: no script, stylesheet, image or link fetched from another host?"""
    _, out, _ = graded
    text = (out / REPORT).read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//|@import", text, re.I)
    assert "<script" not in text.lower()
    assert "<svg" in text  # the figures are inline


@pytest.mark.slow
@needs_chromium
def test_report_opens_in_chromium_without_console_errors(graded, tmp_path):
    """Does headless Chromium open the report from the file system with no console error, exception or network load?"""
    _, out, _ = graded
    load = open_page(out / REPORT, screenshot=tmp_path / "report.png")
    assert load.ok, load.problems()
    assert load.title == "Class report: demo"
    assert load.screenshot.stat().st_size > 20_000  # a rendered page, not a blank one


# -- the browser check itself ------------------------------------------------------------------

@needs_chromium
def test_browser_check_catches_console_errors_exceptions_and_network_loads(tmp_path):
    """Can the browser check fail: are console.error, thrown exceptions, missing files and web loads reported?"""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head><title>bad</title>"
                    '<link rel="stylesheet" href="http://example.invalid/style.css"></head><body>'
                    '<img src="missing.png">'
                    "<script>console.error('deliberate error'); console.log('fine');</script>"
                    "<script>throw new Error('deliberate throw');</script>"
                    "<script>setTimeout(() => undefinedFunction(), 10);</script></body></html>")
    load = open_page(page, screenshot=None)
    assert not load.ok
    assert load.console_errors == ["deliberate error"]
    assert any("deliberate throw" in e for e in load.exceptions)
    assert any("undefinedFunction" in e for e in load.exceptions)
    assert any("missing.png" in e for e in load.log_errors)
    assert load.external_requests == ["http://example.invalid/style.css"]


# -- robustness, without grading ---------------------------------------------------------------

def _result(student: str, *, score, max_score, parts: dict[str, tuple], status: str = "graded", **extra) -> dict:
    """A minimal result file's content (Gradescope schema plus extra_data)."""
    return {"score": score, "max_score": max_score, "execution_time": 1.5, "output": "**Puntaje: 0 de 0.**",
            "tests": [], "extra_data": {"student": student, "status": status,
                                        "grade_cells": {g: {"score": s, "max_score": m} for g, (s, m) in parts.items()},
                                        **extra}}


def _write(folder: Path, data: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{data['extra_data']['student']}.json").write_text(json.dumps(data))


def test_a_folder_without_results_still_renders(tmp_path):
    """Does a folder with only a gradebook and unrelated JSON give a page that says there are no results?"""
    (tmp_path / "gradebook.csv").write_text("student,total\n")
    (tmp_path / "settings.json").write_text('{"a": 1}')
    (tmp_path / "not-json.json").write_text("{")
    (tmp_path / "someone.json").write_text(json.dumps(_result("another", score=1, max_score=1, parts={})))
    page = write_class_report(out_dir=tmp_path, assignment="demo", course_root=None)
    text = page.read_text()
    assert "No result files" in text and "3 other JSON files skipped" in text
    assert "students-table" not in text


def test_crashed_nan_and_zero_maximum_results_still_render(tmp_path):
    """Do a grader crash, a NaN score, a zero maximum and garbled fields render instead of crashing?"""
    (tmp_path / "crash.json").write_text(crash_result(student="crash", assignment="demo", source="x.ipynb",
                                                      grade_cells={}, detail="the grading process died twice"))
    nan = _result("nan", score=math.nan, max_score=0, parts={"p": (math.nan, 0)}, worker_restarts="many",
                  cells=[{"status": "timeout", "index": 3}], isolation="none")
    nan["tests"] = [{"name": "t", "status": "failed", "output": None, "extra_data": {"cases": [None, 3]}}, "junk"]
    nan["execution_time"] = math.inf
    _write(tmp_path, nan)
    page = write_class_report(out_dir=tmp_path, assignment="demo", course_root=None)
    rows = rows_by_first_cell(page, "students-table")
    assert rows["crash"][0][3] == "error" and rows["nan"][0][1] == "— / 0"
    assert "the grading process died twice" in page.read_text()
    assert rows_by_first_cell(page, "problems-table")["crash"][0][1] == "error"


def test_one_student_folder_renders_every_section(tmp_path):
    """Does a class of one still get the figures and every table?"""
    _write(tmp_path, _result("solo", score=3, max_score=4, parts={"a": (1, 2), "b": (2, 2)}))
    text = write_class_report(out_dir=tmp_path, assignment="demo", course_root=None).read_text()
    for table in ("parts-table", "students-table", "points-table"):
        assert f'id="{table}"' in text
    assert text.count("<svg") == 3


def test_feedback_under_the_course_root_and_the_similarity_page_are_linked(tmp_path):
    """Are nbgrader's feedback page under the course root and similarity.html linked, with relative paths?"""
    course = tmp_path / "course"
    shutil.copytree(FIXTURE_COURSE, course, ignore=shutil.ignore_patterns("__pycache__"))
    out = course / "autograded" / "demo"
    for student in ("con feedback", "sin"):
        _write(out, _result(student, score=1, max_score=4, parts={"double": (1, 2), "counter": (0, 2)}))
    feedback = course / "feedback" / "con feedback" / "demo" / "demo.html"
    feedback.parent.mkdir(parents=True)
    feedback.write_text("<html></html>")
    (out / "similarity.html").write_text("<html></html>")
    page = write_class_report(out_dir=out, assignment="demo", course_root=course)
    rows = rows_by_first_cell(page, "students-table")
    assert rows["con feedback"][1] == ["con%20feedback.json", "../../feedback/con%20feedback/demo/demo.html"]
    assert rows["sin"][1] == ["sin.json"]
    assert 'href="similarity.html"' in page.read_text()


def test_report_command_writes_the_page_and_refuses_a_missing_folder(tmp_path):
    """Does `autograder report` write report.html for a results folder, and fail plainly without one?"""
    _write(tmp_path / "out", _result("solo", score=2, max_score=4, parts={"double": (2, 2)}))
    done = run_cli("--course", str(FIXTURE_COURSE), "report", "demo", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"class report: {tmp_path / 'out' / REPORT}"
    missing = run_cli("--course", str(FIXTURE_COURSE), "report", "demo", "--out", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no results folder" in missing.stderr


def test_a_failing_report_only_warns_after_a_batch(tmp_path, monkeypatch, capsys):
    """If the report cannot be written after grading, is there a warning, with the results left alone?"""
    data = _result("solo", score=2, max_score=4, parts={"double": (2, 2)})
    _write(tmp_path, data)

    def broken(**kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("autograder.report.write_class_report", broken)
    assert cli._report_after_batch(out_dir=tmp_path, assignment="demo", course_root=FIXTURE_COURSE) is None
    assert "warning: could not write the class report: OSError: disk full" in capsys.readouterr().err
    assert json.loads((tmp_path / "solo.json").read_text()) == data
    assert not (tmp_path / REPORT).exists()


def test_the_page_escapes_what_results_contain(tmp_path):
    """Is text from a result file (a student name, a check message) escaped, never markup?"""
    data = _result("x", score=0, max_score=1, parts={"<b>p</b>": (0, 1)})
    data["tests"] = [{"name": "<script>alert(1)</script>", "status": "failed", "score": 0, "max_score": 1,
                      "output": "- cpu ✘: <img src=x onerror=alert(1)>", "tags": ["<b>p</b>"],
                      "extra_data": {"check": "test_x", "grade_id": "<b>p</b>", "hidden": True, "cases": []}}]
    _write(tmp_path, copy.deepcopy(data))
    text = write_class_report(out_dir=tmp_path, assignment="demo", course_root=None).read_text()
    assert "<script>alert" not in text and "<img src=x" not in text and "<b>p</b>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
