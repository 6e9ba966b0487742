"""Resource limits and privilege drop applied inside a freshly forked worker.

All of these are set by the worker on itself before any student code runs; the
trusted side still enforces time and kills the whole tree from outside, so these
are a second line (memory, file size, process count, CPU time as a backstop).
"""

from __future__ import annotations

import ctypes
import os
import resource
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38


@dataclass(frozen=True)
class WorkerLimits:
    """What one worker may use. Sizes in bytes, times in seconds."""

    memory_bytes: int | None  # extra address space over the preloaded interpreter; None: unlimited (cuda)
    cpu_seconds: int
    file_bytes: int
    open_files: int
    processes: int


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphaned descendants re-parent to this process instead of init (Linux)."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent() -> bool:
    import signal

    return _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def no_new_privileges() -> bool:
    return _prctl(PR_SET_NO_NEW_PRIVS, 1)


def hide_from_inspection() -> bool:
    """No process of this uid may trace this one or open its memory (`/proc/<pid>/mem`): where the grader's
    processes share the workers' uid (a non-root grader or container), student code cannot reach the slot,
    the zygote or another worker that way. Inherited by forks; a core dump is not written either."""
    return _prctl(PR_SET_DUMPABLE, 0)


def prefer_oom_kill() -> bool:
    """Make this process the kernel's first choice when memory runs out (as under a container's limit):
    a worker, never the grader. Raising one's own score needs no privilege, but a process hidden from
    inspection sees its /proc files owned by root: it is visible for the one write."""
    _prctl(PR_SET_DUMPABLE, 1)
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
        return True
    except OSError:
        return False
    finally:
        hide_from_inspection()


def current_address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def apply(limits: WorkerLimits) -> list[str]:
    """Set the rlimits; returns the names of those that could not be set."""
    wanted = {
        "RLIMIT_CPU": limits.cpu_seconds,
        "RLIMIT_FSIZE": limits.file_bytes,
        "RLIMIT_NOFILE": limits.open_files,
        "RLIMIT_NPROC": limits.processes,
        "RLIMIT_CORE": 0,
    }
    if limits.memory_bytes is not None:
        wanted["RLIMIT_AS"] = current_address_space() + limits.memory_bytes
    failed = []
    for name, value in wanted.items():
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError):
            failed.append(name)
    return failed


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
