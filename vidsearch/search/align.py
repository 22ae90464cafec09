"""Temporal alignment of clip matches between a query and one library video.

Matches that keep a consistent offset between query time and library time form a segment.
A segment's score is its mean similarity times its length in query seconds, so a long
consistent match outranks one lucky clip. ``refine`` then places a segment's offset and ends
to a fraction of a clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

#: Clip times closer than this are the same time (stored times are float32-rounded).
_EPS = 1e-3


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


#: Weight of the library curve in refine's score: it only breaks ties, where a segment is too
#: short for any library clip to fit inside it and the query curve scores many offsets alike.
_LIBRARY_CURVE_WEIGHT = 0.1
#: Cosine lost per second that a clip is placed beyond a curve's end. Held at the end alone, a
#: clip whose best place is the last window would score as well anywhere beyond it, and a short
#: segment's offset could drift there (138 seeded cuts, tiny model: worst errors 1.1-1.3 s
#: without it, 0.57 s with it).
_BEYOND_END_PER_S = 0.05


def refine(
    segment: Segment,
    query_times: np.ndarray,
    query_vectors: np.ndarray,
    library_times: np.ndarray,
    library_vectors: np.ndarray,
    library_end: float,
    search_s: float,
    step_s: float = 0.01,
) -> Segment:
    """``segment`` with its offset found to ``step_s`` within ``search_s`` of its best clip pair,
    and its ends carried over by that offset.

    Matched clips place footage only to the nearest window. Between windows a video's clip
    vectors change gradually, so a video's clip vectors, interpolated linearly between window
    starts (and renormalised), trace a curve through time. The offset is the one that puts the
    library's clips where the query's curve is most similar to them on average (weighted by how
    much of each lies within the segment); the same done the other way round (the query's windows
    on the library's curve) counts a tenth, to break ties. Curves are held at their first and
    last window beyond their ends, less a little for each second beyond, so that every offset
    is scored on the same clips.

    Clips are (N, 2) start and end times, in time order, and unit vectors: the query's clips
    inside the segment are used, and all the library clips given (those around the segment). The query side
    keeps the segment's query ends, cut to where the library video begins (0) and ends
    (``library_end``); the library side is the query side plus the offset.
    """
    q_in = (query_times[:, 0] >= segment.q_start - _EPS) & (query_times[:, 1] <= segment.q_end + _EPS)
    q_rows = np.nonzero(q_in)[0]
    q_rows = q_rows[_distinct(query_times[q_rows, 0])]
    r_rows = np.nonzero(_distinct(library_times[:, 0]))[0]
    q_start, q_vec = query_times[q_rows, 0], query_vectors[q_rows]
    r_start, r_vec = library_times[r_rows, 0], library_vectors[r_rows]
    r_length = np.maximum(library_times[r_rows, 1] - r_start, _EPS)
    inside = (r_start >= segment.r_start - _EPS) & (r_start + r_length <= segment.r_end + _EPS)
    if not len(q_start) or not inside.any():
        return segment
    sims = q_vec @ r_vec.T
    qi, rj = np.unravel_index(int(np.argmax(np.where(inside[None, :], sims, -np.inf))), sims.shape)
    offset = float(r_start[rj] - q_start[qi])
    offsets = offset + np.arange(-search_s, search_s + step_s / 2, step_s)
    # each library clip counts by how much of it lies within the segment at the first guess: one
    # that sticks out can only be explained by the curve's end, and its similarity elsewhere is noise
    at = r_start - offset
    inside_share = np.clip(
        (np.minimum(at + r_length, segment.q_end) - np.maximum(at, segment.q_start)) / r_length, 0, 1
    )
    cols = np.nonzero(inside_share > 0)[0]
    score = np.zeros(len(offsets))
    if len(q_start) > 1 and len(cols):
        on_query = _on_curve(q_start, q_vec, r_start[cols][None, :] - offsets[:, None], sims[:, cols])
        score += on_query @ inside_share[cols] / inside_share[cols].sum()
    if len(r_start) > 1:
        on_library = _on_curve(r_start, r_vec, q_start[None, :] + offsets[:, None], sims.T)
        score += _LIBRARY_CURVE_WEIGHT * on_library.mean(axis=1)
    offset = float(offsets[int(np.argmax(score))])
    lo = max(float(segment.q_start), -offset)
    hi = min(float(segment.q_end), library_end - offset)
    if hi <= lo:
        return segment
    return replace(  # similarity, clips matched and confidence stay as matched
        segment,
        q_start=round(lo, 3),
        q_end=round(hi, 3),
        r_start=round(lo + offset, 3),
        r_end=round(hi + offset, 3),
    )


def _distinct(starts: np.ndarray) -> np.ndarray:
    """Which clips to keep so that start times are distinct (a curve needs them): the first of each."""
    return np.concatenate([[True], np.diff(starts) > _EPS]) if len(starts) else np.zeros(0, bool)


def _on_curve(starts: np.ndarray, vectors: np.ndarray, at: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Cosine between other clips and one video's curve at times ``at`` (offsets × clips).

    ``sims[i, j]`` is the cosine of this video's clip i with other clip j, whose place on the
    curve is ``at[:, j]`` (held at the curve's ends, less _BEYOND_END_PER_S a second beyond).
    For unit a, b and interpolation weight λ, cos(r, (1 − λ)a + λb) = ((1 − λ) r·a + λ r·b) / |(1 − λ)a + λb|.
    """
    held = np.clip(at, starts[0], starts[-1])
    beyond = np.abs(at - held)
    at = held
    k = np.clip(np.searchsorted(starts, at, side="right") - 1, 0, len(starts) - 2)
    lam = (at - starts[k]) / (starts[k + 1] - starts[k])
    adjacent = np.sum(vectors[:-1] * vectors[1:], axis=1)
    norm = np.sqrt(np.maximum((1 - lam) ** 2 + lam**2 + 2 * lam * (1 - lam) * adjacent[k], 1e-12))
    cols = np.arange(at.shape[1])[None, :]
    return ((1 - lam) * sims[k, cols] + lam * sims[k + 1, cols]) / norm - _BEYOND_END_PER_S * beyond
