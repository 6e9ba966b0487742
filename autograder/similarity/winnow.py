"""Winnowing (Schleimer, Wilkerson and Aiken 2003, the algorithm behind MOSS).

Hash every k-gram of the token stream, slide a window over `window` consecutive
k-gram hashes and keep the smallest of each window (the rightmost on ties; a position
is kept once even when several windows pick it). The guarantee: two streams that
share a run of at least `window + k - 1` tokens share a fingerprint, because the
window over that run holds the same hashes in both and so yields the same minimum.
Runs shorter than `k` tokens are never detected (noise such as `return out`).

Hashes are stable across processes (token texts hashed with blake2b), so a report
is reproducible.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_MOD = (1 << 61) - 1
_BASE = 1_000_003


@dataclass(frozen=True)
class Fingerprint:
    hash: int
    start: int  # index of the k-gram's first token in the stream


def token_hash(text: str, _cache: dict[str, int] = {}) -> int:  # noqa: B006 - a deliberate memo
    value = _cache.get(text)
    if value is None:
        value = _cache[text] = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") % _MOD
    return value


def kgram_hashes(texts: list[str], k: int) -> list[int]:
    """The hash of every k-gram (a rolling polynomial hash mod 2**61 - 1), in stream order."""
    if len(texts) < k:
        return []
    values = [token_hash(t) for t in texts]
    top = pow(_BASE, k - 1, _MOD)
    h = 0
    for v in values[:k]:
        h = (h * _BASE + v) % _MOD
    out = [h]
    for i in range(k, len(values)):
        h = ((h - values[i - k] * top) * _BASE + values[i]) % _MOD
        out.append(h)
    return out


def winnow(hashes: list[int], window: int) -> list[Fingerprint]:
    """The fingerprints of a document given its k-gram hashes (a short document keeps its minimum)."""
    if not hashes:
        return []
    if len(hashes) <= window:
        best = min(range(len(hashes)), key=lambda i: (hashes[i], -i))
        return [Fingerprint(hashes[best], best)]
    picked: list[Fingerprint] = []
    last = -1
    for end in range(window - 1, len(hashes)):
        start = end - window + 1
        if last < start:  # the previous minimum left the window: scan it all
            best = start
            for i in range(start + 1, end + 1):
                if hashes[i] <= hashes[best]:
                    best = i
        else:  # only the new hash can beat the kept minimum (ties go right)
            best = end if hashes[end] <= hashes[last] else last
        if best != last:
            picked.append(Fingerprint(hashes[best], best))
            last = best
    return picked


def fingerprints(texts: list[str], *, k: int, window: int) -> list[Fingerprint]:
    return winnow(kgram_hashes(texts, k), window)
