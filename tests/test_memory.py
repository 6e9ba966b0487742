"""The memory ceiling read from RAM and cgroups, and the choice it makes between forking and re-running cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from autograder.grading.grader import SNAPSHOT_MIN_MEMORY, snapshots_allowed
from autograder.grading.memory import memory_ceiling

GIB = 2**30


def fake_machine(tmp_path: Path, *, ram_kb: int, cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A /proc with meminfo and self/cgroup, and a /sys/fs/cgroup holding `files` (relative path -> text)."""
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal:       {ram_kb} kB\nMemFree:        1000 kB\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return proc, root


def test_a_v1_memory_cgroup_below_the_ram_sets_the_ceiling(tmp_path):
    """Gradescope's 768 MB on a cgroup v1 host: the process's own memory cgroup limit wins over 16 GiB of RAM."""
    proc, root = fake_machine(tmp_path, ram_kb=16 * 2**20, cgroup="4:memory:/job/a\n1:cpu:/\n0::/\n", files={
        "memory/memory.limit_in_bytes": "9223372036854771712",  # v1's "no limit"
        "memory/job/memory.limit_in_bytes": str(8 * GIB),
        "memory/job/a/memory.limit_in_bytes": str(768 * 2**20),
    })
    assert memory_ceiling(proc=proc, cgroup_root=root) == 768 * 2**20


def test_an_ancestor_cgroup_limit_applies_to_its_children(tmp_path):
    """A v2 parent limited to 1 GiB bounds a child cgroup that says "max"."""
    proc, root = fake_machine(tmp_path, ram_kb=16 * 2**20, cgroup="0::/parent/child\n", files={
        "cgroup.controllers": "cpu memory",
        "parent/memory.max": str(GIB),
        "parent/child/memory.max": "max",
    })
    assert memory_ceiling(proc=proc, cgroup_root=root) == GIB


def test_inside_a_container_the_mount_root_is_the_containers_cgroup(tmp_path):
    """Docker on v1 shows the host's path in /proc/self/cgroup but mounts the container's cgroup at the root."""
    proc, root = fake_machine(tmp_path, ram_kb=16 * 2**20, cgroup="5:memory:/docker/abc\n", files={
        "memory/memory.limit_in_bytes": str(768 * 2**20),
    })
    assert memory_ceiling(proc=proc, cgroup_root=root) == 768 * 2**20


def test_without_cgroup_limits_the_ram_is_the_ceiling(tmp_path):
    """No limit anywhere (v2 "max", v1's huge number): the machine's RAM."""
    proc, root = fake_machine(tmp_path, ram_kb=24 * 2**20, cgroup="0::/user\n", files={
        "cgroup.controllers": "memory", "user/memory.max": "max"})
    assert memory_ceiling(proc=proc, cgroup_root=root) == 24 * GIB


def test_nothing_readable_means_no_ceiling(tmp_path):
    """Without /proc nor cgroups the ceiling is unknown (None), not zero."""
    assert memory_ceiling(proc=tmp_path / "none", cgroup_root=tmp_path / "none") is None


@pytest.mark.parametrize("ceiling, expected", [(768 * 2**20, False), (SNAPSHOT_MIN_MEMORY - 1, False),
                                               (SNAPSHOT_MIN_MEMORY, True), (None, True)])
def test_restarts_fork_only_where_memory_has_room_for_two_workers(ceiling, expected):
    """Gradescope's default container re-runs the cells on a restart; a roomy machine forks the worker."""
    assert snapshots_allowed(pid_namespace=True, cuda=False, ceiling=ceiling) is expected


def test_restarts_never_fork_without_a_pid_namespace_or_with_a_gpu():
    """Either missing condition turns the fork server off, whatever the memory."""
    assert not snapshots_allowed(pid_namespace=False, cuda=False, ceiling=None)
    assert not snapshots_allowed(pid_namespace=True, cuda=True, ceiling=None)
