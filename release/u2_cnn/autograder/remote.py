"""The trusted side of the boundary: proxies that make calls into the student's code.

Checks use `student.linear_forward(x, W, b)` as if the function were local. Here
`student` is a `StudentNamespace`; names resolve to decoded values (tensors,
numbers, containers) or to `RemoteRef`s for anything else (functions, classes,
instances). Calling, reading attributes or applying operators to a ref sends one
request through a `Transport`:

* grading: a socket to the sandboxed worker process (`grading.worker`);
* the student's notebook: the same `Dispatcher` in process (`LocalTransport`).

Either way arguments and results are copied through the wire codec, so checks
see identical semantics. Deadlines for calls come from `call_deadline`, set by the
pytest plugin for each check.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Any, Protocol

from . import wire
from .dispatch import Dispatcher
from .errors import MissingName, StudentError, WorkerLost, WorkerTimeout
from .rules import RuleWatch

#: Operations whose success means the student's code ran (a by-hand rule is checked once one did).
RUNS_STUDENT_CODE = frozenset({"call", "call_each", "driver", "binop", "unop"})

#: Once a call into some of the student's names ran out of time, later calls into any of them get at most this
#: long: that code already hung once in this submission (a correct solution never reaches the limit), and each
#: further hang would otherwise cost the full limit again. A check it fails still says it ran out of time.
SECONDS_AFTER_TIMEOUT = 2.0

#: Absolute `time.monotonic()` deadline for calls made by the running check (None: no limit).
call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("call_deadline", default=None)
#: Whether calls go under the by-hand rules' recorder (see `unwatched`).
_watching: contextvars.ContextVar[bool] = contextvars.ContextVar("watching", default=True)


@contextlib.contextmanager
def unwatched():
    """Calls made inside skip the by-hand rules' recorder: for speed checks (the recorder's cost per operation
    would distort the ratio) and long trainings, whose functions other, watched calls of the same run check."""
    token = _watching.set(False)
    try:
        yield
    finally:
        _watching.reset(token)


class Transport(Protocol):
    """Carries one request to the dispatcher and brings its reply back."""

    generation: int  # changes whenever the process holding the student's objects is replaced
    timed_out: set[str]  # the student's names whose code ran out of time once (see SECONDS_AFTER_TIMEOUT)

    def prepare(self) -> None:
        """Make sure the other side is ready (a worker may be restarted here, changing `generation`)."""

    def roundtrip(self, header: dict, buffers: list[memoryview], *, deadline: float | None) -> wire.Message:
        ...

    def discard(self) -> None:
        """The other side answered nonsense: stop trusting it (a worker is killed)."""

    def device_ok(self, device: str) -> bool:
        ...


class LocalTransport:
    """In-process transport for the student's notebook: no isolation, same semantics."""

    generation = 0

    def __init__(self, namespace: dict, *, max_bytes: int = 2**30) -> None:
        import torch

        self._cuda = torch.cuda.is_available()
        self.dispatcher = Dispatcher(namespace, max_bytes=max_bytes, device_ok=self.device_ok)
        self.timed_out: set[str] = set()  # nothing times out in process; the protocol's attribute

    def device_ok(self, device: str) -> bool:
        return device == "cpu" or self._cuda

    def prepare(self) -> None:
        pass

    def roundtrip(self, header: dict, buffers: list[memoryview], *, deadline: float | None) -> wire.Message:
        request = wire.roundtrip_bytes(header, buffers)
        reply_header, reply_buffers = self.dispatcher.handle(request)
        return wire.roundtrip_bytes(reply_header, reply_buffers)

    def discard(self) -> None:
        pass


class Client:
    """Encodes requests, decodes replies, and turns failures into check failures."""

    def __init__(self, transport: Transport, *, max_bytes: int = 2**30, watch: RuleWatch | None = None) -> None:
        self.transport = transport
        self.max_bytes = max_bytes
        self.watch = watch

    def request(self, op: str, args: list, *, label: str, roots: frozenset[str] = frozenset()) -> Any:
        """One operation in the student's process. `roots`: the student names the objects involved
        descend from (refs in `args` add theirs); refs in the reply inherit them, and they decide
        whether the by-hand rules watch this call."""
        self.transport.prepare()
        found = set(roots)

        def encode_ref(value: object) -> dict:
            if isinstance(value, RemoteRef):
                found.update(value._roots)
            return self._encode_ref(value)

        tree, buffers = wire.encode(args, fallback=encode_ref, max_bytes=self.max_bytes)
        roots = frozenset(found)
        header = {"op": op, "args": tree}
        spec = self.watch.spec_for(roots) if self.watch is not None and _watching.get() else None
        if spec is not None:
            if op == "driver":  # the engine's own routines may train with autograd: only forbidden ops count
                spec = {**spec, "autograd": False}
            header["watch"] = spec
        deadline = call_deadline.get()
        timed_out = self.transport.timed_out
        shortened = op in RUNS_STUDENT_CODE and bool(roots & timed_out)
        if shortened:
            soon = time.monotonic() + SECONDS_AFTER_TIMEOUT
            deadline = soon if deadline is None else min(deadline, soon)
        try:
            reply = self.transport.roundtrip(header, buffers, deadline=deadline)
        except WorkerTimeout as exc:
            if op not in RUNS_STUDENT_CODE:
                raise
            if exc.call_limit:  # not a check's budget or the submission's running out around a slow call
                timed_out |= roots
            if not shortened:
                raise
            raise WorkerTimeout(f"{exc.summary} Como este código ya se había pasado del tiempo antes (en una celda o "
                                f"en otra comprobación), esta vez tuvo {SECONDS_AFTER_TIMEOUT:g} s.") from None
        if spec is not None:
            completed = op in RUNS_STUDENT_CODE and reply.header.get("status") == "ok"
            self.watch.observe(roots, reply.header.get("watch"), completed=completed)
        try:
            return self._result(reply, label, roots)
        except wire.ProtocolError:
            self.transport.discard()
            raise WorkerLost("El proceso que ejecuta tu código envió una respuesta inválida.") from None

    def _result(self, reply: wire.Message, label: str, roots: frozenset[str]) -> Any:
        header = reply.header
        status = header.get("status")
        if status == "ok":
            return wire.decode(header.get("value"), reply.buffers, device_ok=self.transport.device_ok,
                               make_ref=lambda rid, type_name: RemoteRef(self, rid, type_name, label=type_name,
                                                                         roots=roots))
        if status == "raised":
            raise StudentError(label=label, type_name=_text(header.get("type"), 200),
                               message=_text(header.get("message"), 2000),
                               traceback=_text(header.get("traceback"), 4000))
        if status == "missing":
            raise MissingName(label)
        if status == "too_large":
            raise WorkerLost(f"`{label}` devolvió un resultado demasiado grande para transferirlo.")
        raise wire.ProtocolError(f"unexpected reply status {status!r}")

    def _encode_ref(self, value: object) -> dict:
        if isinstance(value, RemoteRef):
            if value._generation != self.transport.generation:
                raise WorkerLost(
                    "El proceso que ejecuta tu código se reinició durante esta comprobación "
                    "y este objeto ya no existe."
                )
            return {"$": "ref", "id": value._rid, "type": value._type}
        return wire.refuse_unknown(value)


def _text(value: object, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


class StudentNamespace:
    """The student's globals: `student.NAME` looks NAME up in the notebook's namespace."""

    def __init__(self, client: Client) -> None:
        object.__setattr__(self, "_client", client)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _labelled(self._client.request("lookup", [name], label=name, roots=frozenset({name})), name)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("checks may not assign names in the student's namespace")


def _labelled(value: Any, label: str) -> Any:
    if isinstance(value, RemoteRef):
        object.__setattr__(value, "_label", label)
    return value


class RemoteRef:
    """A handle to an object that lives with the student's code."""

    __slots__ = ("_client", "_rid", "_type", "_label", "_generation", "_roots")

    def __init__(self, client: Client, rid: int, type_name: str, *, label: str,
                 roots: frozenset[str] = frozenset()) -> None:
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_rid", rid)
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_generation", client.transport.generation)
        object.__setattr__(self, "_roots", roots)  # the student names this object descends from

    def _request(self, op: str, args: list, label: str) -> Any:
        return self._client.request(op, args, label=label)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        label = f"{self._label}.{name}"
        return _labelled(self._request("getattr", [self, name], label), label)

    def __setattr__(self, name: str, value: object) -> None:
        self._request("setattr", [self, name, value], f"{self._label}.{name} = ...")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        label = self._label
        return _labelled(self._request("call", [self, list(args), kwargs], label), f"{label}(...)")

    def __getitem__(self, key: Any) -> Any:
        return self._request("getitem", [self, key], f"{self._label}[...]")

    def __setitem__(self, key: Any, value: Any) -> None:
        self._request("setitem", [self, key, value], f"{self._label}[...] = ...")

    def __len__(self) -> int:
        return self._request("len", [self], f"len({self._label})")

    def __iter__(self):
        return iter(self._request("items", [self], f"list({self._label})"))

    def __bool__(self) -> bool:
        raise TypeError("checks must not use the truth value of a student's object")

    def __repr__(self) -> str:
        return f"<objeto de tipo {self._type}>"

    def _binop(self, name: str, left: Any, right: Any, symbol: str) -> Any:
        return self._request("binop", [name, left, right], f"{_show(left)} {symbol} {_show(right)}")

    def __neg__(self) -> Any:
        return self._request("unop", ["neg", self], f"-{self._label}")


def call_each(fn: RemoteRef, calls: list[tuple]) -> list:
    """`[fn(*args) for args in calls]` in a single round trip to the student's process."""
    if not isinstance(fn, RemoteRef):
        raise TypeError("call_each needs a function of the student's")
    return fn._request("call_each", [fn, [list(args) for args in calls]], fn._label)


def drive(target: StudentNamespace | RemoteRef, name: str, *args: Any, label: str, **kwargs: Any) -> Any:
    """Run the engine's driver `name` (see `autograder.drivers`) next to the student's code.

    `target` is the `student` namespace or any ref of the same submission; `label` names
    the step in messages (Spanish, e.g. "entrenar tu `LeNet`"). The result is untrusted data.
    """
    client = target._client
    return _labelled(client.request("driver", [name, list(args), kwargs], label=label), label)


def _show(value: Any) -> str:
    return value._label if isinstance(value, RemoteRef) else repr(value)


def _install_operators() -> None:
    """Forward arithmetic and comparisons to the worker, reflected forms included."""
    table = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//",
             "mod": "%", "pow": "**", "matmul": "@"}
    for name, symbol in table.items():
        setattr(RemoteRef, f"__{name}__",
                lambda self, other, n=name, s=symbol: self._binop(n, self, other, s))
        setattr(RemoteRef, f"__r{name}__",
                lambda self, other, n=name, s=symbol: self._binop(n, other, self, s))
    for name, symbol in {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}.items():
        setattr(RemoteRef, f"__{name}__",
                lambda self, other, n=name, s=symbol: self._binop(n, self, other, s))


_install_operators()

