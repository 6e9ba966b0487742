"""`autograder audit`: mutants of the solution's graded code, graded through the real pipeline."""

import ast
import copy
import json

import pytest

from autograder.audit import EQUIVALENTS_FILE, OPERATORS, AuditError, audit, generate_mutants, load_equivalents
from autograder.audit import mutate
from autograder.audit.mutate import cell_mutants, mutant_id, notebook_parts, solution_regions
from autograder.audit.run import BASELINE, verdict_of
from autograder.grading.options import GradeOptions, Limits
from conftest import REPO, build, copy_course, run_cli

#: One function that gives every operator something to change, one statement per line.
SAMPLE = '''\
def f(x, W, b, config, n):
    ### BEGIN SOLUTION
    out = x @ W.T + b
    probs = out.exp() / out.exp().sum(dim=-1, keepdim=True)
    best = probs.max(1)
    shifted = out - out.detach().mean(dim=0)
    head = x[:, 1:]
    total = 0
    for i in range(n):
        total += torch.clamp(x[i], 0.5, 2.0).sum()
    mask = x > 0
    y = torch.where(mask, x, b)
    ### END SOLUTION
    return out, probs, best, shifted, head, total, y
'''


def _changes(mutant) -> tuple[list[str], list[str]]:
    lines = mutant.diff.splitlines()[2:]
    return [l[1:] for l in lines if l.startswith("-")], [l[1:] for l in lines if l.startswith("+")]


def _notebook(*cells: tuple[str, dict | None]) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
            "cells": [{"cell_type": "code", "metadata": {"nbgrader": meta} if meta else {}, "source": source,
                       "outputs": [], "execution_count": None} for source, meta in cells]}


def _solution(grade_id: str) -> dict:
    return {"solution": True, "grade": False, "grade_id": f"{grade_id}_code", "locked": False}


def _grade(grade_id: str, points: int = 2) -> dict:
    return {"solution": False, "grade": True, "grade_id": grade_id, "locked": True, "points": points}


def test_every_operator_makes_one_small_change_on_one_line():
    """Does every mutant of the sample change exactly one line, and does every operator find something?"""
    mutants = cell_mutants(SAMPLE, part="p", cell=0)
    original = ast.unparse(ast.parse(SAMPLE)).splitlines()
    assert {m.operator for m in mutants} == set(OPERATORS)
    for m in mutants:
        removed, added = _changes(m)
        assert len(removed) == 1 and len(added) == 1, m.diff
        assert removed[0] in original and added[0] != removed[0]
        compile(m.source, "<mutant>", "exec")
        # everything else is untouched: the mutant has the original's lines but one
        assert len(m.source.splitlines()) == len(original)
        assert sum(a != b for a, b in zip(m.source.splitlines(), original)) == 1


@pytest.mark.parametrize("operator, before, after", [
    ("swap_operands", "out = x @ W.T + b", "out = W.T @ x + b"),
    ("constant", "total = 0", "total = 1"),
    ("constant", "torch.clamp(x[i], 0.5, 2.0)", "torch.clamp(x[i], 0.25, 2.0)"),
    ("axis", "out.exp().sum(dim=-1, keepdim=True)", "out.exp().sum(dim=-2, keepdim=True)"),
    ("axis", "out.exp().sum(dim=-1, keepdim=True)", "out.exp().sum(dim=-1, keepdim=False)"),
    ("axis", "best = probs.max(1)", "best = probs.max(0)"),
    ("operator", "out = x @ W.T + b", "out = x @ W.T - b"),
    ("operator", "total += torch", "total -= torch"),
    ("operator", "mask = x > 0", "mask = x >= 0"),
    ("reduction", "best = probs.max(1)", "best = probs.min(1)"),
    ("reduction", "out.detach().mean(dim=0)", "out.detach().sum(dim=0)"),
    ("drop_term", "out = x @ W.T + b", "out = x @ W.T\n"),
    ("drop_term", "shifted = out - out.detach()", "shifted = out\n"),
    ("transpose", "out = x @ W.T + b", "out = x @ W + b"),
    ("transpose", "out = x @ W.T + b", "out = x.transpose(-1, -2) @ W.T + b"),
    ("index", "head = x[:, 1:]", "head = x[:, 2:]"),
    ("index", "for i in range(n)", "for i in range(n - 1)"),
    ("remove_call", "out - out.detach().mean", "out - out.mean"),
    ("remove_call", "probs = out.exp() / out.exp().sum(dim=-1, keepdim=True)", "probs = out.exp()\n"),
    ("remove_call", "torch.clamp(x[i], 0.5, 2.0).sum()", "x[i].sum()"),
    ("swap_args", "torch.where(mask, x, b)", "torch.where(x, mask, b)"),
    ("swap_args", "torch.where(mask, x, b)", "torch.where(mask, b, x)"),
])
def test_each_operator_makes_the_change_it_names(operator, before, after):
    """Does each operator produce the textbook mutation it is named for (and only from code that has it)?"""
    mutants = [m for m in cell_mutants(SAMPLE, part="p", cell=0) if m.operator == operator]
    found = [m for m in mutants if before in _changes(m)[0][0] and after in m.source]
    assert len(found) == 1, [m.diff for m in mutants]


def test_shape_minus_one_is_left_alone_and_tuple_dims_are_moved_by_axis():
    """Is `-1` in `reshape`/`view` (infer this size) never a mutant, and does each entry of `dim=(...)` move
    under `axis`, not `constant`?"""
    source = "def g(x, n):\n    y = x.reshape(n, -1).view(1, -1, 1)\n    return y.sum(dim=(0, 2))\n"
    mutants = cell_mutants(source, part="p", cell=0)
    assert not any("-2" in _changes(m)[1][0] and "reshape" in _changes(m)[1][0] for m in mutants)
    assert [_changes(m)[1][0].strip() for m in mutants if m.operator == "axis"] == [
        "return y.sum(dim=(1, 2))", "return y.sum(dim=(0, 1))"]
    assert not any(m.operator == "constant" and "sum" in _changes(m)[1][0] for m in mutants)
    assert {_changes(m)[1][0].strip() for m in mutants if m.operator == "constant"} == {
        "y = x.reshape(n, -1).view(2, -1, 1)", "y = x.reshape(n, -1).view(1, -1, 2)"}


def test_only_code_between_the_solution_markers_is_mutated():
    """Is template code outside `### BEGIN/END SOLUTION` left alone (it is not the student's)?"""
    source = "def g(x):\n    y = x + 1\n    ### BEGIN SOLUTION\n    z = y * 2\n    ### END SOLUTION\n    return z - 3\n"
    assert solution_regions(source) == [(4, 4)]
    mutants = cell_mutants(source, part="p", cell=0)
    assert mutants and all(_changes(m)[0] == ["    z = y * 2"] for m in mutants)


def test_top_level_code_outside_definitions_is_not_mutated():
    """Are only functions and classes mutated, not top-level statements of a solution cell?"""
    assert cell_mutants("rate = 0.5 * 2\n", part="p", cell=0) == []


def test_uncompilable_and_no_op_mutants_are_dropped(monkeypatch):
    """Are mutants that do not compile, that unparse to the original, or that repeat another dropped?"""
    def starred(node, ctx):  # `*x` as an assignment's value does not compile
        if isinstance(node, ast.Name) and isinstance(ctx.parent, ast.Assign) and ctx.field == "value":
            yield "starred", ast.Starred(copy.deepcopy(node), ast.Load())

    def same(node, ctx):
        if isinstance(node, ast.BinOp):
            yield "no-op", copy.deepcopy(node)

    monkeypatch.setitem(mutate.OPERATOR_FUNCTIONS, "starred", starred)
    monkeypatch.setitem(mutate.OPERATOR_FUNCTIONS, "same", same)
    source = "def g(a):\n    b = a\n    return a + a\n"
    assert cell_mutants(source, part="p", cell=0, operators=("starred", "same")) == []
    # dropping either term of `a + a` gives the same code: one mutant, not two
    assert [m.description for m in cell_mutants(source, part="p", cell=0, operators=("drop_term",))] == \
        ["drop the right term of `+`"]


def test_mutant_ids_survive_unrelated_edits():
    """Does a mutant keep its id when other code of the cell changes (so the equivalents file stays valid)?"""
    edited = SAMPLE.replace("    ### END SOLUTION\n", "    extra = 7 * n\n    ### END SOLUTION\n")
    before = {m.id: m.description for m in cell_mutants(SAMPLE, part="p", cell=0)}
    after = {m.id: m.description for m in cell_mutants(edited, part="p", cell=0)}
    assert before.items() <= after.items()
    assert mutant_id("p", "f", "constant", ("-a", "+b")) != mutant_id("q", "f", "constant", ("-a", "+b"))


def test_parts_are_grade_cells_with_the_solution_cells_before_them():
    """Does each grade cell own the definitions of the solution cells since the previous grade cell?"""
    nb = _notebook(("import torch", None), (SAMPLE, _solution("one")), ("check('one')", _grade("one")),
                   ("def h(x):\n    return x - 1\n", _solution("two")), ("class K:\n    pass\n", _solution("two")),
                   ("check('two')", _grade("two")), ("check('three')", _grade("three")))
    parts = notebook_parts(nb)
    assert [(p.grade_id, p.cells, p.definitions) for p in parts] == [
        ("one", (1,), ("f",)), ("two", (3, 4), ("h", "K")), ("three", (), ())]


def test_sampling_is_seeded_capped_and_even_over_parts():
    """Same seed, same mutants; another seed, another sample; the cap is shared evenly by the parts."""
    notebook = json.loads((REPO / "solutions" / "u1_backprop" / "u1_backprop.ipynb").read_text())
    first = generate_mutants(notebook, seed=3, max_mutants=40)
    again = generate_mutants(notebook, seed=3, max_mutants=40)
    other = generate_mutants(notebook, seed=4, max_mutants=40)
    assert [m.id for m in first.mutants] == [m.id for m in again.mutants]
    assert {m.id for m in first.mutants} != {m.id for m in other.mutants}
    assert len(first.mutants) == 40
    per_part = {p.grade_id: sum(m.part == p.grade_id for m in first.mutants) for p in first.parts}
    available = {p: sum(c.values()) for p, c in first.candidates.items()}
    assert per_part["training"] == 0 == available["training"]  # no solution cell of its own
    assert per_part["relu"] == available["relu"] == 5  # a small part gives all it has
    big = [n for p, n in per_part.items() if available[p] > 6]
    assert max(big) - min(big) <= 1, per_part
    # within a part, operators take turns: no operator gets two before another with candidates gets one
    optim = [m.operator for m in first.mutants if m.part == "optim"]
    assert len(set(optim)) == len(optim)


def test_unknown_parts_are_refused():
    """Does asking for a grade cell the notebook lacks name the ones it has?"""
    nb = _notebook((SAMPLE, _solution("one")), ("check('one')", _grade("one")))
    with pytest.raises(ValueError, match="unknown part.*grade cells: one"):
        generate_mutants(nb, parts=["nope"])


def _result(cells: dict[str, tuple[float, float]], failing: list[tuple[str, str, bool]], status="graded") -> dict:
    tests = [{"status": "failed", "extra_data": {"check": check, "grade_id": grade_id, "hidden": hidden}}
             for check, grade_id, hidden in failing]
    return {"tests": tests, "extra_data": {"status": status, "grade_cells": {
        g: {"score": s, "max_score": m} for g, (s, m) in cells.items()}}}


def test_verdicts_say_whether_public_or_only_hidden_checks_killed():
    """Killed by public when any public check (or the rule) of its part failed, by hidden when only hidden ones did."""
    [m] = [m for m in cell_mutants("def f(x):\n    return x + 1\n", part="a", cell=0) if m.operator == "constant"]
    full = {"a": (2.0, 2.0), "b": (1.0, 1.0)}
    public = verdict_of(m, _result({"a": (0.0, 2.0), "b": (0.0, 1.0)}, [("t_pub", "a", False), ("t_hid", "a", True),
                                                                        ("t_b", "b", False)]),
                        baseline=full, equivalents={})
    assert (public.verdict, public.killed_by, public.other_parts) == ("killed", "public", ["b"])
    assert [f.check for f in public.failed] == ["t_pub", "t_hid"]
    hidden = verdict_of(m, _result({"a": (1.0, 2.0), "b": (1.0, 1.0)}, [("t_hid", "a", True)]), baseline=full,
                        equivalents={})
    assert (hidden.verdict, hidden.killed_by) == ("killed", "hidden")
    survived = verdict_of(m, _result(full, [("t_b", "b", False)]), baseline=full, equivalents={})
    assert survived.verdict == "survived"
    equivalent = verdict_of(m, _result(full, []), baseline=full, equivalents={m.id: "same maths"})
    assert (equivalent.verdict, equivalent.reason) == ("equivalent", "same maths")
    assert verdict_of(m, _result(full, [], status="error"), baseline=full, equivalents={}).verdict == "other"
    broken_baseline = {"a": (1.0, 2.0), "b": (1.0, 1.0)}
    assert verdict_of(m, _result(full, []), baseline=broken_baseline, equivalents={}).verdict == "other"


def test_equivalents_file_needs_ids_and_reasons(tmp_path):
    """Is an entry without a reason refused, and a missing file read as no equivalents?"""
    path = tmp_path / EQUIVALENTS_FILE
    assert load_equivalents(path) == {}
    path.write_text('[[mutant]]\nid = "abc"\nreason = "clamp at 0 of a square is a no-op here"\n')
    assert load_equivalents(path) == {"abc": "clamp at 0 of a square is a no-op here"}
    path.write_text('[[mutant]]\nid = "abc"\n')
    with pytest.raises(AuditError, match="non-empty `reason`"):
        load_equivalents(path)


# --------------------------------------------------------------------------- end to end on the fixture course

WEAK_PUBLIC = '''"""Weak public checks: shapes only for `double`, a number for `Counter`."""

import pytest

from autograder.checklib import expect_number, expect_tensor, randn
from autograder.checklib.forbidden import AUTOGRAD
from autograder.rules import ByHand, Forbidden

ADD = Forbidden("`torch.add`", "ni `+`", ops=frozenset({"add", "add_"}), names=frozenset({"add"}))
BY_HAND = [ByHand("double", names=("double",), forbid=(ADD, AUTOGRAD), instead="multiplica por 2")]


@pytest.mark.grade_id("double")
@pytest.mark.points(1)
def test_double_keeps_shape(student, device, rng):
    """¿`double(x)` conserva la forma?"""
    x = randn(rng, 3, 4, device=device)
    expect_tensor(student.double(x), shape=x.shape, dtype=x.dtype, name="double(x)")


@pytest.mark.grade_id("counter")
@pytest.mark.points(1)
def test_counter_has_a_total(student):
    """¿`Counter` tiene un total numérico?"""
    expect_number(student.Counter().total, name="Counter.total")
'''

WEAK_HIDDEN = '''"""Hidden checks: still shapes only for `double`; the counter's chaining is checked for real."""

import pytest

from autograder.checklib import expect_number, expect_tensor, randn

pytestmark = pytest.mark.hidden


@pytest.mark.grade_id("double")
@pytest.mark.points(1)
def test_double_keeps_shape_in_edge_cases(student, device, rng):
    """¿`double` conserva la forma en casos borde?"""
    x = randn(rng, 2, 1, 5, device=device)
    expect_tensor(student.double(x), shape=x.shape, dtype=x.dtype, name="double(x)")


@pytest.mark.grade_id("counter")
@pytest.mark.points(1)
def test_counter_chains(student):
    """¿`Counter.add` devuelve el mismo contador para encadenar llamadas?"""
    counter = student.Counter().add(1).add(1)
    assert expect_number(counter.total, name="Counter.total") == 2, "`add` debe devolver `self`."
'''


def _options() -> dict:
    return GradeOptions(limits=Limits(), seed=7, devices=("cpu",)).to_dict()


@pytest.fixture(scope="module")
def weak_course(tmp_path_factory):
    """The fixture course with weak checks: `double` checked by shape only, `counter` only by a hidden check."""
    course = copy_course(tmp_path_factory.mktemp("weak") / "course")
    checks = course.checks_dir("demo")
    (checks / "test_public.py").write_text(WEAK_PUBLIC, encoding="utf-8")
    (checks / "test_hidden.py").write_text(WEAK_HIDDEN, encoding="utf-8")
    build(course, "demo")
    return course


@pytest.mark.slow
def test_strong_checks_kill_every_mutant_and_name_the_public_checks(demo_course, tmp_path):
    """With the fixture's real checks, is every mutant killed, by a public check that the report names?"""
    report = audit(course=demo_course, assignment="demo", out_dir=tmp_path / "audit", workers=1, options=_options(),
                   progress=False)
    assert report.baseline == {"double": (2.0, 2.0), "counter": (2.0, 2.0)}
    assert report.total.mutants == report.total.killed_public >= 4 and report.survivors() == []
    doubles = [v for v in report.verdicts if v.mutant.part == "double"]
    assert all({"test_double_matches_two_x", "test_double_keeps_shape_and_dtype"} <= {f.check for f in v.failed}
               for v in doubles)
    assert all(any(f.hidden for f in v.failed) and any(not f.hidden for f in v.failed) for v in doubles)
    data = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert data["overall"]["killed_public"] == report.total.mutants and data["overall"]["kill_rate"] == 1.0
    assert (tmp_path / "audit" / "results" / f"{BASELINE}.json").is_file()


@pytest.mark.slow
def test_weak_checks_let_mutants_survive_until_marked_equivalent(weak_course, tmp_path):
    """With shape-only checks, do `double`'s mutants survive (diffs shown), are the counter's killed by the hidden
    check alone, and does the equivalents file move a survivor to 'equivalent' without grading again?"""
    out = tmp_path / "audit"
    report = audit(course=weak_course, assignment="demo", out_dir=out, workers=1, options=_options(),
                   progress=False)
    tally = {t.grade_id: t for t in report.parts}
    assert tally["double"].survived == tally["double"].mutants >= 2
    assert tally["counter"].killed_hidden == tally["counter"].mutants >= 2 and tally["counter"].killed_public == 0
    constant = next(v for v in report.survivors() if v.mutant.operator == "constant")
    assert "-    return 2 * x" in constant.mutant.diff and "+    return 3 * x" in constant.mutant.diff
    page = (out / "audit.html").read_text()
    assert "return 3 * x" in page and "<script" not in page and "http" not in page.split("</head>")[0]

    (weak_course.checks_dir("demo") / EQUIVALENTS_FILE).write_text(
        f'[[mutant]]\nid = "{constant.mutant.id}"\nreason = "pretend 3x is as good as 2x"\n'
        '[[mutant]]\nid = "000000000000"\nreason = "a mutant that no longer exists"\n')
    done = run_cli("--course", str(weak_course.root), "audit", "demo", "--out", str(out), "--seed", "7",
                   "--devices", "cpu")  # same seed as above: the same mutants, every result kept
    assert done.returncode == 0, done.stderr
    data = json.loads((out / "audit.json").read_text())
    assert data["parts"][0]["equivalent"] == 1 and data["parts"][0]["survived"] == tally["double"].survived - 1
    assert data["stale_equivalents"] == ["000000000000"]
    marked = next(m for m in data["mutants"] if m["id"] == constant.mutant.id)
    assert marked["verdict"] == "equivalent" and marked["reason"] == "pretend 3x is as good as 2x"
    assert "survivor(s)" in done.stdout and "+    return 2 / x" in done.stdout
    assert "corrigiendo" not in done.stderr  # nothing was graded again
