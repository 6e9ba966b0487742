"""Linux namespace and mount helpers used by the zygote and its workers (ctypes over libc).

- `isolate_pids()`: called in a freshly forked child of the zygote; from then on that
  child's own child is PID 1 of a new PID namespace, with its own /proc. When that
  PID 1 (the worker) exits, the kernel kills everything left in the namespace, so
  nothing a submission starts can outlive it, and the worker sees no other process.
- `mask()` / `private_tmp()`: the `unshare` fallback's filesystem view (when
  bubblewrap is missing): empty read-only mounts over the course, the output folder
  and the submissions, and a fresh size-limited /tmp and /dev/shm.
"""

from __future__ import annotations

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
        try:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        except (OSError, ValueError):
            pass
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
