"""Grading a class end to end on the engine's fixture course (independent of the course content)."""

import os
import shutil

import pytest

from autograder.grading.session import HungCell, hung_functions
from autograder.plugin import run_args, run_pytest
from autograder.remote import SECONDS_AFTER_TIMEOUT
from conftest import grade, with_cells, write

pytestmark = pytest.mark.slow

HALF_DONE = "def double(x):\n    return x * 2"


@pytest.fixture(scope="module")
def graded(demo_course, tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    release = demo_course.release_dir("demo") / "demo.ipynb"
    solution = demo_course.solutions_dir("demo") / "demo.ipynb"
    flat = root / "flat"
    flat.mkdir()
    shutil.copy(solution, flat / "solution.ipynb")
    shutil.copy(release, flat / "release.ipynb")
    write(with_cells(release, HALF_DONE), flat / "half.ipynb")
    (flat / "garbage.ipynb").write_bytes(b"\x00\x01 not a notebook")
    tree = root / "submitted"
    (tree / "zoe" / "demo").mkdir(parents=True)
    shutil.copy(solution, tree / "zoe" / "demo" / "demo.ipynb")
    (tree / "yuri" / "demo").mkdir(parents=True)
    out = root / "out"
    return grade(demo_course, "demo", [flat, tree], out), out


def test_the_solution_scores_max_and_the_release_zero(graded):
    """Does the solution earn every point and the untouched release none?"""
    results, _ = graded
    assert results["solution"]["score"] == results["solution"]["max_score"] == 4
    assert results["zoe"]["score"] == 4
    assert results["release"]["score"] == 0


def test_partial_work_earns_exactly_its_grade_cells(graded):
    """Does a notebook with one part done earn that part's cell and nothing else?"""
    cells = graded[0]["half"]["extra_data"]["grade_cells"]
    assert cells == {"double": {"score": 2.0, "max_score": 2.0}, "counter": {"score": 0.0, "max_score": 2.0}}


def test_unreadable_and_missing_submissions_get_a_result_with_a_reason(graded):
    """Do a garbage file and an empty student folder each get a zero result that says why?"""
    results, _ = graded
    assert results["garbage"]["extra_data"]["status"] == "invalid"
    assert "UTF-8" in results["garbage"]["output"] or "notebook" in results["garbage"]["output"]
    assert results["yuri"]["extra_data"]["status"] == "invalid"
    assert "ningún notebook" in results["yuri"]["output"]
    assert [t["score"] for t in results["yuri"]["tests"]] == [0.0] * 4


def test_results_follow_the_gradescope_schema(graded):
    """Does each result carry Gradescope's fields, with hidden checks visible only after the deadline?"""
    result = graded[0]["half"]
    assert {"score", "max_score", "output", "tests", "visibility"} <= set(result)
    for test in result["tests"]:
        assert {"name", "score", "max_score", "status", "output", "visibility"} <= set(test)
        assert test["status"] in ("passed", "failed")
        assert test["visibility"] == ("after_due_date" if test["extra_data"]["hidden"] else "visible")
    extra = result["extra_data"]
    assert {"cells", "limits", "isolation", "seed", "grader_version", "output"} <= set(extra)
    # Each grade cell's by-hand rule (a 0-point entry) comes before its checks, public before hidden.
    assert [t["extra_data"]["check"] for t in result["tests"]][:3] == [
        "by_hand:double", "test_double_matches_two_x", "test_double_keeps_shape_and_dtype"]


def test_cuda_cases_show_as_skipped_when_there_is_no_gpu(graded):
    """Without a GPU, is every cuda case listed as skipped rather than vanishing?"""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the cuda cases run")
    cases = [c for t in graded[0]["solution"]["tests"] for c in t["extra_data"]["cases"]]
    assert {c["outcome"] for c in cases if c["device"] == "cuda"} == {"skipped"}
    assert "no hay GPU" in graded[0]["solution"]["output"]


def test_gradebook_and_result_files(graded):
    """Is there one result file per student, no temporary file, and a gradebook row each?"""
    _, out = graded
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{s}.json" for s in ("solution", "release", "half", "garbage", "zoe", "yuri")]
                           + ["gradebook.csv"])
    rows = (out / "gradebook.csv").read_text().splitlines()
    assert rows[0] == "student,double,counter,total,max_score,status"
    assert "half,2,0,2,4,graded" in rows and "yuri,0,0,0,4,invalid" in rows


def test_hidden_feedback_reveals_no_values(demo_course, tmp_path):
    """For hidden checks, do messages omit the student's exception text (which may echo hidden inputs)?"""
    release = demo_course.release_dir("demo") / "demo.ipynb"
    leaky = write(with_cells(release, "def double(x):\n    raise ValueError(f'secret input {x.shape}')"),
                  tmp_path / "leaky.ipynb")
    result = grade(demo_course, "demo", [leaky], tmp_path / "out", workers=1)["leaky"]
    outputs = {t["extra_data"]["check"]: t["output"] for t in result["tests"]}
    assert "secret input" in outputs["test_double_matches_two_x"]
    assert "secret input" not in outputs["test_double_keeps_shape_and_dtype"]
    assert "ValueError" in outputs["test_double_keeps_shape_and_dtype"]


def test_a_function_that_hung_in_a_cell_gets_a_short_limit_in_the_checks(demo_course, tmp_path):
    """When a cell runs out of time inside `double`, do the checks that call `double` get SECONDS_AFTER_TIMEOUT
    instead of the full call limit and say so, while the rest grades as usual and the stack dump that named
    `double` stays out of the output?"""
    solution = demo_course.solutions_dir("demo") / "demo.ipynb"
    path = write(with_cells(solution, "def double(x):\n    while True:\n        pass", "double(1)"),
                 tmp_path / "subs" / "hang.ipynb")
    result = grade(demo_course, "demo", [path], tmp_path / "out", workers=1, cell_seconds=4, call_seconds=30)["hang"]
    assert [c["status"] for c in result["extra_data"]["cells"]][-1] == "timeout"
    double = [t for t in result["tests"] if t["extra_data"].get("grade_id") == "double" and "rule" not in
              t["extra_data"]]
    assert double and all(t["status"] == "failed" for t in double)
    for test in double:
        assert f"esta vez tuvo {SECONDS_AFTER_TIMEOUT:g} s" in test["output"]
        cpu = next(c for c in test["extra_data"]["cases"] if c["device"] == "cpu")
        assert cpu["seconds"] < SECONDS_AFTER_TIMEOUT + 5  # a restart, then the short limit: not the 30 s one
    assert result["extra_data"]["grade_cells"]["counter"]["score"] == 2
    assert "Timeout (" not in result["extra_data"]["output"]


def test_one_slot_grades_each_submission_on_its_own(demo_course, tmp_path):
    """Graded one after another by a single slot, whose checks run in one pytest session for all of them, does each
    submission get its own verdicts: a broken by-hand rule does not follow the next notebook, nor a score the one
    after, and the same code gets the same result wherever it comes? (tests/test_check_sessions.py compares a
    served run with a session of its own.)"""
    solution = demo_course.solutions_dir("demo") / "demo.ipynb"
    release = demo_course.release_dir("demo") / "demo.ipynb"
    adds = "def double(x):\n    return x + x"
    folder = tmp_path / "class"
    write(with_cells(solution, adds), folder / "a_adds.ipynb")
    shutil.copy(solution, folder / "b_solution.ipynb")
    shutil.copy(release, folder / "c_release.ipynb")
    write(with_cells(solution, "# otra entrega\n" + adds), folder / "d_adds.ipynb")
    together = grade(demo_course, "demo", [folder], tmp_path / "together", workers=1)

    def seen(result):
        return [(t["extra_data"]["check"], t["status"], t["score"], t["output"]) for t in result["tests"]]

    assert together["b_solution"]["score"] == 4
    assert {status for _, status, _, _ in seen(together["b_solution"])} == {"passed"}
    assert together["c_release"]["score"] == 0
    for name in ("a_adds", "d_adds"):
        cells = together[name]["extra_data"]["grade_cells"]
        assert cells["double"]["score"] == 0 and cells["counter"]["score"] == 2
    assert seen(together["a_adds"]) == seen(together["d_adds"])


DUMP = """antes
Timeout (0:00:29.500000)!
Thread 0x00007f0000000002 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 320 in wait
  File "<celda 9>", line 3 in monitor

Thread 0x00007f0000000001 (most recent call first):
  File "<celda 51>", line 6 in hit_and_auc
  File "<celda 53>", line 5 in <module>
  File "/work/autograder/worker/main.py", line 118 in run_cell
"""


def test_the_watchdog_dump_names_the_functions_of_every_thread_and_leaves_the_output():
    """Does the parser find the student's functions in every thread of a faulthandler dump (the main thread comes
    last), skip `<module>` and the engine's frames, and give back the output without the dump?"""
    hung = hung_functions(DUMP)
    assert hung.functions == {"hit_and_auc", "monitor"}
    assert hung.output == "antes\n"
    assert hung_functions("sin volcado\n") == HungCell("sin volcado\n", frozenset())


def test_check_runs_load_none_of_the_installed_pytest_plugins(tmp_path, monkeypatch):
    """Does a check run load only the plugins it names, not the `pytest11` entry points of the packages installed
    beside it (anyio's and hypothesis's in this environment, pytest-randomly in a student's), and leave the
    environment as it found it?"""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    (tmp_path / "test_probe.py").write_text("import pytest\n\n\n@pytest.mark.grade_id('probe')\n"
                                            "@pytest.mark.points(1)\ndef test_probe():\n    pass\n")
    loaded = []

    class Probe:
        def pytest_configure(self, config):
            loaded.extend(config.pluginmanager.list_plugin_distinfo())

    assert run_pytest(run_args([str(tmp_path / "test_probe.py")], str(tmp_path)), plugins=[Probe()]) == 0
    assert loaded == []
    assert "PYTEST_DISABLE_PLUGIN_AUTOLOAD" not in os.environ
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "0")
    assert run_pytest(run_args([str(tmp_path / "test_probe.py")], str(tmp_path)), plugins=[Probe()]) == 0
    assert loaded == [] and os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] == "0"
