"""Where a batch's grading time went, from its result files: cells, each check, and the rest.

`autograder grade --profile` prints it after the summary. Each result records how long
the submission took in its slot (`execution_time`), each cell's run time and each check
case's time; the rest is the submission's overhead (worker starts and restarts, pytest's
protocol around the checks, the source scan, the codec).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TOP_CHECKS = 12


@dataclass
class Profile:
    submissions: int
    wall_seconds: float
    slots: int
    twins: int = 0  # submissions with the same code as another, which took no grading time of their own
    total: float = 0.0
    cells: float = 0.0
    checks: dict[str, float] = field(default_factory=dict)  # check -> seconds summed over submissions

    @property
    def checks_total(self) -> float:
        return sum(self.checks.values())

    @property
    def other(self) -> float:
        return max(0.0, self.total - self.cells - self.checks_total)


def profile(results: dict[str, dict], *, wall_seconds: float, slots: int) -> Profile:
    found = Profile(len(results), wall_seconds, slots)  # `submissions` counts the twins; the averages do not
    for result in results.values():
        if result.get("extra_data", {}).get("same_code_as"):
            found.twins += 1
            continue
        found.total += _number(result.get("execution_time"))
        extra = result.get("extra_data", {})
        found.cells += sum(_number(c.get("seconds")) for c in extra.get("cells", []))
        for test in result.get("tests", []):
            data = test.get("extra_data", {})
            name = str(data.get("check", test.get("name", "?")))
            found.checks[name] = found.checks.get(name, 0.0) + sum(_number(c.get("seconds"))
                                                                   for c in data.get("cases", []))
    return found


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def format_profile(found: Profile) -> str:
    n = max(found.submissions - found.twins, 1)
    lines = [f"where the time went: {found.submissions} submission(s), {found.slots} slot(s), "
             f"{found.wall_seconds:.1f} s of wall clock ({found.wall_seconds * found.slots / n:.2f} slot-s per "
             "submission, start-up included)",
             f"{'':<52} {'total s':>9} {'per subm. s':>11} {'share':>6}"]

    def row(name: str, seconds: float) -> str:
        share = seconds / found.total if found.total else 0.0
        return f"{name:<52} {seconds:>9.1f} {seconds / n:>11.2f} {share:>6.0%}"

    lines.append(row("grading a submission, in its slot", found.total))
    lines.append(row("  notebook cells (the student's code)", found.cells))
    lines.append(row("  checks", found.checks_total))
    for check, seconds in sorted(found.checks.items(), key=lambda item: -item[1])[:TOP_CHECKS]:
        lines.append(row(f"    {check[:46]}", seconds))
    lines.append(row("  other (worker starts, restarts, pytest, scan)", found.other))
    if found.twins:
        lines.append(f"(per submission: over the {n} graded; {found.twins} more had the same code as one of them "
                     "and were graded with it)")
    return "\n".join(lines)
