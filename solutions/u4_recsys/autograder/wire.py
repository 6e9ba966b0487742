"""Messages and a safe codec for the values that cross the worker boundary.

A message is a JSON header plus raw byte buffers (tensor and array data):

    magic "AGW1" | u32 header length | u64 body length | header (padded) | buffers (padded)

Values are encoded as a JSON tree. Scalars (None, bool, int, finite float, str) are
plain JSON; everything else is an object with a "$" tag: list, tuple, dict, float
(non-finite), tensor, ndarray and ref (an opaque handle to an object that stays in
the worker). Decoding builds only those types from validated fields, never runs
code and never unpickles, so a hostile worker can at worst send wrong data, which
the checks then reject. Tensor subclasses, for instance, cannot cross: they become
refs, and checks that expect a tensor refuse them.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
import re
import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import ProtocolError

MAGIC = b"AGW1"
PREFIX = struct.Struct("<4sIQ")
ALIGN = 16
MAX_HEADER_BYTES = 16 * 2**20
MAX_DEPTH = 64
MAX_NODES = 1_000_000
MAX_NDIM = 16
MAX_DIM = 2**40
MAX_BUFFERS = 65536
_SMALL_MESSAGE = 256 * 1024

#: torch dtype -> (wire name, numpy dtype with the same bytes; bfloat16 travels as int16 bits).
_TORCH_WIRE: dict[torch.dtype, tuple[str, np.dtype]] = {
    torch.bool: ("bool", np.dtype(np.bool_)), torch.uint8: ("uint8", np.dtype(np.uint8)),
    torch.int8: ("int8", np.dtype(np.int8)), torch.int16: ("int16", np.dtype(np.int16)),
    torch.int32: ("int32", np.dtype(np.int32)), torch.int64: ("int64", np.dtype(np.int64)),
    torch.float16: ("float16", np.dtype(np.float16)), torch.bfloat16: ("bfloat16", np.dtype(np.int16)),
    torch.float32: ("float32", np.dtype(np.float32)), torch.float64: ("float64", np.dtype(np.float64)),
    torch.complex64: ("complex64", np.dtype(np.complex64)), torch.complex128: ("complex128", np.dtype(np.complex128)),
}
TORCH_DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {name: (dt, npdt) for dt, (name, npdt) in _TORCH_WIRE.items()}
NUMPY_DTYPES = frozenset(
    "bool uint8 uint16 uint32 uint64 int8 int16 int32 int64 "
    "float16 float32 float64 complex64 complex128".split()
)
_DEVICE = re.compile(r"^(cpu|cuda(:\d{1,2})?)$")
_TAGS = {
    "list": frozenset({"$", "v"}), "tuple": frozenset({"$", "v"}), "dict": frozenset({"$", "v"}),
    "float": frozenset({"$", "v"}), "tensor": frozenset({"$", "b", "dtype", "shape", "device", "grad"}),
    "ndarray": frozenset({"$", "b", "dtype", "shape"}), "ref": frozenset({"$", "id", "type"}),
}


class ConnectionClosed(EOFError):
    """The other end closed the connection."""


class TooLarge(ValueError):
    """A value or message is over the configured size limit."""


@dataclass
class Message:
    header: dict
    buffers: list[memoryview]


# --------------------------------------------------------------------------- encode

Fallback = Callable[[object], dict]


#: NumPy scalar types, exactly (a subclass stays behind as a ref), and the Python type each is sent as.
NUMPY_SCALARS: dict[type, Callable] = {
    **{np.dtype(name).type: float for name in ("float16", "float32", "float64")},
    **{np.dtype(name).type: int for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                                             "uint64")},
    np.bool_: bool,
}


def encode(value: object, *, fallback: Fallback, max_bytes: int) -> tuple[object, list[memoryview]]:
    """Encode `value` into a JSON tree plus buffers.

    Objects of any type outside the codec are handed to `fallback`, which returns a
    node for them (a ref in the worker, an error on the trusted side).
    """
    buffers: list[memoryview] = []
    budget = [max_bytes]

    def add_buffer(view: memoryview) -> int:
        budget[0] -= view.nbytes
        if budget[0] < 0:
            raise TooLarge(f"value is over {max_bytes} bytes")
        buffers.append(view)
        return len(buffers) - 1

    def walk(x: object, depth: int) -> object:
        t = type(x)
        if x is None or t is bool or t is int or t is str:
            return x
        if t is float:
            return x if math.isfinite(x) else {"$": "float", "v": repr(x)}
        if depth >= MAX_DEPTH:
            return fallback(x)
        if t is list or t is tuple:
            return {"$": t.__name__, "v": [walk(item, depth + 1) for item in x]}
        if t is dict or t is OrderedDict:
            if all(type(k) in (str, int, bool) or k is None for k in x):
                return {"$": "dict", "v": [[k, walk(v, depth + 1)] for k, v in x.items()]}
            return fallback(x)
        if t is torch.Tensor or t is torch.nn.Parameter:
            node = _encode_tensor(x, add_buffer)
            return node if node is not None else fallback(x)
        if t in NUMPY_SCALARS:  # e.g. the np.float64 that np.exp returns: sent as the plain number it is
            return walk(NUMPY_SCALARS[t](x), depth)
        if t is np.ndarray and x.dtype.name in NUMPY_DTYPES:
            array = np.ascontiguousarray(x)
            index = add_buffer(memoryview(array.reshape(-1).view(np.uint8)))
            return {"$": "ndarray", "b": index, "dtype": array.dtype.name, "shape": list(array.shape)}
        return fallback(x)

    return walk(value, 0), buffers


def _encode_tensor(t: torch.Tensor, add_buffer: Callable[[memoryview], int]) -> dict | None:
    wire = _TORCH_WIRE.get(t.dtype)
    if wire is None or t.layout is not torch.strided or t.is_quantized:
        return None
    if t.is_cuda:
        device = str(t.device)
        data = t.detach().resolve_conj().resolve_neg().cpu().contiguous()
    elif t.device.type == "cpu":
        device = "cpu"
        data = t.detach()
        if not data.is_contiguous() or data.is_conj() or data.is_neg():
            data = data.resolve_conj().resolve_neg().contiguous()
    else:
        return None
    if t.dtype is torch.bfloat16:
        data = data.view(torch.int16)
    array = data.numpy()
    index = add_buffer(memoryview(array.reshape(-1) if array.ndim != 1 else array).cast("B"))
    return {"$": "tensor", "b": index, "dtype": wire[0], "shape": list(t.shape), "device": device,
            "grad": t.requires_grad}


def refuse_unknown(x: object) -> dict:
    """Fallback for the trusted side: only values of known types may be sent."""
    raise TypeError(f"cannot send a {type(x).__name__} to the worker")


# --------------------------------------------------------------------------- decode

RefFactory = Callable[[int, str], object]


def decode(tree: object, buffers: Sequence[memoryview], *, make_ref: RefFactory,
           device_ok: Callable[[str], bool] = lambda d: d == "cpu") -> object:
    """Build a value from a JSON tree, validating every node (raises ProtocolError)."""
    used: set[int] = set()
    count = [0]

    def take(index: object, nbytes: int) -> memoryview:
        if type(index) is not int or not 0 <= index < len(buffers) or index in used:
            raise ProtocolError(f"bad buffer index {index!r}")
        used.add(index)
        view = buffers[index]
        if view.nbytes != nbytes:
            raise ProtocolError(f"buffer {index} has {view.nbytes} bytes, expected {nbytes}")
        return view

    def walk(node: object, depth: int) -> object:
        count[0] += 1
        if count[0] > MAX_NODES or depth > MAX_DEPTH:
            raise ProtocolError("value is nested too deeply or has too many parts")
        t = type(node)
        if node is None or t is bool or t is int or t is str or t is float:
            return node
        tag = node.get("$") if t is dict else None
        if tag not in _TAGS or node.keys() != _TAGS[tag]:
            raise ProtocolError(f"unknown node {str(node)[:80]!r}")
        if tag in ("list", "tuple"):
            items = _list(node["v"])
            out = [walk(item, depth + 1) for item in items]
            return out if tag == "list" else tuple(out)
        if tag == "dict":
            result = {}
            for pair in _list(node["v"]):
                if type(pair) is not list or len(pair) != 2:
                    raise ProtocolError("bad dict entry")
                key = pair[0]
                if not (key is None or type(key) in (str, int, bool)):
                    raise ProtocolError("bad dict key")
                result[key] = walk(pair[1], depth + 1)
            return result
        if tag == "float":
            if node["v"] not in ("nan", "inf", "-inf"):
                raise ProtocolError("bad float")
            return float(node["v"])
        if tag == "tensor":
            return _decode_tensor(node, take, device_ok)
        if tag == "ndarray":
            return _decode_ndarray(node, take)
        rid, type_name = node["id"], node["type"]
        if type(rid) is not int or rid < 0 or type(type_name) is not str or len(type_name) > 200:
            raise ProtocolError("bad ref")
        return make_ref(rid, type_name)

    return walk(tree, 0)


def _list(value: object) -> list:
    if type(value) is not list:
        raise ProtocolError("expected a list")
    return value


def _shape(value: object) -> tuple[int, ...]:
    shape = _list(value)
    if len(shape) > MAX_NDIM or any(type(n) is not int or not 0 <= n <= MAX_DIM for n in shape):
        raise ProtocolError(f"bad shape {shape!r}")
    return tuple(shape)


def _decode_tensor(node: dict, take, device_ok) -> torch.Tensor:
    wire = TORCH_DTYPES.get(node["dtype"]) if type(node["dtype"]) is str else None
    device = node["device"]
    if wire is None or type(device) is not str or type(node["grad"]) is not bool:
        raise ProtocolError("bad tensor header")
    if device != "cpu" and not (_DEVICE.match(device) and device_ok(device)):
        raise ProtocolError(f"device {device!r} is not available here")
    dtype, npdtype = wire
    shape = _shape(node["shape"])
    view = take(node["b"], math.prod(shape) * npdtype.itemsize)
    try:
        tensor = torch.from_numpy(np.frombuffer(view, dtype=npdtype).reshape(shape))
        if dtype is torch.bfloat16:
            tensor = tensor.view(torch.bfloat16)
        if device != "cpu":
            tensor = tensor.to(device)
    except (ValueError, RuntimeError) as exc:
        raise ProtocolError(f"bad tensor: {exc}") from None
    if node["grad"] and (dtype.is_floating_point or dtype.is_complex):
        tensor.requires_grad_(True)
    return tensor


def _decode_ndarray(node: dict, take) -> np.ndarray:
    if type(node["dtype"]) is not str or node["dtype"] not in NUMPY_DTYPES:
        raise ProtocolError("bad array dtype")
    dtype = np.dtype(node["dtype"])
    shape = _shape(node["shape"])
    view = take(node["b"], math.prod(shape) * dtype.itemsize)
    try:
        return np.frombuffer(view, dtype=dtype).reshape(shape)
    except ValueError as exc:
        raise ProtocolError(f"bad array: {exc}") from None


# --------------------------------------------------------------------------- framing

def _pad(n: int) -> int:
    return -n % ALIGN


def frame(header: dict, buffers: Sequence[memoryview]) -> tuple[bytes, list]:
    """One message as (prefix + header, [buffer, padding, ...]); the header gets the buffer lengths as "_b"."""
    lengths = [b.nbytes for b in buffers]
    head = _JSON_OUT.encode(dict(header, _b=lengths)).encode()
    pad = -len(head) % ALIGN
    tail: list = []
    body = len(head) + pad
    for buf, n in zip(buffers, lengths):
        tail.append(buf)
        if n % ALIGN:
            tail.append(_ZEROS[: -n % ALIGN])
        body += n + (-n % ALIGN)
    return PREFIX.pack(MAGIC, len(head), body) + head + _ZEROS[:pad], tail


_ZEROS = bytes(ALIGN)


def parse_body(head_len: int, body: bytearray) -> Message:
    """Split a received body into header and buffers, validating the layout."""
    try:
        header = _JSON_IN.decode(body[:head_len].decode())
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"bad header: {exc}") from None
    if type(header) is not dict:
        raise ProtocolError("header is not an object")
    lengths = header.pop("_b", None)
    if type(lengths) is not list or len(lengths) > MAX_BUFFERS or any(type(n) is not int or n < 0 for n in lengths):
        raise ProtocolError("bad buffer table")
    view = memoryview(body)
    offset = head_len + _pad(head_len)
    buffers = []
    for n in lengths:
        if offset + n > len(body):
            raise ProtocolError("buffers overrun the message")
        buffers.append(view[offset:offset + n])
        offset += n + _pad(n)
    if offset != len(body):
        raise ProtocolError("message length does not match its buffers")
    return Message(header, buffers)


def _reject_constant(name: str) -> None:
    raise ProtocolError(f"non-standard JSON constant {name}")


_JSON_OUT = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_JSON_IN = json.JSONDecoder(parse_constant=_reject_constant)


def roundtrip_bytes(header: dict, buffers: Sequence[memoryview]) -> Message:
    """Frame and parse in memory: the same copy-by-value semantics as a real pipe."""
    first, tail = frame(header, buffers)
    data = bytearray(first)
    for part in tail:
        data += part
    _, head_len, _ = PREFIX.unpack_from(data)
    return parse_body(head_len, data[PREFIX.size:])


def copy_through_wire(value: object) -> object:
    """`value` encoded, framed, parsed and decoded: what a call pays to move it across the boundary."""
    tree, buffers = encode(value, fallback=refuse_unknown, max_bytes=2**40)
    message = roundtrip_bytes({"v": tree}, buffers)
    return decode(message.header["v"], message.buffers, make_ref=lambda rid, name: None,
                  device_ok=lambda device: True)


class Connection:
    """Messages over a stream socket, with deadlines and a size limit on what is received."""

    def __init__(self, sock: socket.socket, *, max_bytes: int) -> None:
        self.sock = sock
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._pos = 0

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, header: dict, buffers: Sequence[memoryview] = (), *, deadline: float | None = None) -> None:
        first, tail = frame(header, buffers)
        self._set_timeout(deadline)
        if not tail:
            self.sock.sendall(first)
        elif sum(part.nbytes if type(part) is memoryview else len(part) for part in tail) <= _SMALL_MESSAGE:
            data = bytearray(first)
            for part in tail:
                data += part
            self.sock.sendall(data)
        else:
            self.sock.sendall(first)
            for part in tail:
                self._set_timeout(deadline)
                self.sock.sendall(part)

    def recv(self, *, deadline: float | None = None) -> Message:
        self._fill(PREFIX.size, deadline)
        magic, head_len, body_len = PREFIX.unpack_from(self._buf, self._pos)
        if magic != MAGIC or head_len > MAX_HEADER_BYTES or head_len > body_len:
            raise ProtocolError("bad message prefix")
        if body_len > self.max_bytes:
            raise TooLarge(f"message of {body_len} bytes is over the limit of {self.max_bytes}")
        self._pos += PREFIX.size
        body = bytearray(body_len)
        have = min(len(self._buf) - self._pos, body_len)
        body[:have] = self._buf[self._pos:self._pos + have]
        self._pos += have
        view = memoryview(body)
        while have < body_len:
            self._set_timeout(deadline)
            got = self.sock.recv_into(view[have:])
            if not got:
                raise ConnectionClosed("connection closed mid-message")
            have += got
        return parse_body(head_len, body)

    def _fill(self, n: int, deadline: float | None) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        while len(self._buf) - self._pos < n:
            self._set_timeout(deadline)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionClosed("connection closed")
            self._buf += chunk

    def _set_timeout(self, deadline: float | None) -> None:
        if deadline is None:
            if self.sock.gettimeout() is not None:
                self.sock.settimeout(None)
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(remaining)

