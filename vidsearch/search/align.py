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
    is scored on the same clips. With one clip a side there is no curve: the best pair's offset stands.

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
    query_curve, library_curve = len(q_start) > 1 and len(cols) > 0, len(r_start) > 1
    if query_curve:
        on_query = _on_curve(q_start, q_vec, r_start[cols][None, :] - offsets[:, None], sims[:, cols])
        score += on_query @ inside_share[cols] / inside_share[cols].sum()
    if library_curve:
        on_library = _on_curve(r_start, r_vec, q_start[None, :] + offsets[:, None], sims.T)
        score += _LIBRARY_CURVE_WEIGHT * on_library.mean(axis=1)
    if query_curve or library_curve:  # else every offset scores 0, and the first searched is no answer
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


def extend(
    segment: Segment,
    a: tuple[np.ndarray, np.ndarray, np.ndarray, float],
    b: tuple[np.ndarray, np.ndarray, np.ndarray, float],
    level: float,
    offset: float | None = None,
) -> Segment:
    """``segment`` as matched, at ``offset`` (default: its own), over both sides' matched clips
    and grown over the clips next to them that still match: two stored videos' segment (as in
    dupes), whose ends the matched clips alone place only to a window.

    ``a`` and ``b`` are the query's and the library's (times, vectors, usable, end): each video's
    clips (all, or those around the segment) as (N, 2) times in time order and unit vectors,
    which of them may count as evidence (blank and common clips may not: nor may a clip that
    lies mostly over one of them on the other side), and where the video ends. Where a copy's
    windows straddle the source's, the clips at its ends fall below the threshold and each side's
    matched clips stop short of the footage's ends by up to a window or two, not always on the
    same side. So each side's clips are scored against the other side's curve at the offset (as
    refine scores them); a side's extent grows clip by clip, outwards from its matched clips,
    while the next one is usable, scores ``level`` or more and lies within the other video; the
    segment is the union of both sides' extents (in a's time), cut to where either video begins
    and ends. Where a video has one clip (it is shorter than a window) there is no curve, and
    neither side grows.
    """
    (a_times, a_vectors, a_usable, a_end), (b_times, b_vectors, b_usable, b_end) = a, b
    offset = segment.r_start - segment.q_start if offset is None else offset
    a_rows, b_rows = np.nonzero(_distinct(a_times[:, 0]))[0], np.nonzero(_distinct(b_times[:, 0]))[0]
    if not len(a_rows) or not len(b_rows):
        return segment
    a_start, a_vec, a_stop = a_times[a_rows, 0], a_vectors[a_rows], a_times[a_rows, 1]
    b_start, b_vec, b_stop = b_times[b_rows, 0], b_vectors[b_rows], b_times[b_rows, 1]
    if len(a_rows) > 1 and len(b_rows) > 1:
        sims = a_vec @ b_vec.T
        # each a clip on b's curve where it falls there, and each b clip on a's (in a's time)
        a_score = _on_curve(b_start, b_vec, (a_start + offset)[None, :], sims.T)[0]
        b_score = _on_curve(a_start, a_vec, (b_start - offset)[None, :], sims)[0]
    else:  # a video of one clip has no curve and nothing to grow over: the matched clips at the offset
        a_score, b_score = np.full(len(a_rows), -np.inf), np.full(len(b_rows), -np.inf)
    # in a's time: each side's clips, whether they count, its matched extent, its scores, and
    # where the other video lets them lie
    a_side = (a_start, a_stop, a_usable[a_rows])
    b_side = (b_start - offset, b_stop - offset, b_usable[b_rows])
    sides = (
        (a_side, (segment.q_start, segment.q_end), b_side, a_score, (-offset, b_end - offset)),
        (b_side, (segment.r_start - offset, segment.r_end - offset), a_side, b_score, (0.0, a_end)),
    )
    lo, hi = np.inf, -np.inf
    for (starts, stops, usable), (m_lo, m_hi), other, score, within in sides:
        lo, hi = min(lo, m_lo), max(hi, m_hi)
        matched = np.nonzero((starts >= m_lo - _EPS) & (stops <= m_hi + _EPS))[0]
        if not len(matched):
            continue
        good = usable & ~_over_unusable(starts, stops, *other) & (score >= level)
        good &= (starts >= within[0] - _EPS) & (stops <= within[1] + _EPS)
        first, last = int(matched[0]), int(matched[-1])
        while first > 0 and good[first - 1]:
            first -= 1
        while last < len(starts) - 1 and good[last + 1]:
            last += 1
        lo, hi = min(lo, float(starts[first])), max(hi, float(stops[last]))
    lo, hi = max(lo, 0.0, -offset), min(hi, a_end, b_end - offset)
    if hi <= lo:
        return segment
    return replace(
        segment, q_start=round(lo, 3), q_end=round(hi, 3), r_start=round(lo + offset, 3), r_end=round(hi + offset, 3)
    )


def _over_unusable(
    starts: np.ndarray, stops: np.ndarray, o_starts: np.ndarray, o_stops: np.ndarray, o_usable: np.ndarray
) -> np.ndarray:
    """Which clips lie for half their length or more over one of the other side's unusable clips."""
    if o_usable.all():
        return np.zeros(len(starts), bool)
    bad_s, bad_e = o_starts[~o_usable], o_stops[~o_usable]
    overlap = np.minimum(stops[:, None], bad_e[None, :]) - np.maximum(starts[:, None], bad_s[None, :])
    return (overlap >= 0.5 * (stops - starts)[:, None] - _EPS).any(axis=1)


def place(
    segment: Segment,
    a: tuple[np.ndarray, np.ndarray, np.ndarray, float],
    b: tuple[np.ndarray, np.ndarray, np.ndarray, float],
    level: float,
    search_s: float,
    reach_s: float,
) -> Segment:
    """A segment between two stored videos (``a`` and ``b`` as for extend) placed beyond their
    clip grid: its offset refined (``refine``, a taking the query's part), then its extent taken
    from both sides' matched clips at that offset and grown (``extend``) by at most ``reach_s``.
    Only the clips within ``reach_s`` of the segment take part, so that a pair of long videos
    costs what its segment does. Similarity, clips matched and confidence stay as matched."""

    def near(side: tuple[np.ndarray, np.ndarray, np.ndarray, float], lo: float, hi: float):
        times, vectors, usable, end = side
        keep = (times[:, 1] >= lo - reach_s - _EPS) & (times[:, 0] <= hi + reach_s + _EPS)
        return times[keep], vectors[keep], usable[keep], end

    a = near(a, segment.q_start, segment.q_end)
    b = near(b, segment.r_start - search_s, segment.r_end + search_s)
    refined = refine(segment, a[0], a[1], b[0], b[1], b[3], search_s=search_s)
    return extend(segment, a, b, level, offset=refined.r_start - refined.q_start)


def without_repeats(segments: Sequence[Segment]) -> list[Segment]:
    """``segments`` (best first) less each whose footage lies mostly (half its length or more)
    within one kept before it, on both sides, where that one is at least as confident: the same
    footage at another alignment. A slowly changing scene matches its copy at several offsets a
    window or so apart (each clip like its neighbours: a block in explain's matrix, not one
    diagonal), and placing can move such a segment onto its copy's own. Footage shown twice is
    kept: its segments share one side only."""
    kept: list[Segment] = []
    for s in segments:
        if not any(_repeats(s, k) for k in kept):
            kept.append(s)
    return kept


def _repeats(s: Segment, k: Segment) -> bool:
    def mostly_within(s0: float, s1: float, k0: float, k1: float) -> bool:
        return min(s1, k1) - max(s0, k0) >= 0.5 * (s1 - s0) - _EPS

    return (
        mostly_within(s.q_start, s.q_end, k.q_start, k.q_end)
        and mostly_within(s.r_start, s.r_end, k.r_start, k.r_end)
        and (s.confidence or 0.0) <= (k.confidence or 0.0)
    )
