"""How to grade: limits and options, plain data that every process can import cheaply."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..worker.limits import WorkerLimits


#: A demonstration cell's own limit: this many times the solution's slowest time for it, at least
#: `CELL_BUDGET_FLOOR` seconds and at most `Limits.cell_seconds` (see budgets.py).
CELL_BUDGET_FACTOR = 10.0
CELL_BUDGET_FLOOR = 5.0


@dataclass(frozen=True)
class Limits:
    """Everything a submission may use; all enforced from outside the worker."""

    call_seconds: float = 10.0
    cell_seconds: float = 30.0
    check_seconds: float = 60.0
    submission_seconds: float = 600.0
    memory_mb: int = 4096
    output_bytes: int = 64 * 1024
    message_bytes: int = 256 * 2**20
    notebook_bytes: int = 100 * 2**20  # outputs included; only code cells are kept
    file_bytes: int = 256 * 2**20
    scratch_mb: int = 512  # the sandbox's private /tmp and /dev/shm, each
    processes: int = 64
    restarts: int = 50  # a safety net: the submission's time budget is the real bound

    def worker_limits(self, *, cuda: bool) -> WorkerLimits:
        return WorkerLimits(
            # CUDA reserves huge address ranges, so an address-space cap is only safe without it.
            memory_bytes=None if cuda else self.memory_mb * 2**20,
            cpu_seconds=int(self.submission_seconds) + 5,
            file_bytes=self.file_bytes,
            open_files=256,
            processes=self.processes,
        )


@dataclass(frozen=True)
class GradeOptions:
    """How to grade: limits, which checks and devices, and the seed of the random inputs."""

    limits: Limits = field(default_factory=Limits)
    seed: int = 0
    devices: tuple[str, ...] = ("cpu", "cuda")
    public_only: bool = False
    timing_scale: float = 1.0
    threads: int = 1
    sandbox: str = "auto"  # strict | auto | off (see grading/isolation.py)
    cell_budgets: bool = True  # demonstration cells get limits from the solution's times (see budgets.py)
    hidden_paths: tuple[str, ...] = ()  # besides the course: what the worker must not see (output, submissions)

    def pytest_options(self) -> list[str]:
        return ["--ag-seed", str(self.seed), "--ag-devices", ",".join(self.devices),
                "--ag-check-seconds", str(self.limits.check_seconds),
                "--ag-timing-scale", str(self.timing_scale)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GradeOptions":
        data = dict(data)
        data["limits"] = Limits(**data["limits"])
        data["devices"] = tuple(data["devices"])
        data["hidden_paths"] = tuple(data.get("hidden_paths", ()))
        return cls(**data)
