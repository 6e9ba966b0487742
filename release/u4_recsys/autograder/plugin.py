"""pytest plugin for checks: markers, options, fixtures and one outcome per check case.

Loaded with `-p autograder.plugin` both when grading (trusted process, student code in
a worker) and in the student's notebook (`autograder.selfcheck`). All grading metadata
is in markers, registered here and parsed strictly:

    @pytest.mark.grade_id("linear")     the nbgrader grade cell the check counts for
    @pytest.mark.points(2)              its points, split evenly over the device cases that run
    @pytest.mark.hidden                 withheld from students (not released; terse feedback)
    @pytest.mark.devices("cpu")         restrict the `device` cases (default: cpu and cuda)
    @pytest.mark.timing(max_ratio=50)   a speed check (see the `speed_budget` fixture)
    @pytest.mark.time_limit(120)        wall-clock budget for one case of the check

Settings resolve marker -> command line -> ini -> default, as pytest-timeout does.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch

from .checklib.timing import SpeedBudget
from .errors import CheckFailure
from .remote import call_deadline
from .rules import ByHand, RuleVerdict, RuleWatch

MARKERS = {
    "grade_id(name)": "the nbgrader grade cell (autograder test cell) this check counts for",
    "points(value)": "points of the check, split evenly over the device cases that run",
    "hidden": "withheld from students: never released, feedback shows no inputs or values",
    "devices(*names)": "devices this check runs on (default: cpu and cuda; cuda skips without a GPU)",
    "timing(max_ratio, repeats=None)": "speed check: student time / reference time must stay <= max_ratio",
    "time_limit(seconds)": "wall-clock budget for one case of this check",
}
ALL_DEVICES = ("cpu", "cuda")
NO_GPU = "no hay GPU en esta máquina"
DEFAULTS = {"check_seconds": 60.0, "timing_repeats": 5, "timing_scale": 1.0}
INTERNAL_ERROR = (
    "No se pudo evaluar esta comprobación ({kind}). Revisa que tus funciones devuelvan "
    "lo que pide el enunciado; si crees que es un error del corrector, avisa a los docentes."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autograder")
    group.addoption("--ag-seed", type=int, default=None, help="seed for the checks' random inputs (default: fresh)")
    group.addoption("--ag-devices", default=None, help="comma-separated devices allowed to run (default: cpu,cuda)")
    group.addoption("--ag-grade-id", default=None, help="run only the checks of this grade cell")
    group.addoption("--ag-public-only", action="store_true", help="leave hidden checks out")
    group.addoption("--ag-check-seconds", type=float, default=None, help="default time budget of a check case")
    group.addoption("--ag-timing-repeats", type=int, default=None, help="timed repeats in speed checks")
    group.addoption("--ag-timing-scale", type=float, default=None, help="multiply every max_ratio (slow machines)")
    for name, default in DEFAULTS.items():
        parser.addini(f"ag_{name}", help=f"default for --ag-{name.replace('_', '-')}", default=str(default))


def pytest_configure(config: pytest.Config) -> None:
    for signature, text in MARKERS.items():
        config.addinivalue_line("markers", f"{signature}: {text}")


def setting(config: pytest.Config, name: str) -> float:
    """Command line, then ini, then default."""
    value = config.getoption(f"ag_{name}")
    if value is None:
        value = config.getini(f"ag_{name}")
    return type(DEFAULTS[name])(value)


def allowed_devices(config: pytest.Config) -> tuple[str, ...]:
    option = config.getoption("ag_devices")
    return tuple(d for d in option.split(",") if d) if option else ALL_DEVICES


def cuda_available() -> bool:
    return torch.cuda.is_available()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("devices")
    devices = marker.args if marker else ALL_DEVICES
    allowed = allowed_devices(metafunc.config)
    params = []
    for device in devices:
        if device == "cuda" and not cuda_available():
            reason = NO_GPU
        elif device not in allowed:
            reason = f"el dispositivo {device} no está habilitado en esta corrida"
        else:
            reason = None
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(device, marks=marks, id=device))
    metafunc.parametrize("device", params)


def check_metadata(item: pytest.Item) -> tuple[str | None, float | None, list[str]]:
    """grade_id, points, and the problems with this check's markers."""
    problems = []
    grade = item.get_closest_marker("grade_id")
    points = item.get_closest_marker("points")
    grade_id = grade.args[0] if grade and len(grade.args) == 1 and isinstance(grade.args[0], str) else None
    value = points.args[0] if points and len(points.args) == 1 else None
    if grade_id is None:
        problems.append(f"{item.nodeid}: needs exactly one @pytest.mark.grade_id('<grade cell id>')")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        problems.append(f"{item.nodeid}: needs @pytest.mark.points(<positive number>)")
        value = None
    devices = item.get_closest_marker("devices")
    if devices and (not devices.args or set(devices.args) - set(ALL_DEVICES) or "cpu" not in devices.args):
        problems.append(f"{item.nodeid}: devices(...) must list known devices and include 'cpu'")
    timing = item.get_closest_marker("timing")
    if timing and "speed_budget" not in getattr(item, "fixturenames", ()):
        problems.append(f"{item.nodeid}: a timing(...) check must use the speed_budget fixture")
    return grade_id, value, problems


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        problems += check_metadata(item)[2]
    if problems:
        raise pytest.UsageError("invalid check markers:\n" + "\n".join(problems))
    grade_id = config.getoption("ag_grade_id")
    public_only = config.getoption("ag_public_only")
    keep, drop = [], []
    for item in items:
        hidden = item.get_closest_marker("hidden") is not None
        wanted = (not public_only or not hidden) and (
            grade_id is None or item.get_closest_marker("grade_id").args[0] == grade_id)
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    # Every public check runs before any hidden one: a hidden input the submission stashes can then
    # never come back through a public check's detailed message.
    items[:] = sorted(keep, key=lambda item: item.get_closest_marker("hidden") is not None)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> torch.Generator:
    """A generator seeded from the run's seed and the check case: fresh each run, reproducible with --ag-seed."""
    seed = request.config.getoption("ag_seed")
    if seed is None:
        seed = random.SystemRandom().getrandbits(63)
    digest = hashlib.sha256(f"{seed}:{request.node.nodeid}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


@pytest.fixture
def speed_budget(request: pytest.FixtureRequest) -> SpeedBudget:
    """The timing marker's budget, scaled by --ag-timing-scale; records the measured ratio."""
    marker = request.node.get_closest_marker("timing")
    if marker is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses speed_budget without a timing marker")
    config = request.config
    repeats = marker.kwargs.get("repeats") or int(setting(config, "timing_repeats"))
    max_ratio = float(marker.kwargs.get("max_ratio", marker.args[0] if marker.args else 0))
    return SpeedBudget(max_ratio=max_ratio * setting(config, "timing_scale"), repeats=repeats,
                       record=lambda key, value: request.node.user_properties.append((key, value)))


@dataclass
class CaseOutcome:
    """The result of one case (check x device) as the grader and the student see it."""

    check: str
    nodeid: str
    title: str
    grade_id: str
    points: float
    hidden: bool
    device: str
    outcome: str  # passed | failed | skipped
    message: str = ""
    ta_detail: str = ""
    seconds: float = 0.0
    properties: dict = field(default_factory=dict)


def check_score(points: float, cases: list[CaseOutcome]) -> float:
    """Points earned by one check: an even share per device case that ran and passed.

    Without a GPU the cuda case is skipped and the cpu case carries all the points;
    with one, each case carries half. The maximum never depends on the machine.
    """
    ran = [c for c in cases if c.outcome != "skipped"]
    if not ran:
        return 0.0
    return round(points * sum(c.outcome == "passed" for c in ran) / len(ran), 6)


def title_of(item: pytest.Item) -> str:
    doc = (getattr(item, "obj", None).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else item.name


def render_failure(excinfo: pytest.ExceptionInfo, *, hidden: bool) -> tuple[str, str]:
    """(message for the student, detail for TAs) of a failed case."""
    exc = excinfo.value
    if isinstance(exc, CheckFailure):
        return exc.render(reveal=not hidden), exc.render(reveal=True)
    ta = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return INTERNAL_ERROR.format(kind=type(exc).__name__), ta


class CheckRun:
    """Per-run plugin object: provides `student`, collects one outcome per check case, and
    judges the by-hand rules the check files declare (`BY_HAND`) through `watch`."""

    def __init__(self, make_student: Callable[[], object], *, watch: RuleWatch | None = None) -> None:
        self._make_student = make_student
        self.watch = watch
        self.outcomes: list[CaseOutcome] = []
        self.errors: list[str] = []
        self.rules: tuple[ByHand, ...] = ()
        self.verdicts: list[RuleVerdict] = []

    def begin(self, make_student: Callable[[], object], *, watch: RuleWatch) -> None:
        """Start another submission's run in the same session (`CheckSuite.serve`): its `student`, its watch, no
        outcomes yet."""
        self._make_student, self.watch = make_student, watch
        self.outcomes, self.verdicts = [], []
        watch.use(self.rules)

    def conclude(self) -> None:
        """Judge the by-hand rules of the run that ends (once: the source scan is not free)."""
        watch, self.watch = self.watch, None
        if watch is not None and self.rules:
            self.verdicts = watch.verdicts()

    @pytest.fixture
    def student(self) -> object:
        """The submission's namespace: `student.NAME` is what the notebook defines."""
        return self._make_student()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        marker = item.get_closest_marker("time_limit")
        budget = marker.args[0] if marker else setting(item.config, "check_seconds")
        token = call_deadline.set(time.monotonic() + budget)
        try:
            yield
        finally:
            call_deadline.reset(token)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
        """The report, built without pytest's traceback rendering (it parses source; nobody reads it here)."""
        excinfo = call.excinfo
        if excinfo is None:
            outcome, longrepr = "passed", None
        elif isinstance(excinfo.value, pytest.skip.Exception):
            outcome, longrepr = "skipped", (str(item.path), 0, excinfo.value.msg)
        else:
            outcome, longrepr = "failed", f"{excinfo.typename}: {excinfo.value}"
        report = pytest.TestReport(
            item.nodeid, item.location, dict.fromkeys(item.keywords, 1), outcome, longrepr, call.when,
            duration=call.duration, start=call.start, stop=call.stop, user_properties=item.user_properties,
        )
        if call.when == "call" or (call.when == "setup" and outcome != "passed"):
            self._record(item, call, outcome)
        return report

    def _record(self, item: pytest.Item, call: pytest.CallInfo, outcome: str) -> None:
        grade_id, points, _ = check_metadata(item)
        hidden = item.get_closest_marker("hidden") is not None
        callspec = getattr(item, "callspec", None)
        case = CaseOutcome(
            check=getattr(item, "originalname", item.name), nodeid=item.nodeid, title=title_of(item),
            grade_id=grade_id, points=points, hidden=hidden,
            device=callspec.params.get("device", "cpu") if callspec else "cpu",
            outcome=outcome, seconds=call.duration, properties=dict(item.user_properties),
        )
        if outcome == "skipped":
            case.message = case.ta_detail = call.excinfo.value.msg
        elif outcome == "failed":
            case.message, case.ta_detail = render_failure(call.excinfo, hidden=hidden)
        self.outcomes.append(case)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        for item in items:
            self.errors += check_metadata(item)[2]
        rules, problems = declared_rules(items)
        self.errors += problems
        grade_id = config.getoption("ag_grade_id")
        self.rules = tuple(r for r in rules if grade_id is None or r.grade_id == grade_id)
        if self.watch is not None:
            self.watch.use(self.rules)

    def pytest_sessionfinish(self) -> None:
        self.conclude()

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.errors.append(str(report.longrepr))


def declared_rules(items: list[pytest.Item]) -> tuple[list[ByHand], list[str]]:
    """The `BY_HAND` rules of the collected check modules, and what is wrong with them."""
    rules: list[ByHand] = []
    problems: list[str] = []
    modules: dict[object, list[pytest.Item]] = {}
    for item in items:
        module = getattr(item, "module", None)
        if module is not None:
            modules.setdefault(module, []).append(item)
    grade_ids = {check_metadata(item)[0] for item in items}
    for module, module_items in modules.items():
        declared = getattr(module, "BY_HAND", None)
        if declared is None:
            continue
        where = module.__name__
        if not isinstance(declared, (list, tuple)) or not all(isinstance(r, ByHand) for r in declared):
            problems.append(f"{where}: BY_HAND must be a list of autograder.rules.ByHand")
            continue
        if any(item.get_closest_marker("hidden") for item in module_items):
            problems.append(f"{where}: by-hand rules are public; declare BY_HAND in a public check file")
        for rule in declared:
            if rule.grade_id not in grade_ids:
                problems.append(f"{where}: a by-hand rule names grade cell {rule.grade_id!r}, which has no checks")
            if rule not in rules:
                rules.append(rule)
    return rules, problems


#: Built-in plugins that cost time per run and add nothing to a check run.
QUIET_ARGS = [
    "-p", "no:cacheprovider", "-p", "no:unraisableexception", "-p", "no:threadexception",
    "-p", "no:logging", "-p", "no:warnings", "-p", "no:doctest", "-p", "no:junitxml",
    "-p", "no:pastebin", "-p", "no:legacypath", "-p", "no:stepwise", "-p", "no:lfplugin",
    "-p", "no:setuponly", "-p", "no:setupplan", "-p", "no:terminal", "-p", "no:debugging",
]


def run_pytest(args: list[str], *, plugins: list[object]) -> int | pytest.ExitCode:
    """`pytest.main` with only the plugins named here and in `args`: not the `pytest11` entry points of every
    package installed next to it (a plugin such as pytest-randomly would reorder the checks or reseed them), whose
    lookup also costs every session about 20 ms."""
    previous = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        return pytest.main(args, plugins=plugins)
    finally:
        if previous is None:
            del os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"]
        else:
            os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = previous


def run_args(files: list[str], rootdir: str, *, extra: list[str] = ()) -> list[str]:
    """Arguments for an isolated, quiet run of check files (no conftest, no ini lookup)."""
    return [*files, "-c", os.devnull, "--rootdir", rootdir, "--noconftest", "--strict-markers",
            "--assert=plain", "--import-mode=importlib", "-s", "-p", "autograder.plugin",
            *QUIET_ARGS, *extra]
