"""The zygote: a fork server that has paid for `import torch` once.

Started by a grading slot with a clean environment (inside bubblewrap or `unshare`
when the machine has them), it preloads the heavy libraries, builds what every
worker would build first (`warm.py`: pyplot's first figure, Unit 4's data), marks itself a child
subreaper, then forks one worker per request, each with a private scratch folder
and, with `--isolate-pids`, in a PID namespace of its own (as its PID 1). Because it is a
subreaper, anything a worker starts (double-forked daemons included) re-parents
here when its parent dies, so `reap` can kill every descendant. It never runs
student code itself.

Protocol: JSON requests on a SOCK_SEQPACKET control socket, file descriptors for a
new worker passed alongside with SCM_RIGHTS.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time

from . import limits, namespaces, warm

MAX_REQUEST = 65536


def descendants(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """Pids of every descendant of `root`, in `children` (default: `process_tree()` now)."""
    children = process_tree() if children is None else children
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        for child in children.get(pid, []):
            found.append(child)
            frontier.append(child)
    return found


def process_tree() -> dict[int, list[int]]:
    """Parent pid -> the pids of its children, from /proc. Zombies are kept: a process whose main thread
    ended shows as one while its other threads run on (see `is_alive`), and it may have children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def is_alive(pid: int) -> bool:
    """Whether some thread of the process still runs. A zombie waiting for its parent is dead; a process whose
    main thread exited (`syscall(SYS_exit)`) while other threads run is listed as a zombie but is not."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2:].split()[0] not in (b"Z", b"X"):
            return True
    return False


class Zygote:
    def __init__(self, control: socket.socket, *, isolate_pids: bool, wipe_tmp: bool,
                 pid_holders: bool = False) -> None:
        self.control = control
        self.isolate_pids = isolate_pids
        # Each worker forked straight into a PID namespace of its own where this process may return to its own;
        # else, or with `pid_holders`, through a holder process (namespaces.isolate_pids).
        self.own_pids = namespaces.own_pid_namespace() if isolate_pids and not pid_holders else None
        # Pids forked to be holders: the worker is their child. One whose namespace failed is the worker itself,
        # but without a PID namespace it never serves as a fork server, so `prune` never applies to it.
        self.holders: set[int] = set()
        self.wipe_tmp = wipe_tmp
        self.statuses: dict[int, dict] = {}
        self.scratch: list[str] = []
        self.worker_uids: set[int] = set()

    def collect(self) -> None:
        """Reap finished children, remembering how each ended."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.holders.discard(pid)
            if os.WIFSIGNALED(status):
                self.statuses[pid] = {"signal": os.WTERMSIG(status)}
            else:
                self.statuses[pid] = {"exit": os.WEXITSTATUS(status)}

    def fork(self, spec: dict, fds: list[int]) -> dict:
        rpc_fd, out_fd, *rest = fds
        fork_fd = rest[0] if rest else None  # the fork server's socket (worker.main.serve_forks), when wanted
        scratch = self.make_scratch(spec.get("uid"))
        spec = {**spec, "cwd": scratch,
                "env": {**spec["env"], "HOME": scratch, "TMPDIR": scratch, "MPLCONFIGDIR": scratch}}
        if self.own_pids is not None:
            pid, isolated = namespaces.fork_isolated(self.own_pids)
        else:
            pid, isolated = os.fork(), False
        if pid == 0:
            self.control.close()
            if isolated:
                pid_namespace = namespaces.private_proc()
            else:
                pid_namespace = namespaces.isolate_pids(tuple(fds)) if self.isolate_pids else None
            from .main import run_worker

            run_worker({**spec, "pid_namespace": pid_namespace}, rpc_fd=rpc_fd, out_fd=out_fd, fork_fd=fork_fd)
        if self.isolate_pids and not isolated:
            self.holders.add(pid)
        for fd in fds:
            os.close(fd)
        return {"pid": pid}

    def make_scratch(self, uid: int | None) -> str:
        """A private, empty working folder for one worker (in the sandbox's own /tmp when there is one)."""
        path = tempfile.mkdtemp(prefix="worker-")
        if uid is not None:
            os.chown(path, uid, uid)
            self.worker_uids.add(uid)
        os.chmod(path, 0o700)
        self.scratch.append(path)
        return path

    def reap(self) -> dict:
        """Kill every descendant and wait until none is left."""
        killed = 0
        for _ in range(200):
            self.collect()
            pids = [pid for pid in descendants(os.getpid()) if is_alive(pid)]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.005)
        self.collect()
        left = sum(is_alive(pid) for pid in descendants(os.getpid()))
        if not left:
            for path in self.scratch:
                shutil.rmtree(path, ignore_errors=True)
            self.scratch.clear()
            self.wipe_shared_tmp()
        return {"killed": killed, "left": left}

    def prune(self, forked: int) -> dict:
        """Kill every process below a worker (a child of its fork server and whatever that started), sparing the
        worker itself. `forked` is the process this zygote forked: the worker, PID 1 of its PID namespace, or its
        holder (`holders`), whose child the worker is; everything a child leaves behind is below the worker."""
        self.collect()
        if forked not in process_tree().get(os.getpid(), []):
            return {"error": f"{forked} is not a worker of this zygote"}
        killed = 0
        for _ in range(200):
            pids = self.below(forked)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.005)
        return {"killed": killed, "left": len(self.below(forked)) if pids else 0}

    def below(self, forked: int) -> list[int]:
        """The live processes below the worker that the zygote forked as `forked`, the worker left out."""
        self.collect()
        tree = process_tree()
        spared = set(tree.get(forked, [])) if forked in self.holders else set()
        return [pid for pid in descendants(forked, tree) if pid not in spared and is_alive(pid)]

    def wipe_shared_tmp(self) -> None:
        """Nothing a worker leaves in /tmp or /dev/shm reaches the next worker (of this or another submission).

        In a private /tmp (bubblewrap, unshare) everything but the zygote's own cache goes; in a
        shared one, what the workers' uids own.
        """
        ours = {os.path.basename(os.environ.get("XDG_CACHE_HOME", ""))}
        for folder in ("/tmp", "/dev/shm"):
            clear_folder(folder, keep=ours, everything=self.wipe_tmp, uids=self.worker_uids - {os.getuid()})

    def status(self, pid: int) -> dict:
        self.collect()
        return self.statuses.pop(pid, {"running": True})

    def serve(self) -> None:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.control, MAX_REQUEST, 3)
            except OSError:
                return
            if not data:
                return
            request = json.loads(data)
            op = request["op"]
            try:
                if op == "fork":
                    reply = self.fork(request["spec"], fds)
                elif op == "reap":
                    reply = self.reap()
                elif op == "prune":
                    reply = self.prune(int(request["pid"]))
                elif op == "status":
                    reply = self.status(request["pid"])
                else:
                    reply = {"error": f"unknown op {op}"}
            except Exception as exc:  # the slot's request was wrong; say so and keep serving
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                reply = {"error": f"{op}: {type(exc).__name__}: {exc}"}
            self.control.send(json.dumps({**reply, "id": request.get("id")}).encode())


def clear_folder(folder: str, *, keep: set[str], everything: bool, uids: set[int]) -> None:
    """Delete what workers left in `folder`: every entry but `keep` when the folder is the sandbox's own
    (`everything`), else the entries that `uids` own. A mount the sandbox made there (the interpreter, its
    packages or the engine, bound read-only where they live under /tmp) is never a worker's file: it is neither
    deleted nor walked, which would cost a walk of every file in it after every submission."""
    try:
        device = os.lstat(folder).st_dev
        entries = os.listdir(folder)
    except OSError:
        return
    mounts = live_mounts(folder, device=device)
    for name in entries:
        path = os.path.join(folder, name)
        try:
            owner = os.lstat(path).st_uid
        except OSError:
            continue
        if (everything and name not in keep) or owner in uids:
            remove_around_mounts(path, mounts)


def live_mounts(folder: str, *, device: int) -> set[str]:
    """The mount points below `folder` that hold another file system than it, as bubblewrap's binds of host
    folders into its fresh /tmp do. A listed mount that a later one covers, or whose path a worker made again on
    the folder's own file system, is on `device` (or gone) and does not count: what lies there is deleted."""
    found = set()
    for path in mount_points():
        if path.startswith(folder + "/"):
            try:
                if os.lstat(path).st_dev != device:
                    found.add(path)
            except OSError:
                pass
    return found


def remove_around_mounts(path: str, mounts: set[str]) -> None:
    """Delete `path`, a file or a whole folder, but no mount point in `mounts` and nothing inside one (the folders
    leading to a mount are emptied around it and stay)."""
    if path in mounts:
        return
    try:
        info = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISDIR(info.st_mode):
        try:
            os.unlink(path)
        except OSError:
            pass
    elif any(mount.startswith(path + "/") for mount in mounts):
        try:
            names = os.listdir(path)
        except OSError:
            return
        for name in names:  # as deep as the sandbox's own mounts go, no deeper
            remove_around_mounts(os.path.join(path, name), mounts)
        try:
            os.rmdir(path)
        except OSError:
            pass
    else:
        shutil.rmtree(path, ignore_errors=True)


def mount_points() -> list[str]:
    """The mount points this process sees (/proc/self/mountinfo's fifth field, its octal escapes decoded); none
    where /proc cannot tell."""
    try:
        with open("/proc/self/mountinfo", "rb") as lines:
            fields = [line.split(b" ")[4] for line in lines.read().split(b"\n") if line.count(b" ") >= 4]
    except OSError:
        return []
    return [os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda code: bytes([int(code.group(1), 8)]), field))
            for field in fields]


def preload(modules: list[str]) -> list[str]:
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except ImportError:
            pass
    return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--preload", default="")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU once preloaded")
    parser.add_argument("--isolate-pids", action="store_true", help="a PID namespace per worker")
    parser.add_argument("--pid-holders", action="store_true",
                        help="with --isolate-pids: fork each worker through a holder process, as where this process "
                             "cannot return to its own PID namespace (one fork more per worker)")
    parser.add_argument("--private-tmp", type=int, default=None, metavar="BYTES",
                        help="mount a fresh /tmp of this size (the unshare fallback; bubblewrap makes its own)")
    parser.add_argument("--wipe-tmp", action="store_true",
                        help="/tmp and /dev/shm are this sandbox's own: empty them after every worker")
    parser.add_argument("--mask", action="append", default=[], metavar="PATH",
                        help="hide PATH behind an empty mount (the unshare fallback)")
    args = parser.parse_args()
    control = socket.socket(fileno=args.control_fd)
    limits.hide_from_inspection()  # and so every worker forked from here
    subreaper = limits.become_subreaper()
    limits.die_with_parent()
    for path in args.mask:
        namespaces.mask(path)
    if args.private_tmp:
        namespaces.private_tmp(args.private_tmp)
    loaded = preload([m for m in args.preload.split(",") if m])
    import torch

    torch.set_num_threads(args.threads)
    from . import main as _worker_main  # noqa: F401  (imported before forking)

    warmed = warm.warm_up()

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    control.send(json.dumps({"ready": True, "pid": os.getpid(), "subreaper": subreaper,
                             "preloaded": loaded, "warmed": warmed, "torch": torch.__version__,
                             "python": sys.version.split()[0], "masked": args.mask}).encode())
    Zygote(control, isolate_pids=args.isolate_pids, wipe_tmp=args.wipe_tmp, pid_holders=args.pid_holders).serve()


if __name__ == "__main__":
    main()
