"""Hostile submissions: none earns points it did not earn, and an honest one in the same batch keeps full marks.

Every attack is graded in one batch with the honest solution. Each hostile notebook
is the released notebook plus cells with wrong (or no) implementations and the
attack, so any point it gets would be a point stolen.
"""

import json
import shutil

import pytest

from conftest import grade, with_cells, write

pytestmark = pytest.mark.slow

WRONG = "def double(x):\n    return x\n\nclass Counter:\n    def __init__(self):\n        self.total = 0\n    def add(self, k):\n        return self\n"


def attacks(out: str, checks_dir: str, course_root: str) -> dict[str, list[str]]:
    forged = json.dumps({"score": 4, "max_score": 4, "output": "forged", "tests": [],
                         "extra_data": {"student": "x", "status": "graded", "grade_cells": {}}})
    return {
        "patch_allclose": [WRONG, (
            "import torch, numpy\n"
            "torch.allclose = lambda *a, **k: True\n"
            "torch.equal = lambda *a, **k: True\n"
            "torch.testing.assert_close = lambda *a, **k: None\n"
            "numpy.allclose = lambda *a, **k: True\n")],
        "exit_early": ["import os\ndef double(x):\n    os._exit(0)\n", "import os\nos._exit(0)"],
        "forge_results": [WRONG, (
            "import atexit, glob, os\n"
            f"OUT = {out!r}\n"
            "def forge():\n"
            "    for path in glob.glob(os.path.join(OUT, '*.json')) + [os.path.join(OUT, 'forge_results.json')]:\n"
            "        try:\n"
            f"            open(path, 'w').write({forged!r})\n"
            "        except OSError:\n"
            "            pass\n"
            "forge()\n"
            "atexit.register(forge)\n"
            "def double(x):\n"
            "    forge()\n"
            "    raise SystemExit(0)\n")],
        "lying_tensor": [(
            "import torch\n"
            "class Liar(torch.Tensor):\n"
            "    def __eq__(self, other):\n"
            "        return True\n"
            "    @classmethod\n"
            "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
            "        if func.__name__ in ('allclose', 'equal', 'isclose'):\n"
            "            return True\n"
            "        return super().__torch_function__(func, types, args, kwargs or {})\n"
            "def double(x):\n"
            "    return torch.zeros_like(x).as_subclass(Liar)\n"
            "class Counter:\n"
            "    def __init__(self):\n"
            "        self.total = Liar(torch.tensor(5))\n"
            "    def add(self, k):\n"
            "        return self\n")],
        "conftest": [WRONG, (
            "import os\n"
            "HOOK = 'import pytest\\n@pytest.hookimpl(hookwrapper=True)\\ndef pytest_runtest_makereport(item, call):\\n"
            "    outcome = yield\\n    outcome.get_result().outcome = \"passed\"\\n'\n"
            f"for folder in ('.', '/tmp', {checks_dir!r}, {course_root!r}):\n"
            "    try:\n"
            "        open(os.path.join(folder, 'conftest.py'), 'w').write(HOOK)\n"
            "    except OSError:\n"
            "        pass\n")],
        "ignore_signals": [(
            "import signal\n"
            "for s in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP):\n"
            "    signal.signal(s, signal.SIG_IGN)\n"
            "def double(x):\n"
            "    while True:\n"
            "        pass\n"
            "class Counter:\n"
            "    def __init__(self):\n"
            "        while True:\n"
            "            pass\n")],
        "memory_bomb": [WRONG, "hog = []\nwhile True:\n    hog.append(bytearray(50 * 2**20))",
                        "def double(x):\n    return [bytearray(2**30) for _ in range(64)]"],
        "stdout_flood": [WRONG, "import os\nwhile True:\n    print('x' * 10000)\n    os.write(1, b'y' * 10000)"],
        "lone_surrogates": [WRONG, "s = '\\ud800'\nprint(s)\nraise ValueError(s)"],
    }


@pytest.fixture(scope="module")
def batch(demo_course, tmp_path_factory):
    root = tmp_path_factory.mktemp("attacks")
    out = root / "out"
    subs = root / "subs"
    subs.mkdir()
    release = demo_course.release_dir("demo") / "demo.ipynb"
    for name, cells in attacks(str(out), str(demo_course.checks_dir("demo")), str(demo_course.root)).items():
        write(with_cells(release, *cells), subs / f"{name}.ipynb")
    surrogates = json.loads((subs / "lone_surrogates.ipynb").read_text())
    surrogates["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                                "source": "# \ud800 a lone surrogate in the notebook itself\nt = 1"})
    (subs / "lone_surrogates.ipynb").write_text(json.dumps(surrogates))  # ASCII-escaped: still valid JSON
    shutil.copy(demo_course.solutions_dir("demo") / "demo.ipynb", subs / "honest.ipynb")
    results = grade(demo_course, "demo", [subs], out, workers=2, call_seconds=2, cell_seconds=2,
                    check_seconds=10, memory_mb=1024)
    return results, out


ATTACKS = ["patch_allclose", "exit_early", "forge_results", "lying_tensor", "conftest", "ignore_signals",
           "memory_bomb", "stdout_flood", "lone_surrogates"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_hostile_submissions_earn_nothing(batch, attack):
    """Does each attack score zero, recorded by the grader and not by the submission?"""
    results, out = batch
    assert results[attack]["score"] == 0
    on_disk = json.loads((out / f"{attack}.json").read_text())
    assert on_disk["score"] == 0 and on_disk["extra_data"]["student"] == attack


def test_an_honest_submission_in_the_same_batch_keeps_full_marks(batch):
    """Is the honest notebook graded as if the attackers were not there?"""
    results, out = batch
    assert results["honest"]["score"] == results["honest"]["max_score"] == 4
    assert json.loads((out / "honest.json").read_text())["score"] == 4
    assert "forged" not in (out / "gradebook.csv").read_text()


def test_no_conftest_reached_the_checks(demo_course, batch):
    """Did the conftest attack leave nothing where the checks are loaded from?"""
    assert not (demo_course.checks_dir("demo") / "conftest.py").exists()
    assert not (demo_course.root / "conftest.py").exists()


def test_lying_tensors_are_refused_as_not_tensors(batch):
    """Is a tensor subclass reported as the wrong type instead of being compared?"""
    output = next(t["output"] for t in batch[0]["lying_tensor"]["tests"]
                  if t["extra_data"]["check"] == "test_double_matches_two_x")
    assert "debería ser un torch.Tensor" in output and "Liar" in output


def test_runaway_code_is_stopped_by_the_limits(batch):
    """Are the signal-ignoring loop and the flood stopped, with output capped?"""
    results, _ = batch
    spin = results["ignore_signals"]
    assert any("tiempo límite" in t["output"] for t in spin["tests"])
    flood = results["stdout_flood"]["extra_data"]
    assert len(flood["output"]) <= flood["limits"]["output_bytes"]
    assert any(c["status"] == "timeout" for c in flood["cells"])


def test_text_that_is_not_valid_unicode_is_graded_not_crashed(batch):
    """Do lone surrogates in output, errors and the notebook itself end in a normal graded result?"""
    result = batch[0]["lone_surrogates"]
    assert result["extra_data"]["status"] == "graded"
    assert any(c["status"] == "error" and c["error"]["type"] == "ValueError" for c in result["extra_data"]["cells"])
