"""Grading on a Dask cluster (`autograder grade --cluster`): real `dask scheduler` and `dask worker`
processes on 127.0.0.1, the CLI as a TA runs it, workers killed mid-batch, and TLS."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import run_cli, with_cells, write

distributed = pytest.importorskip("distributed")

DASK = str(Path(sys.executable).with_name("dask"))
KILL_MARKER = "# datitos-test: this submission kills its Dask worker"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "autograder.cli", *args]


class DaskCluster:
    """A scheduler (its address in a scheduler file) and `workers` worker processes, each in its own session."""

    def __init__(self, folder: Path, *, workers: int, nanny: bool = True, tls: dict[str, Path] | None = None) -> None:
        self.folder = folder
        self.scheduler_file = folder / "scheduler.json"
        self.tls = tls
        self.processes: list[subprocess.Popen] = []
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self._start_all(workers, nanny=nanny)
        except BaseException:
            self.close()
            raise

    def _start_all(self, workers: int, *, nanny: bool) -> None:
        tls = self.tls
        tls_args = [] if tls is None else ["--tls-ca-file", str(tls["ca"]), "--tls-cert", str(tls["cert"]),
                                           "--tls-key", str(tls["key"])]
        # As the README asks: a task on which workers died twice is given up (KilledWorker), not run 4 times.
        env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
        self._start([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(self.scheduler_file), *(["--protocol", "tls"] if tls else []),
                     *tls_args], env, "scheduler")
        deadline = time.monotonic() + 60
        while True:  # the scheduler writes its address once it listens
            try:
                self.address = json.loads(self.scheduler_file.read_text())["address"]
                break
            except (OSError, ValueError, KeyError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        worker_env = {**os.environ, "AUTOGRADER_TEST_KILL_WORKER_ON": KILL_MARKER}
        for i in range(workers):
            self._start([DASK, "worker", "--scheduler-file", str(self.scheduler_file), "--nthreads", "1",
                         "--no-dashboard", "--name", f"w{i}", "--host", "127.0.0.1",
                         *([] if nanny else ["--no-nanny"]), *tls_args], worker_env, f"worker{i}")
        with self.client() as client:
            client.wait_for_workers(workers, timeout=120)

    def _start(self, args: list[str], env: dict, name: str) -> None:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the process's life
        self.processes.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True))

    def security(self):
        if self.tls is None:
            return None
        return distributed.Security(tls_ca_file=str(self.tls["ca"]), tls_client_cert=str(self.tls["cert"]),
                                    tls_client_key=str(self.tls["key"]), require_encryption=True)

    @contextmanager
    def client(self):
        client = distributed.Client(self.address, security=self.security(), timeout=30, set_as_default=False)
        try:
            yield client
        finally:
            client.close()

    def close(self) -> None:
        for process in reversed(self.processes):  # workers first, then the scheduler
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two nanny-managed workers (a killed worker process comes back, as in a real deployment)."""
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"), workers=2)
    yield cluster
    cluster.close()


def results_in(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


def verdicts(result: dict) -> tuple:
    """What grading decided: score, status, message, and each check's status, score and message."""
    extra = result["extra_data"]
    return (result["score"], extra["status"], result["output"], extra.get("fingerprint"), extra["source"],
            [(t["name"], t["status"], t["score"], t["output"]) for t in result["tests"]])


@pytest.mark.slow
def test_a_class_graded_on_the_cluster_gets_the_verdicts_of_local_grading(demo_course, cluster, tmp_path):
    """With the same seed, do the cluster and local slots give every student the same verdicts, and does
    a re-run on the cluster keep every result (same fingerprints) without grading again?"""
    subs = tmp_path / "subs"
    solution = demo_course.solutions_dir("demo") / "demo.ipynb"
    port = int(cluster.address.rsplit(":", 1)[1])
    write(with_cells(solution), subs / "good.ipynb")
    shutil.copy(demo_course.release_dir("demo") / "demo.ipynb", subs / "blank.ipynb")
    write(with_cells(solution, "def double(x):\n    return x + x\n"), subs / "adds.ipynb")  # breaks the by-hand rule
    (subs / "broken.ipynb").write_text("{not a notebook")
    # The scheduler listens on this machine's loopback: the student's code cannot reach it.
    write(with_cells(solution, "import socket\ntry:\n"
                               f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                               "    print('connected')\nexcept OSError as exc:\n    print('blocked', exc)\n"),
          subs / "netprobe.ipynb")

    local, remote = tmp_path / "local", tmp_path / "remote"
    done = subprocess.run(cli("--course", str(demo_course.root), "grade", "demo", str(subs), "--out", str(local),
                              "--workers", "2", "--seed", "11"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(cli("--course", str(demo_course.root), "grade", "demo", str(subs), "--out", str(remote),
                              "--cluster", str(cluster.scheduler_file), "--seed", "11"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "sandbox (auto):" in done.stdout

    here, there = results_in(local), results_in(remote)
    assert set(here) == set(there) == {"good", "blank", "adds", "broken", "netprobe"}
    for student in here:
        assert verdicts(here[student]) == verdicts(there[student]), student
    assert there["good"]["score"] == 4 and there["blank"]["score"] == 0 and there["adds"]["score"] < 4
    assert there["broken"]["extra_data"]["status"] == "invalid"
    probe = [c["output"] for c in there["netprobe"]["extra_data"]["cells"] if "socket" in c["preview"]]
    assert probe and "blocked" in probe[0] and "connected" not in probe[0]
    assert (remote / "gradebook.csv").read_text() == (local / "gradebook.csv").read_text()

    again = subprocess.run(cli("--course", str(demo_course.root), "grade", "demo", str(subs), "--out", str(remote),
                               "--cluster", cluster.address, "--seed", "11"), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    assert "5 submission(s) already graded by an earlier run were kept" in again.stdout


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_no_submission(demo_course, cluster, tmp_path):
    """When a Dask worker is SIGKILLed while it grades, is its submission graded again elsewhere, and does
    every student still get a correct result?"""
    subs = tmp_path / "subs"
    solution = demo_course.solutions_dir("demo") / "demo.ipynb"
    for i in range(6):  # about 2 s each, so there is time to kill a worker in the middle of one; each has its
        # own code, as identical submissions would be graded once (twins.py)
        write(with_cells(solution, f"import time\ntime.sleep(2.0)  # student {i}"), subs / f"student{i}.ipynb")
    out = tmp_path / "out"
    batch = subprocess.Popen(cli("--course", str(demo_course.root), "grade", "demo", str(subs), "--out", str(out),
                                 "--cluster", cluster.address, "--seed", "3"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        with cluster.client() as client:
            deadline = time.monotonic() + 300
            while killed is None and time.monotonic() < deadline and batch.poll() is None:
                time.sleep(0.2)
                if not list(out.glob("*.json")):
                    continue  # kill after the first result landed: the slots are up and grading
                busy = [(address, keys) for address, keys in client.processing().items() if keys]
                if busy:
                    address, keys = busy[0]
                    pid = client.run(os.getpid, workers=[address])[address]  # the worker process, not its nanny
                    os.kill(pid, signal.SIGKILL)
                    killed = keys
        stdout, stderr = batch.communicate(timeout=600)
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.wait()
    assert batch.returncode == 0, stderr
    assert killed, "no worker was busy to kill"
    results = results_in(out)
    assert set(results) == {f"student{i}" for i in range(6)}
    assert all(r["score"] == 4 and r["extra_data"]["status"] == "graded" for r in results.values()), stdout
    assert (out / "gradebook.csv").read_text().count("\n") == 7


@pytest.mark.slow
def test_a_submission_that_kills_its_workers_gets_a_result_that_says_so(demo_course, cluster, tmp_path):
    """A submission on which workers keep dying: does it get a grader-error result (not a zero for its code)
    while the rest of the class is graded, instead of the batch stopping?"""
    subs = tmp_path / "subs"
    solution = demo_course.solutions_dir("demo") / "demo.ipynb"
    write(with_cells(solution, KILL_MARKER), subs / "killer.ipynb")  # see cluster.KILL_HOOK
    for i in range(2):
        write(with_cells(solution), subs / f"student{i}.ipynb")
    out = tmp_path / "out"
    done = subprocess.run(cli("--course", str(demo_course.root), "grade", "demo", str(subs), "--out", str(out),
                              "--cluster", cluster.address, "--seed", "3"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    results = results_in(out)
    killer = results["killer"]
    assert killer["score"] == 0 and killer["extra_data"]["status"] == "error"
    assert "Dask workers died grading this submission" in killer["extra_data"]["ta_detail"]
    assert "error del corrector" in killer["output"]
    assert all(results[f"student{i}"]["score"] == 4 for i in range(2))
    assert "killer" in (out / "gradebook.csv").read_text()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A throwaway CA and one certificate it signed, for the scheduler, the workers and the client."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make the test certificates")
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=datitos test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=node")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "node.pem", "-days", "2")
    return {"ca": folder / "ca.pem", "cert": folder / "node.pem", "key": folder / "node.key"}


@pytest.mark.slow
def test_grading_over_tls_and_a_client_without_a_certificate_is_refused(demo_course, certificates, tmp_path):
    """Over tls://, does a client with a certificate of the cluster's CA grade, while a client without one
    (or speaking plain TCP) cannot even connect to the scheduler?"""
    cluster = DaskCluster(tmp_path / "dask", workers=1, nanny=False, tls=certificates)
    try:
        assert cluster.address.startswith("tls://")
        subs = tmp_path / "subs"
        write(with_cells(demo_course.solutions_dir("demo") / "demo.ipynb"), subs / "good.ipynb")
        shutil.copy(demo_course.release_dir("demo") / "demo.ipynb", subs / "blank.ipynb")
        out = tmp_path / "out"
        done = run_cli("--course", str(demo_course.root), "grade", "demo", str(subs), "--out", str(out),
                       "--cluster", cluster.address, "--cluster-tls-ca", str(certificates["ca"]),
                       "--cluster-tls-cert", str(certificates["cert"]), "--cluster-tls-key", str(certificates["key"]))
        assert done.returncode == 0, done.stderr
        assert {k: r["score"] for k, r in results_in(out).items()} == {"good": 4, "blank": 0}

        refused = run_cli("--course", str(demo_course.root), "grade", "demo", str(subs), "--out", str(tmp_path / "x"),
                          "--force", "--cluster", cluster.address)
        assert refused.returncode == 2 and "cannot connect to the Dask scheduler" in refused.stderr
        host, port = cluster.address.removeprefix("tls://").rsplit(":", 1)
        with pytest.raises((OSError, TimeoutError)):  # plain TCP to the TLS port
            distributed.Client(f"tcp://{host}:{port}", timeout=5, set_as_default=False).close()
        context = ssl.create_default_context(cafile=str(certificates["ca"]))
        context.check_hostname = False
        with pytest.raises((ssl.SSLError, ConnectionError)):  # trusts the CA, but has no certificate of its own
            import socket

            with socket.create_connection((host, int(port)), timeout=5) as raw:
                with context.wrap_socket(raw) as tls:
                    tls.sendall(b"x")
                    if not tls.recv(1):
                        raise ConnectionResetError("closed without a client certificate")
    finally:
        cluster.close()


def test_tls_files_go_together_and_need_a_cluster(demo_course, tmp_path):
    """Are a lone --cluster-tls-* option and TLS options without --cluster refused with a message?"""
    notebook = demo_course.release_dir("demo") / "demo.ipynb"
    done = run_cli("--course", str(demo_course.root), "grade", "demo", str(notebook), "--out", str(tmp_path / "o"),
                   "--cluster", "tls://127.0.0.1:1", "--cluster-tls-ca", str(notebook))
    assert done.returncode == 2 and "go together" in done.stderr
    done = run_cli("--course", str(demo_course.root), "grade", "demo", str(notebook), "--out", str(tmp_path / "o"),
                   "--cluster-tls-ca", str(notebook))
    assert done.returncode == 2 and "need --cluster" in done.stderr


@pytest.mark.slow
def test_each_batch_grades_with_its_own_checks_and_a_slot_that_cannot_start_stops_it(demo_course, cluster, tmp_path):
    """After a batch on the same long-lived workers, does the next batch grade with the checks as they are now
    (not the modules the workers imported before)? And when those checks cannot even be collected, does the
    batch stop with that error, as when a local slot cannot start, instead of giving students grader errors?"""
    course = tmp_path / "course"
    shutil.copytree(demo_course.root, course)
    notebook = write(with_cells(demo_course.solutions_dir("demo") / "demo.ipynb"), tmp_path / "subs" / "a.ipynb")
    first = run_cli("--course", str(course), "grade", "demo", str(notebook), "--out", str(tmp_path / "first"),
                    "--cluster", cluster.address)
    assert first.returncode == 0, first.stderr
    with (course / "autograder" / "checks" / "demo" / "test_hidden.py").open("a") as f:
        f.write("\ndef broken(:\n")
    out = tmp_path / "out"
    done = run_cli("--course", str(course), "grade", "demo", str(notebook), "--out", str(out),
                   "--cluster", cluster.address)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "a grading slot on the cluster could not start" in done.stderr and "SuiteError" in done.stderr
    assert not list(out.glob("*.json"))
