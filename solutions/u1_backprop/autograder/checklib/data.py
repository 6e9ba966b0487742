"""Random inputs for checks, drawn on the CPU from the check's generator, then moved."""

from __future__ import annotations

import math

import torch


def randn(rng: torch.Generator, *shape: int, device: str = "cpu", scale: float = 1.0,
          dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return (torch.randn(shape, generator=rng, dtype=torch.float64) * scale).to(dtype=dtype, device=device)


def randint(rng: torch.Generator, low: int, high: int, *shape: int, device: str = "cpu") -> torch.Tensor:
    return torch.randint(low, high, shape, generator=rng).to(device)


def size(rng: torch.Generator, low: int, high: int) -> int:
    """A random integer in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=rng))


def spiral(rng: torch.Generator, *, points_per_class: int = 100, classes: int = 3,
           noise: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """The classic spiral data set (cs231n): `classes` interleaved arms in the plane.

    Returns X (N, 2) float64 and y (N,) int64 with N = points_per_class * classes.
    """
    xs, ys = [], []
    radius = torch.linspace(0.0, 1.0, points_per_class, dtype=torch.float64)
    for k in range(classes):
        start = k * 2 * math.pi / classes * 2
        theta = torch.linspace(start, start + 4.0, points_per_class, dtype=torch.float64)
        theta = theta + noise * torch.randn(points_per_class, generator=rng, dtype=torch.float64)
        xs.append(torch.stack([radius * torch.sin(theta), radius * torch.cos(theta)], dim=1))
        ys.append(torch.full((points_per_class,), k, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)
