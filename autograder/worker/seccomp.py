"""A seccomp filter that takes IPv4/IPv6 sockets, io_uring and other processes' memory away from the worker.

The worker talks to the grader over an inherited Unix socket, so it never needs an
IP socket. The filter is a classic BPF program installed with
`prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)` after `PR_SET_NO_NEW_PRIVS`; it is
inherited by every process the worker starts and cannot be removed.

The program:
- kills the process on a foreign syscall ABI (32-bit `int 0x80`, x32), which could
  otherwise reach `socket` under another number;
- makes `socket(AF_INET|AF_INET6, ...)` fail with EACCES;
- makes `io_uring_setup` fail with EPERM (io_uring can open sockets without `socket`);
- makes `ptrace`, `process_vm_readv`, `process_vm_writev` and `pidfd_getfd` fail with EPERM:
  where the grader's processes share the worker's uid (a non-root grader, a non-root
  container), those would let student code read or rewrite the zygote, another worker or
  the slot that scores it;
- makes new namespaces and mounts fail with EPERM (`unshare`, `setns`, `clone` with a
  namespace flag, `mount` and the new mount API, `umount2`, `pivot_root`; `clone3`, whose
  flags it cannot read, with ENOSYS, so the C library falls back to `clone`): the worker's
  namespaces are made before the filter, and a container that lets bubblewrap make them
  (docker/seccomp-bwrap.json) must not hand that kernel surface to student code;
- allows everything else.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import socket
import struct

# BPF opcodes (linux/filter.h)
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

# seccomp (linux/seccomp.h)
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

# offsets in struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6]
_NR, _ARCH, _ARG0 = 0, 4, 16  # args[0]'s low word on little-endian machines

#: machine -> (AUDIT_ARCH value, socket, clone, syscalls refused with EPERM: io_uring_setup, ptrace,
#: process_vm_readv, process_vm_writev, pidfd_getfd, unshare, setns, mount, umount2, pivot_root and the new mount
#: API (open_tree, move_mount, fsopen, fsconfig, fsmount, fspick))
_ARCHES = {
    "x86_64": (0xC000003E, 41, 56, (425, 101, 310, 311, 438, 272, 308, 165, 166, 155, *range(428, 434))),
    "aarch64": (0xC00000B7, 198, 220, (425, 117, 270, 271, 438, 97, 268, 40, 39, 41, *range(428, 434))),
}
_NR_CLONE3 = 435  # the same on both: its flags sit in a struct the filter cannot read, so it is refused with
# ENOSYS and the C library falls back to clone, whose flags it can
#: CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_X32_BIT = 0x40000000


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def supported() -> bool:
    return platform.machine() in _ARCHES and struct.pack("=I", 1) == struct.pack("<I", 1)


def program() -> list[tuple[int, int, int, int]]:
    """The filter for this machine as (code, jt, jf, k) instructions."""
    arch, nr_socket, nr_clone, refused = _ARCHES[platform.machine()]
    deny_socket = _RET_ERRNO | errno.EACCES
    deny = [instruction for nr in refused
            for instruction in ((_JEQ_K, 0, 1, nr), (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM))]
    return [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, 1, 0, arch),                     # native ABI: go on
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, _NR),
        (_JGE_K, 0, 1, _X32_BIT),                 # x32 syscall numbers: kill
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        *deny,                                    # each refused syscall: EPERM
        (_JEQ_K, 0, 1, _NR_CLONE3),
        (_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
        (_JEQ_K, 0, 4, nr_clone),                 # clone: refused with any namespace flag
        (_LD_W_ABS, 0, 0, _ARG0),
        (_JSET_K, 0, 1, _NAMESPACE_FLAGS),
        (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
        (_RET_K, 0, 0, _RET_ALLOW),
        (_JEQ_K, 1, 0, nr_socket),
        (_RET_K, 0, 0, _RET_ALLOW),
        (_LD_W_ABS, 0, 0, _ARG0),                 # the address family
        (_JEQ_K, 2, 0, socket.AF_INET),
        (_JEQ_K, 1, 0, socket.AF_INET6),
        (_RET_K, 0, 0, _RET_ALLOW),
        (_RET_K, 0, 0, deny_socket),
    ]


def install() -> bool:
    """Install the filter on this process (needs no_new_privs or CAP_SYS_ADMIN). True when in force."""
    if not supported():
        return False
    instructions = program()
    filters = (_SockFilter * len(instructions))(*[_SockFilter(*i) for i in instructions])
    prog = _SockFprog(len(instructions), filters)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) == 0
    except (OSError, AttributeError):
        return False
