"""The worker side of the boundary: runs requests against the student's namespace.

A `Dispatcher` owns the student's namespace and a table of objects handed out as
refs. Each request names an operation (look a name up, call, get or set an
attribute, apply an operator ...) with encoded arguments; the reply carries the
encoded result or a description of what the student's code raised.

The same dispatcher serves the grading worker (over a socket) and the student's
own notebook (in process, through `wire.roundtrip_bytes`), so checks see the same
by-value semantics in both places.
"""

from __future__ import annotations

import operator
import traceback
from typing import Callable

from . import wire

CELL_PREFIX = "<celda "
MAX_MESSAGE_CHARS = 2000
MAX_ITEMS = 100_000

BINARY_OPS: dict[str, Callable] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul,
    "truediv": operator.truediv, "floordiv": operator.floordiv, "mod": operator.mod,
    "pow": operator.pow, "matmul": operator.matmul,
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}
UNARY_OPS: dict[str, Callable] = {"neg": operator.neg}


class _Missing(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


class _BadRequest(Exception):
    pass


class RefTable:
    """Objects handed out as refs, kept alive for the life of the worker."""

    def __init__(self) -> None:
        self._objects: dict[int, object] = {}
        self._by_identity: dict[int, int] = {}

    def add(self, obj: object) -> dict:
        rid = self._by_identity.get(id(obj))
        if rid is None:
            rid = len(self._objects) + 1
            self._objects[rid] = obj
            self._by_identity[id(obj)] = rid
        return {"$": "ref", "id": rid, "type": _type_name(obj)}

    def get(self, rid: int) -> object:
        try:
            return self._objects[rid]
        except KeyError:
            raise _BadRequest(f"unknown ref {rid}") from None


def _type_name(obj: object) -> str:
    name = getattr(type(obj), "__qualname__", None)
    return name[:200] if isinstance(name, str) else "object"


def describe_exception(exc: BaseException) -> dict:
    """Type, message and the student's own frames of an exception."""
    try:
        message = str(exc)
    except Exception:  # a student exception whose __str__ fails
        message = ""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(CELL_PREFIX)
    ]
    lines = []
    for f in frames[-5:]:
        lines.append(f"  {f.filename}, línea {f.lineno}, en {f.name}")
        if f.line:
            lines.append(f"    {f.line}")
    return {
        "type": _type_name(exc),
        "message": message[:MAX_MESSAGE_CHARS],
        "traceback": "\n".join(lines)[:MAX_MESSAGE_CHARS],
    }


class Dispatcher:
    """Serves requests against `namespace` (the student's globals)."""

    def __init__(self, namespace: dict, *, max_bytes: int, device_ok: Callable[[str], bool]) -> None:
        self.namespace = namespace
        self.refs = RefTable()
        self.max_bytes = max_bytes
        self.device_ok = device_ok

    def handle(self, message: wire.Message) -> tuple[dict, list[memoryview]]:
        """Serve one request; a watched one (by-hand rules) also reports what the call executed."""
        watch = message.header.get("watch")
        if watch is None:
            return self._handle(message, run=lambda call: call())
        from .recorder import recorder_for

        recorder = recorder_for(watch)
        if recorder is None:
            return {"status": "bad_request", "message": "malformed watch"}, []
        header, buffers = self._handle(message, run=recorder.run)
        return {**header, "watch": recorder.report()}, buffers

    def _handle(self, message: wire.Message, *, run: Callable) -> tuple[dict, list[memoryview]]:
        header = message.header
        try:
            operation = _OPERATIONS.get(header.get("op"))
            if operation is None:
                raise _BadRequest(f"unknown operation {header.get('op')!r}")
            args = wire.decode(header.get("args"), message.buffers,
                               make_ref=lambda rid, _type: self.refs.get(rid), device_ok=self.device_ok)
            if type(args) is not list:
                raise _BadRequest("arguments must be a list")
        except (_BadRequest, wire.ProtocolError) as exc:
            return {"status": "bad_request", "message": str(exc)}, []
        try:
            result = run(lambda: operation(self, *args))
        except _Missing as exc:
            return {"status": "missing", "name": exc.name}, []
        except _BadRequest as exc:
            return {"status": "bad_request", "message": str(exc)}, []
        except BaseException as exc:  # the student's code raised (SystemExit included)
            return {"status": "raised", **describe_exception(exc)}, []
        try:
            tree, buffers = wire.encode(result, fallback=self.refs.add, max_bytes=self.max_bytes)
        except wire.TooLarge:
            return {"status": "too_large"}, []
        except BaseException as exc:  # e.g. a tensor whose data cannot be read
            return {"status": "raised", **describe_exception(exc)}, []
        return {"status": "ok", "value": tree}, buffers

    # Operations: each takes decoded arguments and returns the value to send back.

    def _lookup(self, name: str) -> object:
        if type(name) is not str or name not in self.namespace:
            raise _Missing(str(name))
        return self.namespace[name]

    def _getattr(self, obj: object, name: str) -> object:
        return getattr(obj, _name(name))

    def _setattr(self, obj: object, name: str, value: object) -> None:
        setattr(obj, _name(name), value)

    def _call(self, fn: object, args: list, kwargs: dict) -> object:
        if type(args) is not list or type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
            raise _BadRequest("bad call arguments")
        return fn(*args, **kwargs)

    def _call_each(self, fn: object, calls: list) -> list:
        if type(calls) is not list or not all(type(args) is list for args in calls):
            raise _BadRequest("bad call_each arguments")
        return [fn(*args) for args in calls]

    def _binop(self, name: str, left: object, right: object) -> object:
        if name not in BINARY_OPS:
            raise _BadRequest(f"unknown operator {name!r}")
        return BINARY_OPS[name](left, right)

    def _unop(self, name: str, value: object) -> object:
        if name not in UNARY_OPS:
            raise _BadRequest(f"unknown operator {name!r}")
        return UNARY_OPS[name](value)

    def _getitem(self, obj: object, key: object) -> object:
        return obj[key]

    def _setitem(self, obj: object, key: object, value: object) -> None:
        obj[key] = value

    def _len(self, obj: object) -> int:
        return len(obj)

    def _items(self, obj: object) -> list:
        items = []
        for item in obj:
            items.append(item)
            if len(items) > MAX_ITEMS:
                raise _BadRequest("too many items")
        return items

    def _repr(self, obj: object) -> str:
        return repr(obj)[:MAX_MESSAGE_CHARS]

    def _driver(self, name: str, args: list, kwargs: dict) -> object:
        """Run one of the engine's `drivers.DRIVERS` (training loops, autograd) on the student's objects."""
        from .drivers import DRIVERS

        if type(name) is not str or name not in DRIVERS:
            raise _BadRequest(f"unknown driver {name!r}")
        if type(args) is not list or type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
            raise _BadRequest("bad driver arguments")
        return DRIVERS[name](*args, **kwargs)


def _name(name: object) -> str:
    if type(name) is not str or not name.isidentifier():
        raise _BadRequest(f"bad attribute name {name!r}")
    return name


_OPERATIONS: dict[str, Callable] = {
    "lookup": Dispatcher._lookup, "getattr": Dispatcher._getattr, "setattr": Dispatcher._setattr,
    "call": Dispatcher._call, "call_each": Dispatcher._call_each, "binop": Dispatcher._binop, "unop": Dispatcher._unop,
    "getitem": Dispatcher._getitem, "setitem": Dispatcher._setitem, "len": Dispatcher._len,
    "items": Dispatcher._items, "repr": Dispatcher._repr, "driver": Dispatcher._driver,
}
