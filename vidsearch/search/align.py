"""Temporal alignment of clip matches between a query and one library video.

Matches that keep a consistent offset between query time and library time form a segment.
A segment's score is its mean similarity times its length in query seconds, so a long
consistent match outranks one lucky clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Match:
    """One query clip matched to one library clip."""

    q_start: float
    q_end: float
    r_start: float
    r_end: float
    similarity: float

    def __post_init__(self) -> None:
        if self.q_end < self.q_start or self.r_end < self.r_start:
            raise ValueError(f"match ends before it starts: {self}")

    @property
    def offset(self) -> float:
        return self.r_start - self.q_start


@dataclass(frozen=True)
class Segment:
    """An aligned stretch: query [q_start, q_end] ↔ library [r_start, r_end]."""

    q_start: float
    q_end: float
    r_start: float
    r_end: float
    similarity: float
    matches: int
    #: in [0, 1], the same for every query (search/confidence.py); None until it is computed
    confidence: float | None = None

    @property
    def length(self) -> float:
        return self.q_end - self.q_start

    @property
    def score(self) -> float:
        """Mean similarity × query-side length in seconds."""
        return self.similarity * self.length


def align(
    matches: Sequence[Match],
    offset_tolerance: float,
    max_gap: float,
    max_segments: int = 5,
) -> list[Segment]:
    """Group matches into segments of consistent time offset, best first.

    Repeatedly takes the offset window (``offset_tolerance`` wide) holding the most similarity,
    keeps each query clip's best match inside it, and splits that set where the query time
    jumps by more than ``max_gap`` seconds. Each match is used in at most one segment.
    """
    if offset_tolerance < 0 or max_gap < 0:
        raise ValueError("offset_tolerance and max_gap must be >= 0")
    pool = sorted(matches, key=lambda m: m.offset)
    segments: list[Segment] = []
    while pool and len(segments) < max_segments * 4:
        lo, best, best_range, total = 0, -1.0, (0, 0), 0.0
        for hi, m in enumerate(pool):
            total += max(m.similarity, 0.0)
            while pool[hi].offset - pool[lo].offset > offset_tolerance:
                total -= max(pool[lo].similarity, 0.0)
                lo += 1
            if total > best:
                best, best_range = total, (lo, hi + 1)
        chosen = pool[best_range[0] : best_range[1]]
        del pool[best_range[0] : best_range[1]]
        per_query: dict[float, Match] = {}
        for m in chosen:
            if m.q_start not in per_query or m.similarity > per_query[m.q_start].similarity:
                per_query[m.q_start] = m
        run: list[Match] = []
        for m in sorted(per_query.values(), key=lambda m: m.q_start):
            if run and m.q_start - max(x.q_end for x in run) > max_gap:
                segments.append(_segment(run))
                run = []
            run.append(m)
        if run:
            segments.append(_segment(run))
    segments.sort(key=lambda s: s.score, reverse=True)
    return segments[:max_segments]


def _segment(run: Sequence[Match]) -> Segment:
    return Segment(
        q_start=min(m.q_start for m in run),
        q_end=max(m.q_end for m in run),
        r_start=min(m.r_start for m in run),
        r_end=max(m.r_end for m in run),
        similarity=sum(m.similarity for m in run) / len(run),
        matches=len(run),
    )


def covered_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    """Seconds covered by the union of the intervals."""
    total, cur_s, cur_e = 0.0, 0.0, -float("inf")
    for s, e in sorted(intervals):
        if s > cur_e:
            total += max(cur_e - cur_s, 0.0)
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + max(cur_e - cur_s, 0.0)
