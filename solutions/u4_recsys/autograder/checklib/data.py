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


GLYPH_CLASSES = ("horizontal bar", "vertical bar", "diagonal", "anti-diagonal", "plus", "X", "ring", "disk",
                 "two horizontal bars", "two vertical bars")


def glyphs(rng: torch.Generator, n: int, *, size: int = 28, channels: int = 1,
           noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedurally drawn images of 10 simple shapes (`GLYPH_CLASSES`), no download needed.

    Each image shows one shape of random position, size, stroke width and brightness, plus
    Gaussian noise; with `channels=3` the shape and the background get random colours.
    Returns X (n, channels, size, size) float32, standardised over the set, and y (n,) int64.
    """
    y = torch.randint(0, len(GLYPH_CLASSES), (n,), generator=rng)
    grid = torch.arange(size, dtype=torch.float32)
    centre = (size - 1) / 2 + (torch.rand(2, n, 1, 1, generator=rng) - 0.5) * size * 0.2
    dx, dy = grid.view(1, 1, -1) - centre[0], grid.view(1, -1, 1) - centre[1]  # (n, 1, size), (n, size, 1)
    s = (0.2 + 0.1 * torch.rand(n, 1, 1, generator=rng)) * size  # half the shape's extent
    t = 1.2 + 0.8 * torch.rand(n, 1, 1, generator=rng)  # stroke half-width, pixels
    far = torch.full((n, size, size), 99.0)
    box, r = torch.maximum(dx.abs(), dy.abs()), (dx ** 2 + dy ** 2).sqrt()
    inside, across, down = box <= s, dx.abs() <= s, dy.abs() <= s
    diag, anti = (dx - dy).abs() / math.sqrt(2), (dx + dy).abs() / math.sqrt(2)
    distance = torch.stack([  # distance of each pixel to the stroke of each class: (n, 10, size, size)
        torch.where(across, dy.abs(), far),
        torch.where(down, dx.abs(), far),
        torch.where(inside, diag, far),
        torch.where(inside, anti, far),
        torch.where(inside, torch.minimum(dx.abs(), dy.abs()), far),
        torch.where(inside, torch.minimum(diag, anti), far),
        (r - s).abs(),
        (r - 0.6 * s).clamp(min=0),
        torch.where(across, (dy.abs() - 0.6 * s).abs(), far),
        torch.where(down, (dx.abs() - 0.6 * s).abs(), far),
    ], dim=1)[torch.arange(n), y]
    ink = (t - distance + 0.5).clamp(0, 1).unsqueeze(1)  # (n, 1, size, size), anti-aliased edges
    if channels == 1:
        foreground, background = 0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=rng), torch.zeros(n, 1, 1, 1)
    else:
        foreground = 0.5 + 0.5 * torch.rand(n, channels, 1, 1, generator=rng)
        background = 0.3 * torch.rand(n, channels, 1, 1, generator=rng)
    X = background + (foreground - background) * ink
    X = X + noise * torch.randn(n, channels, size, size, generator=rng)
    return (X - X.mean()) / X.std(), y
