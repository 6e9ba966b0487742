"""Which pairs to compare, and how alike they are, without comparing every pair.

An inverted index maps each (part, fingerprint) to the submissions that hold it. A
fingerprint held by more than `max_holders` submissions is common code (an idiom,
a hint everyone followed) and is ignored, as MOSS does. Only pairs that share a
remaining fingerprint are scored, so the work grows with the number of shared
fingerprints, not with n(n-1)/2. Pairs sharing fewer than `min_shared` fingerprints
are counted but not scored (one shared k-gram is a coincidence).

A part's score is the Jaccard index of the two fingerprint sets; the pair's score is
the Jaccard index over all parts together (a fingerprint counts once per part).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations

#: Where a fingerprint lies: (notebook cell position, line in that cell) of each of its tokens.
Where = frozenset[tuple[int, int]]


@dataclass
class Document:
    """One student's fingerprints per part (release code already removed), with where they lie."""

    student: str
    prints: dict[str, dict[int, list[Where]]]  # part -> hash -> places (a hash may occur more than once)


@dataclass(frozen=True)
class PartScore:
    part: str
    score: float  # Jaccard index of the two sets
    matched: int
    prints_a: int
    prints_b: int


@dataclass(frozen=True)
class Candidate:
    a: int  # document indexes, a < b
    b: int
    score: float
    matched: int
    prints_a: int
    prints_b: int
    parts: tuple[PartScore, ...]  # parts with matches, best first


@dataclass(frozen=True)
class Search:
    candidates: list[Candidate]  # every pair that shares at least `min_shared` fingerprints, best first
    sharing: int  # pairs that share at least one fingerprint
    common: frozenset[tuple[str, int]]  # (part, fingerprint) entries ignored as common code
    holders_limit: int


def search(documents: list[Document], *, max_holders: int, min_shared: int = 2) -> Search:
    index: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, document in enumerate(documents):
        for part, prints in document.prints.items():
            for value in prints:
                index[(part, value)].append(i)
    common = {key for key, holders in index.items() if len(holders) > max_holders}
    sizes = [{part: sum((part, value) not in common for value in prints) for part, prints in d.prints.items()}
             for d in documents]
    shared: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for key, holders in index.items():
        if 2 <= len(holders) <= max_holders:
            for a, b in combinations(holders, 2):
                shared[(a, b)][key[0]] += 1
    candidates = [_score(a, b, matches, sizes[a], sizes[b]) for (a, b), matches in shared.items()
                  if sum(matches.values()) >= min_shared]
    candidates.sort(key=lambda c: (-c.score, -c.matched, documents[c.a].student, documents[c.b].student))
    return Search(candidates, len(shared), frozenset(common), max_holders)


def _score(a: int, b: int, matches: dict[str, int], size_a: dict[str, int], size_b: dict[str, int]) -> Candidate:
    parts = []
    for part, matched in matches.items():
        union = size_a[part] + size_b[part] - matched
        parts.append(PartScore(part, matched / union, matched, size_a[part], size_b[part]))
    parts.sort(key=lambda p: (-p.matched, -p.score, p.part))
    matched = sum(matches.values())
    total_a, total_b = sum(size_a.values()), sum(size_b.values())
    return Candidate(a, b, matched / (total_a + total_b - matched), matched, total_a, total_b, tuple(parts))


def matched_lines(document: Document, other: Document, part: str, *,
                  common: frozenset[tuple[str, int]] = frozenset()) -> dict[int, set[int]]:
    """Lines of `document`'s part covered by fingerprints it shares with `other`: cell position -> lines."""
    mine, theirs = document.prints.get(part, {}), other.prints.get(part, {})
    lines: dict[int, set[int]] = defaultdict(set)
    for value in mine.keys() & theirs.keys():
        if (part, value) in common:
            continue
        for where in mine[value]:
            for cell, line in where:
                lines[cell].add(line)
    return dict(lines)
