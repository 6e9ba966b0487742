"""Linux namespace and mount helpers used by the zygote and its workers (ctypes over libc).

- `fork_isolated()`: the zygote forks each worker straight into a new PID namespace,
  as its PID 1, which then mounts its own /proc (`private_proc()`). When that PID 1
  (the worker) exits, the kernel kills everything left in the namespace, so nothing a
  submission starts can outlive it, and the worker sees no other process.
- `isolate_pids()`: the same where the zygote may create PID namespaces but not return
  to its own (`own_pid_namespace()` is None), at the price of a holder process between
  the zygote and each worker, and of a second fork.
- `mask()` / `private_tmp()`: the `unshare` fallback's filesystem view (when
  bubblewrap is missing): empty read-only mounts over the course, the output folder
  and the submissions, and a fresh size-limited /tmp and /dev/shm.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

_libc = ctypes.CDLL(None, use_errno=True)
#: How the zygote exits when it cannot return to its own PID namespace after a fork (`fork_isolated`).
STUCK_EXIT = 70


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def c(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    if _libc.mount(c(source), c(target), c(fstype), ctypes.c_ulong(flags), c(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def own_pid_namespace() -> int | None:
    """A descriptor of this process's PID namespace, where it may fork each child straight into a new one
    (`fork_isolated`); None where it may not. Entering its own namespace changes nothing but asks for the rights
    that the return after each fork needs."""
    try:
        fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        setns(fd, CLONE_NEWPID)
    except OSError:
        os.close(fd)
        return None
    return fd


def fork_isolated(own: int) -> tuple[int, bool]:
    """`os.fork()`, the child PID 1 of a new PID namespace (True), or in this process's own namespace (False)
    where the kernel refuses a new one. After `unshare(CLONE_NEWPID)` every child of this thread goes into the new
    namespace, the first as its PID 1, until `setns` to `own` (from `own_pid_namespace`) ends that: right after
    the fork, so the next call makes another namespace. (In between, only Python's own after-fork hooks run in
    this process; none of them starts a process.) A process that could not return would fork its next child into
    this child's namespace, so it exits instead (`STUCK_EXIT`); the slot starts a new zygote."""
    pid = -1
    try:
        unshare(CLONE_NEWPID)
    except OSError:
        _back_to(own)  # a no-op (every call ends back there), so that the plain fork below stays in it
        return os.fork(), False
    try:
        pid = os.fork()
    finally:
        if pid != 0:  # in the parent, forked or not
            _back_to(own)
    return pid, True


def _back_to(own: int) -> None:
    """The children this process forks from now on go into its own PID namespace `own`; else it exits."""
    try:
        setns(own, CLONE_NEWPID)
    except OSError:
        os._exit(STUCK_EXIT)


def private_proc() -> str:
    """In PID 1 of a new PID namespace: a mount namespace of its own with a /proc that shows only that namespace.
    "pid+proc", or "pid" where it could not be mounted."""
    try:
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        return "pid"
    return "pid+proc"


def isolate_pids(child_fds: tuple[int, ...]) -> str | None:
    """Put this (just forked) process's child in a new PID and mount namespace.

    In that child, now PID 1 of the new namespace, returns "pid+proc" (or "pid" where
    a fresh /proc could not be mounted). This process stays behind as its parent: it
    closes `child_fds` (they are the child's), waits, mirrors how the child ended, and
    never returns. Returns None, changing nothing, where namespaces are not permitted
    (no CAP_SYS_ADMIN).
    """
    try:
        unshare(CLONE_NEWPID | CLONE_NEWNS)
    except OSError:
        return None
    child = os.fork()
    if child == 0:
        try:
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            return "pid"
        return "pid+proc"
    for fd in child_fds:
        os.close(fd)
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP take no handler, and need none
            signal.signal(sig, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def mask(path: str) -> None:
    """Hide `path`: a directory behind an empty read-only tmpfs, a file behind /dev/null."""
    if os.path.isdir(path):
        mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
    else:
        mount("/dev/null", path, None, MS_BIND)


def private_tmp(size_bytes: int) -> None:
    """A fresh, size-limited /tmp and /dev/shm for this mount namespace."""
    for folder in ("/tmp", "/dev/shm"):
        if os.path.isdir(folder):
            mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_bytes},mode=1777")
