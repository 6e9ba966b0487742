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
    """Does Gradescope's 768 MB on a cgroup v1 host win over 16 GiB of RAM and a roomier parent cgroup?"""
    proc, root = fake_machine(tmp_path, ram_kb=16 * 2**20, cgroup="4:memory:/job/a\n1:cpu:/\n0::/\n", files={
        "memory/memory.limit_in_bytes": "9223372036854771712",  # v1's "no limit"
        "memory/job/memory.limit_in_bytes": str(8 * GIB),
        "memory/job/a/memory.limit_in_bytes": str(768 * 2**20),
    })
    assert memory_ceiling(proc=proc, cgroup_root=root) == 768 * 2**20


def test_an_ancestor_cgroup_limit_applies_to_its_children(tmp_path):
    """Does a v2 parent limited to 1 GiB bound a child cgroup that says "max"?"""
    proc, root = fake_machine(tmp_path, ram_kb=16 * 2**20, cgroup="0::/parent/child\n", files={
        "cgroup.controllers": "cpu memory",
        "parent/memory.max": str(GIB),
        "parent/child/memory.max": "max",
    })
    assert memory_ceiling(proc=proc, cgroup_root=root) == GIB


def test_a_hybrid_host_reads_v2_limits_under_unified(tmp_path):
    """On a hybrid host (v1 controllers, v2 at unified/), is a v2 limit read from unified/?"""
    proc, root = fake_machine(tmp_path, ram_kb=16 * 2**20, cgroup="4:memory:/\n0::/job\n", files={
        "memory/memory.limit_in_bytes": "9223372036854771712",
        "unified/cgroup.controllers": "memory",
        "unified/job/memory.max": str(3 * GIB),
    })
    assert memory_ceiling(proc=proc, cgroup_root=root) == 3 * GIB


@pytest.mark.parametrize("line, files", [
    ("5:memory:/docker/abc\n", {"memory/memory.limit_in_bytes": str(768 * 2**20)}),  # v1: the host's path
    ("0::/\n", {"cgroup.controllers": "memory", "memory.max": str(768 * 2**20)}),     # v2 cgroup namespace
], ids=["v1-host-path", "v2-namespace"])
def test_inside_a_container_the_mount_root_is_the_containers_cgroup(tmp_path, line, files):
    """Inside a container the mount's root is its own cgroup: is its limit found, whatever the path says?"""
    proc, root = fake_machine(tmp_path, ram_kb=16 * 2**20, cgroup=line, files=files)
    assert memory_ceiling(proc=proc, cgroup_root=root) == 768 * 2**20


def test_a_path_that_climbs_out_of_the_namespace_reads_only_the_mount_root(tmp_path):
    """A `/../x` path (outside this cgroup namespace) must not read folders beside the mount: only its root."""
    proc, root = fake_machine(tmp_path, ram_kb=16 * 2**20, cgroup="0::/../../x\n", files={
        "cgroup.controllers": "memory", "memory.max": str(4 * GIB)})
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "memory.max").write_text("1")  # what a naive join would read
    (tmp_path / "memory.max").write_text("1")
    assert memory_ceiling(proc=proc, cgroup_root=root) == 4 * GIB


def test_without_cgroup_limits_the_ram_is_the_ceiling(tmp_path):
    """With no limit anywhere (v2 "max", v1's huge number), is the machine's RAM the ceiling?"""
    proc, root = fake_machine(tmp_path, ram_kb=24 * 2**20, cgroup="0::/user\n", files={
        "cgroup.controllers": "memory", "user/memory.max": "max"})
    assert memory_ceiling(proc=proc, cgroup_root=root) == 24 * GIB


def test_nothing_readable_means_no_ceiling(tmp_path):
    """Without /proc nor cgroups, is the ceiling unknown (None) rather than zero?"""
    assert memory_ceiling(proc=tmp_path / "none", cgroup_root=tmp_path / "none") is None


@pytest.mark.parametrize("ceiling, slots, expected", [
    (768 * 2**20, 1, False), (SNAPSHOT_MIN_MEMORY - 1, 1, False), (SNAPSHOT_MIN_MEMORY, 1, True),
    (2 * SNAPSHOT_MIN_MEMORY, 2, True), (2 * SNAPSHOT_MIN_MEMORY, 4, False), (None, 1, False)])
def test_restarts_fork_only_where_each_slot_has_room_for_two_workers(ceiling, slots, expected):
    """Does Gradescope's default container re-run the cells on a restart while a roomy machine forks the worker,
    with the memory shared over the slots and an unknown ceiling counted as too small?"""
    assert snapshots_allowed(pid_namespace=True, cuda=False, ceiling=ceiling, slots=slots) is expected


def test_restarts_never_fork_without_a_pid_namespace_or_with_a_gpu():
    """Does either missing condition turn the fork server off, whatever the memory?"""
    assert not snapshots_allowed(pid_namespace=False, cuda=False, ceiling=64 * GIB)
    assert not snapshots_allowed(pid_namespace=True, cuda=True, ceiling=64 * GIB)
