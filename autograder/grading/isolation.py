"""The sandbox around the zygote and its workers: which layers this machine supports,
how to start the zygote inside them, and a probe that verifies them by their effect.

Layers (each reported in every result file and by `autograder doctor`):

- `user`: workers run as an unprivileged uid of their own (61000 + slot), when grading as root.
- `filesystem`: bubblewrap gives the zygote a minimal read-only view (the interpreter,
  its packages and the engine, with the checks folder masked) plus a private,
  size-limited /tmp. Without bubblewrap, `unshare` hides the course, the output folder
  and the submissions behind empty mounts instead ("masked").
- `network`: the zygote runs in a network namespace of its own (only a loopback).
- `pid_namespace`: every worker is PID 1 of a namespace of its own, with its own /proc:
  it sees no other process, and the kernel kills whatever it started when it ends.
- `seccomp`: a filter that refuses IPv4/IPv6 sockets and io_uring.
- `rlimits`: CPU time, address space (CPU-only runs), file size, open files, processes.
- `no_new_privs`: no setuid binary can give privileges back.

Modes: `auto` uses every layer the machine supports and reports the missing ones;
`strict` refuses to grade unless every layer is in force; `off` keeps only the
foundation (separate process, rlimits, uid, no_new_privs), for debugging.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("strict", "auto", "off")
LAYERS = ("user", "filesystem", "network", "pid_namespace", "seccomp", "rlimits", "no_new_privs")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
               "/etc/alternatives", "/etc/localtime", "/etc/fonts", "/sys/devices/system/cpu")
CUDA_PATHS = ("/sys", "/proc/driver/nvidia")
PACKAGE = Path(__file__).resolve().parent.parent


class IsolationError(RuntimeError):
    """`--sandbox strict` and a layer is missing (for TAs, English)."""


@dataclass(frozen=True)
class Plan:
    """How to start a zygote: the wrapper in front of its command and the arguments it takes."""

    mode: str
    tool: str | None  # bwrap | unshare | None
    wrapper: tuple[str, ...] = ()
    zygote_args: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class Assessment:
    """Which layers the probe found in force, and what is missing."""

    mode: str
    tool: str | None
    layers: dict[str, str] = field(default_factory=dict)  # layer -> what is in force, "" when missing
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "tool": self.tool, "layers": self.layers, "missing": self.missing,
                "notes": self.notes}


@functools.cache
def _works(command: tuple[str, ...]) -> bool:
    try:
        return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def bwrap_available() -> bool:
    path = shutil.which("bwrap")
    return bool(path) and _works((path, "--unshare-net", "--unshare-pid", "--ro-bind", "/", "/", "--proc", "/proc",
                                  "--dev", "/dev", "true"))


def unshare_wrapper() -> tuple[str, ...]:
    """The `unshare` command the fallback starts the zygote with."""
    user = () if os.geteuid() == 0 else ("--map-root-user",)
    return (shutil.which("unshare") or "unshare", *user, "--mount", "--net", "--pid", "--ipc", "--uts", "--fork",
            "--kill-child", "--mount-proc", "--propagation", "private")


def unshare_available() -> bool:
    # The very command the zygote gets: in a container whose /proc has masked paths, the namespaces can be
    # made but a fresh /proc cannot be mounted (podman without `unmask=/proc/*`, Docker without
    # `systempaths=unconfined`).
    return bool(shutil.which("unshare")) and _works((*unshare_wrapper(), "true"))


def plan(mode: str, *, hidden: list[str], tmp_bytes: int, cuda: bool,
         prefer: tuple[str, ...] = ("bwrap", "unshare")) -> Plan:
    """The wrapper for this machine: bubblewrap, else unshare, else none (said in `notes`)."""
    if mode not in MODES:
        raise ValueError(f"unknown sandbox mode {mode!r} (one of {', '.join(MODES)})")
    if mode == "off":
        return Plan(mode, None, notes=("sandbox layers turned off (--sandbox off)",))
    hidden = sorted({str(Path(p).resolve()) for p in hidden} | {str(PACKAGE / "checks")})
    if "bwrap" in prefer and bwrap_available():
        return Plan(mode, "bwrap", tuple(bwrap_command(hidden=hidden, tmp_bytes=tmp_bytes, cuda=cuda)),
                    ("--isolate-pids", "--wipe-tmp"))
    if "unshare" in prefer and unshare_available():
        wrapper = unshare_wrapper()
        needed = python_paths()
        masks = mask_targets(hidden, needed=needed)
        notes = ["bubblewrap is missing: the filesystem view hides the course, output and submissions "
                 "instead of showing only the interpreter (install bubblewrap)"]
        if any(_inside(n, "/tmp") for n in needed):  # a fresh /tmp would hide the interpreter
            tmp: tuple[str, ...] = ()
            notes.append("the interpreter lives under /tmp, so /tmp stays shared (only the workers' files in it "
                         "are removed)")
        else:
            tmp = ("--wipe-tmp", "--private-tmp", str(tmp_bytes))
        return Plan(mode, "unshare", wrapper,
                    ("--isolate-pids", *tmp, *(a for p in masks for a in ("--mask", p))), tuple(notes))
    return Plan(mode, None, notes=("neither bubblewrap nor unshare can create namespaces here",))


def mask_targets(hidden: list[str], *, needed: list[str]) -> list[str]:
    """What to cover so that `hidden` is out of sight but `needed` stays: a hidden folder that holds
    something needed (a course with its .venv inside) is covered entry by entry, around the needed path."""
    targets: list[str] = []
    for path in hidden:
        if os.path.exists(path):
            targets += _cover(path, needed)
    return _outermost(targets)


def _cover(path: str, needed: list[str]) -> list[str]:
    if not any(_inside(n, path) for n in needed):
        return [path]
    covered: list[str] = []
    for entry in sorted(os.listdir(path)):
        entry = os.path.join(path, entry)
        if not any(_inside(entry, n) for n in needed):
            covered += _cover(entry, needed)
    return covered


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent + os.sep)


def python_paths() -> list[str]:
    """What the interpreter needs to run the worker: its prefixes, its packages and the engine."""
    paths = {sys.base_prefix, sys.prefix, sys.exec_prefix, sysconfig.get_paths()["purelib"],
             sysconfig.get_paths()["platlib"], str(PACKAGE)}
    return _outermost([os.path.realpath(p) for p in paths if os.path.exists(p)])


def bwrap_command(*, hidden: list[str], tmp_bytes: int, cuda: bool) -> list[str]:
    """bubblewrap arguments: a minimal read-only root, with `hidden` paths masked where they would show."""
    args = [shutil.which("bwrap") or "bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    if os.geteuid() == 0:
        args += ["--cap-add", "ALL"]  # the zygote needs them to make workers' namespaces and drop their uid
    else:
        args += ["--unshare-user"]
    # The private /tmp first: an interpreter or course that lives under /tmp is bound over it below.
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmp_bytes), "--tmpfs", "/tmp",
             "--size", str(tmp_bytes), "--tmpfs", "/dev/shm"]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
    bound = python_paths()
    made: set[str] = set()
    for path in bound:
        for parent in reversed(Path(path).parents[:-1]):  # traversable by the worker's uid
            if str(parent) not in made and not os.path.islink(parent):
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", path, path]
    for path in hidden:  # only what lies inside a bound folder would show
        if any(_inside(path, b) for b in bound) and os.path.exists(path):
            args += (["--tmpfs", path, "--remount-ro", path] if os.path.isdir(path)
                     else ["--ro-bind", "/dev/null", path])
    if cuda:
        args += [a for p in CUDA_PATHS for a in ("--ro-bind-try", p, p)]
        args += [a for d in sorted(os.listdir("/dev")) if d.startswith("nvidia")
                 for a in ("--dev-bind", f"/dev/{d}", f"/dev/{d}")]
    return args + ["--chdir", "/tmp", "--"]


def _outermost(paths: list[str]) -> list[str]:
    """Paths with those inside another dropped (binding the parent binds them too)."""
    kept: list[str] = []
    for path in sorted(paths):
        if not any(_inside(path, k) for k in kept):
            kept.append(path)
    return kept


#: Run in a fresh worker before any student code: what can it see and do? Prints one JSON line.
PROBE = r'''
import json, os, socket
def _probe(paths):
    out = {"uid": os.getuid(), "pid": os.getpid(), "ns": {}, "readable": [], "socket": "", "procs": 0}
    for name in ("net", "pid", "mnt"):
        try:
            out["ns"][name] = os.readlink(f"/proc/self/ns/{name}")
        except OSError:
            out["ns"][name] = ""
    for path in paths:
        try:
            if os.path.isdir(path):
                if os.listdir(path):
                    out["readable"].append(path)
            else:
                with open(path, "rb") as f:
                    f.read(1)
                out["readable"].append(path)
        except OSError:
            pass
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        out["socket"] = "allowed"
    except OSError as exc:
        out["socket"] = f"refused: {exc.strerror}"
    out["procs"] = sum(e.isdigit() for e in os.listdir("/proc"))
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    out["seccomp"] = status.get("Seccomp", "").strip()
    out["no_new_privs"] = status.get("NoNewPrivs", "").strip()
    return out
print("@@probe" + json.dumps(_probe(PATHS)))
'''


def probe_source(paths: list[str]) -> str:
    return PROBE.replace("PATHS", json.dumps(paths))


def read_probe(output: str) -> dict:
    for line in output.splitlines():
        if line.startswith("@@probe"):
            return json.loads(line[len("@@probe"):])
    raise ValueError("the probe printed nothing")


def assess(plan: Plan, *, probe: dict, worker: dict, grader_uid: int, secrets: list[str]) -> Assessment:
    """Each layer's verdict, from the effects the probe measured (not from what was asked for)."""
    ours = {name: os.readlink(f"/proc/self/ns/{name}") for name in ("net", "pid", "mnt")}
    layers: dict[str, str] = {}
    uid = probe["uid"]
    layers["user"] = f"uid {uid}" if uid not in (0, grader_uid) else ""
    leaked = [p for p in secrets if p in probe["readable"]]
    if probe["ns"]["mnt"] != ours["mnt"] and not leaked:
        layers["filesystem"] = "minimal read-only view" if plan.tool == "bwrap" else "course, output and submissions masked"
    else:
        layers["filesystem"] = ""
    layers["network"] = "own network namespace" if probe["ns"]["net"] != ours["net"] else ""
    own_pid_ns = probe["ns"]["pid"] != ours["pid"] and probe["pid"] == 1
    layers["pid_namespace"] = (f"own PID namespace ({probe['procs']} process visible)"
                               if own_pid_ns and probe["procs"] <= 2 else "")
    layers["seccomp"] = f"IP sockets {probe['socket']}" if probe["seccomp"] == "2" and probe["socket"] != "allowed" else ""
    failed = worker.get("rlimits_failed", [])
    layers["rlimits"] = "" if failed else "cpu, address space, file size, open files, processes"
    layers["no_new_privs"] = "on" if probe["no_new_privs"] == "1" else ""
    if plan.mode == "off":
        off = ("filesystem", "network", "pid_namespace", "seccomp")
        missing = [name for name in LAYERS if not layers[name] and name not in off]
    else:
        missing = [name for name in LAYERS if not layers[name]]
    notes = list(plan.notes)
    if leaked:
        notes.append(f"the worker can read: {', '.join(leaked)}")
    if uid == grader_uid:
        notes.append("grading as a non-root user: workers share the grader's uid (run as root for a uid of their own)")
    return Assessment(plan.mode, plan.tool, layers, missing, notes)
