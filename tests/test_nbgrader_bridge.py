"""nbgrader's gradebook, autograde, formgrader notebooks and feedback, on top of the isolated grader.

Every test works on its own copy of the built fixture course (its `gradebook.db` included)
with an nbgrader `submitted/<student>/demo/` tree, and runs `autograder` and `nbgrader`
as a TA would, in subprocesses.
"""

from __future__ import annotations

import csv
import html
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder.build import nbgrader_environment
from browser import needs_chromium, open_page
from conftest import run_cli

pytestmark = pytest.mark.slow

HALF_DONE = "def double(x):\n    return x * 2"
STAMPS = {"alice": "2026-11-20 10:00:00.123456 UTC", "bob": "2026-11-21 09:30:00 UTC",
          "carol": "2026-11-21 11:00:00 UTC", "erin": "2026-12-03 08:15:30.5 UTC"}
DUE = datetime(2026, 12, 1, 0, 0, 0)
#: What the hostile notebook prints, raises and stashes while checks call it: must never reach feedback.
#: Its source spells the marker in two halves, so only what it printed can put the whole word in a page.
LEAK = "FILTRADO"
HOSTILE = """
import sys

MARK = "FIL" + "TRADO"

def double(x):
    print(MARK + "-OUT", tuple(x.shape), x.flatten()[:3].tolist())
    print(MARK + "-ERR", tuple(x.shape), file=sys.stderr)
    with open("/tmp/stash.txt", "a") as stash:
        stash.write(MARK + "-STASH " + str(tuple(x.shape)) + "\\n")
    if x.dim() != 2:
        raise ValueError(MARK + "-EXC " + str(tuple(x.shape)) + " " + str(x.flatten()[:3].tolist()))
    return 2 * x
"""
STASH_READER = "print(open('/tmp/stash.txt').read())"


@pytest.fixture(scope="module")
def built_course(demo_course):
    return demo_course.root


@pytest.fixture
def course(built_course, tmp_path):
    """A private copy of the built fixture course, whose late submissions lose every point."""
    root = tmp_path / "course"
    shutil.copytree(built_course, root, ignore=shutil.ignore_patterns("submitted", "autograded", "feedback"))
    with (root / "nbgrader_config.py").open("a") as config:
        config.write('\nc.LateSubmissionPlugin.penalty_method = "zero"\n')
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        gb.update_or_create_assignment("demo", duedate=DUE)
        gb.update_or_create_student("frank")  # enrolled, never submitted
    return root


def submit(root: Path, student: str, nb: nbformat.NotebookNode, *, name: str = "demo.ipynb",
           stamp: str | None = None) -> Path:
    folder = root / "submitted" / student / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    (folder / "timestamp.txt").write_text(stamp or STAMPS[student])
    return folder / name


def added(nb: nbformat.NotebookNode, *sources: str) -> nbformat.NotebookNode:
    """A copy of `nb` with extra code cells at the end (students add cells; the last definition wins)."""
    copy = nbformat.from_dict(nb)
    copy.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    return copy


def notebooks(root: Path) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    return (nbformat.read(root / "solutions" / "demo" / "demo.ipynb", as_version=4),
            nbformat.read(root / "release" / "demo" / "demo.ipynb", as_version=4))


def nbgrader(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`nbgrader ARGS` in the course root, as an instructor runs it (with the engine on PYTHONPATH: this course
    folder's own `autograder/checks/` would shadow the engine's editable install, see `nbgrader_environment`)."""
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=nbgrader_environment(),
                          capture_output=True, text=True, timeout=600)


def grade_tree(root: Path, *extra: str) -> subprocess.CompletedProcess:
    done = run_cli("--course", str(root), "grade", "demo", str(root / "submitted"), "--seed", "7", *extra)
    assert done.returncode == 0, done.stderr
    return done


def result(root: Path, student: str) -> dict:
    import json

    return json.loads((root / "autograded" / "demo" / f"{student}.json").read_text())


def export(root: Path) -> dict[str, dict]:
    target = root / "grades.csv"
    done = nbgrader(root, "export", f"--to={target}")
    assert done.returncode == 0, done.stderr
    with target.open() as rows:
        return {row["student_id"]: row for row in csv.DictReader(rows)}


def test_grading_the_nbgrader_tree_records_every_submission_as_nbgrader_does(course):
    """`autograder grade demo submitted/` fills nbgrader's gradebook: exact timestamps, auto scores per grade
    cell from our checks, no manual grading needed, late penalty by nbgrader's plugin, absent students at 0."""
    solution, release = notebooks(course)
    submit(course, "alice", solution)
    submit(course, "bob", added(release, HALF_DONE))
    submit(course, "carol", release)
    submit(course, "erin", solution)
    submit(course, "dave", solution, name="mi_tarea.ipynb", stamp="2026-11-22 10:00:00 UTC")
    done = grade_tree(course)
    assert "nbgrader gradebook: 4 submission(s) recorded" in done.stdout
    # nbgrader only takes the released notebook name; ours still grades dave, who gets a page and a warning
    assert "WARNING: dave: nbgrader autograde failed" in done.stdout
    assert result(course, "dave")["score"] == 4
    assert (course / "autograded" / "demo" / "feedback" / "dave" / "demo" / "demo.html").is_file()

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student, stamp in STAMPS.items():
            submission = gb.find_submission("demo", student)
            assert submission.timestamp == datetime.strptime(stamp.removesuffix(" UTC"),
                                                             "%Y-%m-%d %H:%M:%S" + (".%f" if "." in stamp else ""))
            ours = result(course, student)["extra_data"]["grade_cells"]
            grades = {g.name: g for g in submission.notebooks[0].grades}
            assert {name: g.auto_score for name, g in grades.items()} == {k: v["score"] for k, v in ours.items()}
            assert not any(g.needs_manual_grade for g in grades.values())
            assert all(g.manual_score is None for g in grades.values())
        assert gb.find_submission("demo", "bob").notebooks[0].failed_tests  # formgrader's "next incorrect"
        assert not gb.find_submission("demo", "alice").notebooks[0].failed_tests
        assert gb.find_submission("demo", "erin").late_submission_penalty == 4

    rows = export(course)
    assert {s: float(rows[s]["score"]) for s in rows} == {"alice": 4, "bob": 2, "carol": 0, "dave": 0, "erin": 0,
                                                          "frank": 0}


@needs_chromium
def test_formgrader_notebook_and_feedback_page_show_each_parts_report(course, tmp_path):
    """formgrader's notebook: each test cell shows the part's Spanish report and its score, and the student's
    cells what they printed in the sandbox. The feedback page shows the same, with the math as MathML, and
    opens in Chromium with no console error and no network request."""
    _, release = notebooks(course)
    submit(course, "bob", added(release, HALF_DONE, "print('hola desde el sandbox')"))
    grade_tree(course)
    nb = nbformat.read(course / "autograded" / "bob" / "demo" / "demo.ipynb", as_version=4)
    tests = {c.metadata.nbgrader["grade_id"]: c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}
    assert tests["double"].outputs[0].data["text/markdown"].startswith("**Parte «double»: 2 de 2 puntos.**")
    assert tests["double"].outputs[1].data["text/plain"] == "2"
    counter = tests["counter"].outputs[0].data["text/markdown"]
    assert "todavía no está implementada" in counter and "Comprobaciones ocultas: 0 de 1" in counter
    assert tests["counter"].outputs[1].data["text/plain"] == "0"
    printed = [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"]
    assert printed == ["hola desde el sandbox\n"]

    page = course / "feedback" / "bob" / "demo" / "demo.html"
    text = html.unescape(page.read_text())
    assert "Puntaje: <strong>2</strong> de 4" in text and "hola desde el sandbox" in text
    assert "Parte «counter»: 0 de 2 puntos" in text and "todavía no está implementada" in text
    assert "<math" in text and "$2x$" not in text
    load = open_page(page, screenshot=tmp_path / "feedback.png")
    assert load.ok, load.problems()
    assert (tmp_path / "feedback.png").stat().st_size > 10_000


def test_regrade_after_a_check_fix_keeps_manual_grades_comments_and_extra_credit(course):
    """Grade with a wrong hidden check, grade by hand in the database, fix the check, grade again, export:
    the auto score follows the fixed check, and every manual score, comment and extra credit is still there."""
    hidden = course / "autograder" / "checks" / "demo" / "test_hidden.py"
    right = hidden.read_text()
    hidden.write_text(right.replace('expect_close(student.double(x), 2 * x', 'expect_close(student.double(x), 3 * x'))
    _, release = notebooks(course)
    submit(course, "bob", added(release, HALF_DONE))
    grade_tree(course)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert gb.find_grade("double", "demo", "demo", "bob").auto_score == 1  # the wrong check cost a point
        grade = gb.find_grade("counter", "demo", "demo", "bob")
        grade.manual_score, grade.extra_credit = 0.5, 0.25
        gb.find_comment("double_code", "demo", "demo", "bob").manual_comment = "Bien, pero documenta la función."
        gb.db.commit()

    hidden.write_text(right)  # the fix
    grade_tree(course)

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        double = gb.find_grade("double", "demo", "demo", "bob")
        assert (double.auto_score, double.manual_score, double.needs_manual_grade) == (2, None, False)
        counter = gb.find_grade("counter", "demo", "demo", "bob")
        assert (counter.auto_score, counter.manual_score, counter.extra_credit) == (0, 0.5, 0.25)
        assert counter.needs_manual_grade  # nbgrader asks for a review of a manual score after an autograde
        assert gb.find_comment("double_code", "demo", "demo", "bob").manual_comment == \
            "Bien, pero documenta la función."
    assert float(export(course)["bob"]["score"]) == 2 + 0.5 + 0.25
    page = (course / "feedback" / "bob" / "demo" / "demo.html").read_text()
    assert "Bien, pero documenta la función." in page


def test_nbgrader_autograde_grades_a_hostile_notebook_in_the_isolated_worker(course, tmp_path):
    """`nbgrader autograde` with the course config never runs the notebook in a kernel on the host: the
    hostile cells' writes to host paths do not happen, and the scores still reach the gradebook."""
    solution, _ = notebooks(course)
    marker_host = tmp_path / "kernel-ran-on-host"
    marker_course = course / "kernel-ran-on-host"
    submit(course, "alice", added(
        solution,
        f"open({str(marker_host)!r}, 'w').write('x')",
        f"open({str(marker_course)!r}, 'w').write('x')",
        "import pathlib\npathlib.Path('/tmp/nbgrader-host-marker').touch()"))
    Path("/tmp/nbgrader-host-marker").unlink(missing_ok=True)
    done = nbgrader(course, "autograde", "demo", "--force")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Isolated grader: alice scored 4 of 4" in done.stderr
    assert not marker_host.exists() and not marker_course.exists()
    assert not Path("/tmp/nbgrader-host-marker").exists()
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert gb.find_submission("demo", "alice").score == 4
    assert (course / "autograded" / "demo" / "alice.json").is_file()  # graded by our pipeline, result kept


def _hidden_source_lines(root: Path) -> list[str]:
    """Distinctive lines of the hidden checks (titles excepted: feedback shows them by design)."""
    public = "".join(p.read_text() for p in (root / "release" / "demo").rglob("*") if p.is_file())
    lines = (root / "autograder" / "checks" / "demo" / "test_hidden.py").read_text().splitlines()
    return [line.strip() for line in lines
            if len(line.strip()) >= 10 and not line.strip().startswith('"""') and line.strip() not in public]


def test_feedback_shows_no_hidden_check_source_and_no_input_the_submission_printed_or_stashed(course, tmp_path):
    """Both feedback routes (`autograder grade` from any folder, and `nbgrader generate_feedback` on the
    course tree) are grepped for every hidden check line and every hidden input the hostile code leaked."""
    solution, _ = notebooks(course)
    hostile = added(solution, HOSTILE, STASH_READER)
    submit(course, "mallory", hostile, stamp="2026-11-25 10:00:00 UTC")
    grade_tree(course)
    done = nbgrader(course, "generate_feedback", "demo", "--force")
    assert done.returncode == 0, done.stderr[-3000:]
    flat = tmp_path / "flat"
    flat.mkdir()
    nbformat.write(hostile, flat / "mallory.ipynb")
    out = tmp_path / "out"
    direct = run_cli("--course", str(course), "grade", "demo", str(flat), "--out", str(out), "--seed", "7")
    assert direct.returncode == 0, direct.stderr

    assert f"{LEAK}-OUT (1,)" in result(course, "mallory")["extra_data"]["output"]  # it leaked, to the staff only
    pages = [*(course / "feedback").rglob("*.html"), *(out / "feedback").rglob("*.html")]
    assert len(pages) == 2
    secrets = _hidden_source_lines(course)
    assert "for shape in [(1,), (0, 3), (2, 1, 5)]:" in secrets
    for page in pages:
        text = page.read_text()
        for shown in (text, html.unescape(text)):
            assert LEAK not in shown, page
            assert not [line for line in secrets if line in shown], page
        assert "Comprobaciones ocultas: 0 de 1 superadas" in html.unescape(text)  # hidden: title and outcome
