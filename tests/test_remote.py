"""Proxies into the student's namespace, through the in-process transport the notebook uses."""

import time

import pytest
import torch

from autograder.errors import MissingName, StudentError, WorkerLost, WorkerTimeout
from autograder.remote import (SECONDS_AFTER_TIMEOUT, Client, LocalTransport, RemoteRef, StudentNamespace,
                               call_deadline, call_each)

STUDENT_CODE = '''
import torch

def double_in_place(x):
    x.mul_(2)
    return x

def broken():
    raise ValueError("mal")

def todo():
    raise NotImplementedError()

class Counter:
    def __init__(self, start=0):
        self.total = start
    def add(self, k):
        self.total += k
        return self
    def __add__(self, other):
        return Counter(self.total + (other.total if isinstance(other, Counter) else other))
    def __radd__(self, other):
        return self + other
    def __rsub__(self, other):
        return Counter(other - self.total)
'''


@pytest.fixture
def student():
    namespace = {}
    exec(STUDENT_CODE, namespace)
    return StudentNamespace(Client(LocalTransport(namespace)))


def test_arguments_and_results_cross_by_value(student):
    """Does a student function that mutates its input leave the check's tensor untouched?"""
    x = torch.ones(3)
    out = student.double_in_place(x)
    assert torch.equal(out, torch.full((3,), 2.0))
    assert torch.equal(x, torch.ones(3))


def test_objects_stay_behind_refs_with_methods_attributes_and_operators(student):
    """Can a check build an object, call its methods, read and set attributes, and use operators?"""
    counter = student.Counter(1).add(2)
    assert isinstance(counter, RemoteRef)
    assert counter.total == 3
    counter.total = 10
    assert counter.total == 10
    assert (counter + 5).total == 15
    assert (5 + counter).total == 15
    assert (20 - counter).total == 10


def test_missing_names_are_named(student):
    """Does a missing function produce a failure that names it?"""
    with pytest.raises(MissingName, match="linear_forward"):
        student.linear_forward


def test_student_exceptions_become_student_errors(student):
    """Does an exception in student code carry its type and message, without leaking as itself?"""
    with pytest.raises(StudentError) as info:
        student.broken()
    assert info.value.type_name == "ValueError" and info.value.message == "mal"
    assert "mal" not in info.value.render(reveal=False)
    assert "mal" in info.value.render(reveal=True)


def test_not_implemented_reads_as_not_done(student):
    """Is NotImplementedError reported as 'not implemented yet'?"""
    with pytest.raises(StudentError, match="todavía no está implementada"):
        student.todo()


def test_call_each_equals_a_loop(student):
    """Does one `call_each` round trip give what a loop of calls gives?"""
    inputs = [(torch.full((2,), float(i)),) for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(call_each(student.double_in_place, inputs),
                                                 [student.double_in_place(*args) for args in inputs]))


def test_refs_from_a_restarted_worker_are_refused(student):
    """After a worker restart, is an old handle refused instead of reaching a different object?"""
    counter = student.Counter()
    counter._client.transport.generation += 1
    with pytest.raises(WorkerLost):
        student.Counter().add(counter)


def test_the_truth_value_of_a_student_object_is_refused(student):
    """Must checks compare explicitly instead of trusting `bool(student_object)`?"""
    with pytest.raises(TypeError):
        bool(student.Counter())


class TimingOutTransport(LocalTransport):
    """Runs calls in process, except that while `hang_next` a call times out as the worker's would; records each
    call's deadline."""

    def __init__(self, namespace: dict) -> None:
        super().__init__(namespace)
        self.deadlines: list[float | None] = []
        self.hang_next = False
        self.call_limit = True  # whose limit ran out: the call's own (True), or a check's or the submission's

    def roundtrip(self, header, buffers, *, deadline):
        if header["op"] == "call":
            self.deadlines.append(deadline)
            if self.hang_next:
                timeout = WorkerTimeout("Tu código excedió el tiempo límite y se detuvo.")
                timeout.call_limit = self.call_limit
                raise timeout
        return super().roundtrip(header, buffers, deadline=deadline)


def test_code_that_ran_out_of_time_gets_a_short_limit_afterwards():
    """After a call into `slow` times out, do later calls into `slow` (and only those) get SECONDS_AFTER_TIMEOUT,
    and does the failure say so?"""
    namespace = {}
    exec("def slow(x):\n    return x\n\ndef fast(x):\n    return x\n", namespace)
    transport = TimingOutTransport(namespace)
    student = StudentNamespace(Client(transport))
    slow, fast = student.slow, student.fast
    token = call_deadline.set(time.monotonic() + 60)
    try:
        assert fast(1) == 1 and slow(1) == 1
        assert all(d > time.monotonic() + 50 for d in transport.deadlines)  # the check's own deadline, untouched
        transport.hang_next = True
        with pytest.raises(WorkerTimeout) as first:
            slow(2)
        assert "esta vez" not in first.value.summary
        with pytest.raises(WorkerTimeout) as second:
            slow(3)
        assert transport.deadlines[-1] <= time.monotonic() + SECONDS_AFTER_TIMEOUT
        assert f"esta vez tuvo {SECONDS_AFTER_TIMEOUT:g} s" in second.value.summary
        transport.hang_next = False
        assert fast(4) == 4 and transport.deadlines[-1] > time.monotonic() + 50  # other code keeps the full limit
        assert slow(5) == 5 and transport.deadlines[-1] <= time.monotonic() + SECONDS_AFTER_TIMEOUT
    finally:
        call_deadline.reset(token)


def test_a_timeout_of_the_checks_budget_does_not_shorten_later_calls():
    """When a call stops because the check's budget (or the submission's) ran out, not its own limit, do later calls
    into the same code keep the full limit? Slow but correct code must not be penalised twice."""
    namespace = {}
    exec("def slow(x):\n    return x\n", namespace)
    transport = TimingOutTransport(namespace)
    student = StudentNamespace(Client(transport))
    slow = student.slow
    token = call_deadline.set(time.monotonic() + 60)
    try:
        transport.hang_next, transport.call_limit = True, False
        with pytest.raises(WorkerTimeout):
            slow(1)
        transport.hang_next = False
        assert slow(2) == 2 and transport.deadlines[-1] > time.monotonic() + 50
        assert transport.timed_out == set()
    finally:
        call_deadline.reset(token)
