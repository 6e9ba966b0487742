"""The wire codec: what crosses the worker boundary intact, and what the trusted side refuses."""

import json
import math
import socket
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autograder import wire
from autograder.errors import ProtocolError


def roundtrip(value, fallback=wire.refuse_unknown):
    tree, buffers = wire.encode(value, fallback=fallback, max_bytes=2**30)
    message = wire.roundtrip_bytes({"v": tree}, buffers)
    return wire.decode(message.header["v"], message.buffers, make_ref=lambda rid, name: ("ref", rid, name))


scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(trees)
def test_plain_data_round_trips_with_exact_types(value):
    """Do nested lists, tuples, dicts and scalars come back equal and of the same types?"""
    back = roundtrip(value)
    assert back == value
    assert type(back) is type(value)


def test_non_finite_floats_round_trip():
    """Are inf, -inf and nan carried even though strict JSON has no such numbers?"""
    back = roundtrip([math.inf, -math.inf, math.nan])
    assert back[0] == math.inf and back[1] == -math.inf and math.isnan(back[2])


@pytest.mark.parametrize("tensor", [
    torch.randn(3, 4, dtype=torch.float64),
    torch.tensor(2.5),
    torch.zeros(0, 3),
    torch.randn(4, 5).T,
    torch.randn(2, 2, dtype=torch.bfloat16),
    torch.tensor([True, False]),
    torch.randn(3, dtype=torch.complex64).conj(),
    -torch.randn(3),
    torch.arange(6, dtype=torch.int64).reshape(2, 3)[:, ::2],
], ids=["float64", "0-d", "empty", "transposed", "bfloat16", "bool", "conj", "neg", "strided"])
def test_tensors_round_trip_exactly(tensor):
    """Does every dtype and memory layout arrive as an equal, plain, contiguous tensor?"""
    back = roundtrip(tensor)
    assert type(back) is torch.Tensor
    assert back.dtype == tensor.dtype and back.shape == tensor.shape
    assert torch.equal(back, tensor.resolve_conj().resolve_neg())


def test_requires_grad_and_arrays_are_carried():
    """Are `requires_grad` and numpy arrays preserved?"""
    tensor, array = torch.randn(2, requires_grad=True), np.arange(6.0).reshape(2, 3)
    back_tensor, back_array = roundtrip([tensor, array])
    assert back_tensor.requires_grad
    assert isinstance(back_array, np.ndarray) and np.array_equal(back_array, array)


def test_unknown_objects_become_refs_on_the_worker_side():
    """Do functions, instances and tensor subclasses stay behind as refs instead of crossing?"""

    class LyingTensor(torch.Tensor):
        def __eq__(self, other):
            return True

    refs = []

    def fallback(obj):
        refs.append(obj)
        return {"$": "ref", "id": len(refs), "type": type(obj).__qualname__}

    lying = torch.zeros(2).as_subclass(LyingTensor)
    back = roundtrip([len, object(), lying], fallback=fallback)
    assert [b[0] for b in back] == ["ref"] * 3
    assert back[2][2].endswith("LyingTensor")


def test_the_trusted_side_refuses_to_send_unknown_objects():
    """Can check code only send data of known types (and refs) to the worker?"""
    with pytest.raises(TypeError):
        wire.encode([object()], fallback=wire.refuse_unknown, max_bytes=2**30)


def test_values_over_the_size_limit_are_refused():
    """Is a result larger than the limit refused before it is sent?"""
    with pytest.raises(wire.TooLarge):
        wire.encode(torch.zeros(1000), fallback=wire.refuse_unknown, max_bytes=100)


GOOD_TENSOR = {"$": "tensor", "b": 0, "dtype": "float64", "shape": [2], "device": "cpu", "grad": False}


@pytest.mark.parametrize("tree, sizes", [
    ({"$": "pickle", "v": "payload"}, []),
    ({"$": "list", "v": [], "extra": 1}, []),
    ({"no_tag": 1}, []),
    ({**GOOD_TENSOR, "dtype": "object"}, [16]),
    ({**GOOD_TENSOR, "shape": [3]}, [16]),
    ({**GOOD_TENSOR, "shape": [-2]}, [16]),
    ({**GOOD_TENSOR, "device": "cuda:0; rm -rf /"}, [16]),
    ({**GOOD_TENSOR, "b": 1}, [16]),
    ({"$": "list", "v": [GOOD_TENSOR, GOOD_TENSOR]}, [16]),
    ({"$": "ref", "id": "1", "type": "x"}, []),
    ({"$": "float", "v": "1e999"}, []),
    ({"$": "dict", "v": [[[1], 2]]}, []),
    ({**GOOD_TENSOR, "shape": [0, 2**63]}, [0]),
    ({**GOOD_TENSOR, "device": "cuda:99"}, [16]),
    ({"$": "ndarray", "b": 0, "dtype": "float64", "shape": [0, 2**40, 2**40]}, [0]),
], ids=["unknown-tag", "extra-key", "untagged-object", "bad-dtype", "size-mismatch", "negative-dim",
        "bad-device", "bad-buffer-index", "buffer-reused", "bad-ref-id", "bad-float", "unhashable-key",
        "huge-dim", "absent-device", "huge-empty-array"])
def test_malformed_trees_are_rejected(tree, sizes):
    """Does the decoder refuse every node it does not fully understand?"""
    buffers = [memoryview(bytearray(n)) for n in sizes]
    with pytest.raises(ProtocolError):
        wire.decode(tree, buffers, make_ref=lambda rid, name: None)


def test_deep_nesting_is_rejected():
    """Is a value nested deeper than the limit refused (no recursion blow-up)?"""
    tree = 0
    for _ in range(wire.MAX_DEPTH + 5):
        tree = {"$": "list", "v": [tree]}
    with pytest.raises(ProtocolError):
        wire.decode(tree, [], make_ref=lambda rid, name: None)


def test_headers_with_nan_or_inconsistent_lengths_are_rejected():
    """Are non-standard JSON and buffer tables that do not add up refused?"""
    head = b'{"v": NaN, "_b": []}'
    with pytest.raises(ProtocolError):
        wire.parse_body(len(head), bytearray(head))
    head = json.dumps({"v": 1, "_b": [100]}).encode()
    with pytest.raises(ProtocolError):
        wire.parse_body(len(head), bytearray(head + bytes(16)))
    head = json.dumps({"v": 1, "_b": [0] * (wire.MAX_BUFFERS + 1)}).encode()
    with pytest.raises(ProtocolError):
        wire.parse_body(len(head), bytearray(head))


def test_connection_enforces_size_limit_and_deadline():
    """Does a receiver refuse an oversized message and give up at its deadline?"""
    a, b = socket.socketpair()
    sender, receiver = wire.Connection(a, max_bytes=2**30), wire.Connection(b, max_bytes=64)
    sender.send({"big": "x" * 1000})
    with pytest.raises(wire.TooLarge):
        receiver.recv(deadline=time.monotonic() + 5)
    silent, _other_end = socket.socketpair()
    with pytest.raises(TimeoutError):
        wire.Connection(silent, max_bytes=64).recv(deadline=time.monotonic() + 0.05)


def test_connection_rejects_garbage_prefix():
    """Is a stream that does not start with the protocol's magic refused?"""
    a, b = socket.socketpair()
    a.sendall(b"GARBAGE!" * 4)
    with pytest.raises(ProtocolError):
        wire.Connection(b, max_bytes=2**20).recv(deadline=time.monotonic() + 5)
