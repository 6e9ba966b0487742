"""How much memory this process may use: the smallest of the machine's RAM and its cgroups' limits.

A restart from a snapshot (session.py) keeps the worker after its cells alive while a fork of it
serves the checks, so a submission briefly holds two copies of what it touched; where the
ceiling is low (Gradescope's default container has 768 MB) the grader restarts by re-running
the cells instead.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: cgroup v1 writes "no limit" as a huge page-aligned number.
_V1_UNLIMITED = 2**62


def memory_ceiling(*, proc: Path = Path("/proc"), cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """Bytes this process may use at most, or None where neither RAM nor a cgroup says."""
    found = [limit for limit in (_ram_bytes(proc), *_cgroup_limits(proc, cgroup_root)) if limit is not None]
    return min(found) if found else None


def _ram_bytes(proc: Path) -> int | None:
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_limits(proc: Path, root: Path) -> list[int | None]:
    """The memory limit of this process's cgroup and of each of its ancestors (v1 and v2 hierarchies)."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return []
    limits: list[int | None] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # v2 (a hybrid host mounts it at unified/)
            hybrid = (root / "unified" / "cgroup.controllers").exists()
            mount, name = (root / "unified" if hybrid else root), "memory.max"
        elif "memory" in controllers.split(","):  # v1
            mount, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        # Inside a container the mount's root is often the container's own cgroup, whatever the path says:
        # read every level from the process's cgroup up to the mount's root. A path that climbs out of a
        # cgroup namespace (`/../x`) names nothing under the mount: only its root is read then.
        parts = path.strip("/")
        node = mount if ".." in parts.split("/") else mount / parts
        while True:
            limits.append(_read_limit(node / name))
            if node == mount or mount not in node.parents:
                break
            node = node.parent
    return limits


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max" or not text.isdigit():
        return None
    value = int(text)
    return None if value >= _V1_UNLIMITED else value
