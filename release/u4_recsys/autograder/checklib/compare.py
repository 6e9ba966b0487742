"""Verifying what the student's code returned: types, shapes, dtypes, devices and values.

Values are compared with a norm-relative error, ||actual - expected|| / ||expected||,
against a tolerance per dtype and device, so one tiny entry cannot fail a check and
a uniformly small error cannot pass one. Failures raise `CheckFailure` with a
Spanish summary (safe for hidden checks) and a detail with values and indices
(shown only for public checks).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import CheckFailure
from ..remote import RemoteRef

#: Norm-relative tolerance per dtype on cpu; cuda gets CUDA_FACTOR times more (other reduction orders).
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
CUDA_FACTOR = 10.0


def tolerance(dtype: torch.dtype, device: str | torch.device) -> float:
    base = TOLERANCE.get(dtype, 0.0)
    return base * (CUDA_FACTOR if torch.device(device).type == "cuda" else 1.0)


def describe(value: Any) -> str:
    """What a value is, in a few Spanish words."""
    if isinstance(value, RemoteRef):
        return f"un objeto de tipo `{value._type}`"
    if isinstance(value, torch.Tensor):
        return f"un torch.Tensor de forma {tuple(value.shape)}"
    if value is None:
        return "`None` (¿te faltó un `return`?)"
    return f"un valor de tipo `{type(value).__name__}`"


def expect_tensor(value: Any, *, name: str, shape: tuple | None = None, dtype: torch.dtype | None = None,
                  device: str | torch.device | None = None) -> torch.Tensor:
    """`value` must be a plain torch.Tensor with the given shape, dtype and device."""
    if type(value) is not torch.Tensor:
        raise CheckFailure(f"`{name}` debería ser un torch.Tensor, pero es {describe(value)}.")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise CheckFailure(f"`{name}` tiene forma {tuple(value.shape)}, pero se esperaba {tuple(shape)}.")
    if dtype is not None and value.dtype != dtype:
        raise CheckFailure(
            f"`{name}` es de tipo {str(value.dtype).removeprefix('torch.')}, pero se esperaba "
            f"{str(dtype).removeprefix('torch.')}. No cambies el dtype de las entradas."
        )
    if device is not None and value.device.type != torch.device(device).type:
        raise CheckFailure(
            f"`{name}` está en `{value.device}`, pero las entradas estaban en `{device}`. "
            "Crea los tensores nuevos en el mismo dispositivo que las entradas (p. ej. `device=x.device`)."
        )
    return value


def expect_sequence(value: Any, length: int, *, name: str, what: str) -> tuple:
    """`value` must be a tuple or list of `length` items, e.g. `(out, cache)`."""
    if not isinstance(value, (tuple, list)) or len(value) != length:
        raise CheckFailure(f"`{name}` debe devolver {what}, pero devolvió {describe(value)}.")
    return tuple(value)


def expect_number(value: Any, *, name: str) -> float:
    """A Python number, or a tensor holding one real number (`torch.tensor(0.5)`), as a float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex() \
            and value.dtype != torch.bool:
        return float(value.detach().reshape(()).cpu())
    if type(value) not in (int, float):
        raise CheckFailure(f"`{name}` debería ser un número, pero es {describe(value)}.")
    return float(value)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    diff = (actual.detach().to(torch.float64) - expected.detach().to(torch.float64)).norm()
    scale = expected.detach().to(torch.float64).norm()
    return float(diff / scale) if scale > 0 else float(diff)


def expect_close(actual: Any, expected: torch.Tensor, *, name: str, rtol: float | None = None,
                 hint: str | None = None) -> torch.Tensor:
    """`actual` must match `expected` in type, shape, dtype, device and values."""
    expected = expected.detach()
    actual = expect_tensor(actual, name=name, shape=expected.shape, dtype=expected.dtype,
                           device=expected.device).detach()
    tol = tolerance(expected.dtype, expected.device) if rtol is None else rtol
    suffix = f" Pista: {hint}" if hint else ""
    if not torch.isfinite(actual).all() and torch.isfinite(expected).all():
        raise CheckFailure(f"`{name}` contiene NaN o infinitos.{suffix}", detail=_worst(actual, expected))
    error = relative_error(actual, expected)
    if not error <= tol:
        raise CheckFailure(
            f"`{name}` no coincide con la referencia: error relativo {error:.1e} (tolerancia {tol:.0e}).{suffix}",
            detail=_worst(actual, expected),
        )
    return actual


def _worst(actual: torch.Tensor, expected: torch.Tensor) -> str:
    """Where the largest difference is, with both values (public checks only)."""
    if expected.numel() == 0:
        return ""
    diff = (actual.to(torch.float64) - expected.to(torch.float64)).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    flat = int(diff.reshape(-1).argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), expected.shape)) if expected.dim() else ()
    return (f"La mayor diferencia está en el índice {index}: se esperaba "
            f"{expected.reshape(-1)[flat].item():.6g} y se obtuvo {actual.reshape(-1)[flat].item():.6g}.")
