"""Explain a match: the clip-by-clip similarity of two videos and the segments aligned in it.

Video a is an indexed video (its stored clips, as ``dupes`` compares them) or a video file
(embedded as ``search`` embeds a query: windows every half hop); video b is an indexed video.
Every pair of clips at or above the clip-similarity threshold is a match, and the matches are
aligned exactly as ``dupes`` aligns a pair; the segments are then placed beyond the clip grid as
``dupes`` places a pair's (a indexed) or ``search`` a query's (a file). In the matrix a copy is
a diagonal line, a static scene a block.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from vidsearch.errors import VideoNotFoundError
from vidsearch.media.blank import is_blank
from vidsearch.model.encoder import Encoder
from vidsearch.search.align import Match, Segment, align, place, refine, without_repeats
from vidsearch.search.confidence import ConfidenceModel, evidence
from vidsearch.search.duplicates import resolve_threshold
from vidsearch.search.query import QueryEmbedding, embed_query
from vidsearch.storage.catalog import STATUS_INDEXED
from vidsearch.storage.library import Library


@dataclass(frozen=True)
class ClipMatch:
    """One of a segment's clips: a's clip, the b clip it matches at the segment's offset, their similarity."""

    a_start: float
    a_end: float
    b_start: float
    b_end: float
    similarity: float


@dataclass(frozen=True)
class ExplainedSegment:
    segment: Segment
    clips: tuple[ClipMatch, ...]


@dataclass(frozen=True)
class Explanation:
    """``similarity[i, j]`` is a's clip i (times ``a_times[i]``) against b's clip j (``b_times[j]``)."""

    a: str
    b: str
    a_stored: bool
    a_times: np.ndarray
    b_times: np.ndarray
    similarity: np.ndarray
    threshold: float
    threshold_source: str
    segments: tuple[ExplainedSegment, ...]

    def best_clip(self) -> tuple[int, int] | None:
        """(i, j) of the most similar pair of clips; None when a video has no clips."""
        if not self.similarity.size:
            return None
        i, j = np.unravel_index(int(np.argmax(self.similarity)), self.similarity.shape)
        return int(i), int(j)


def _stored(lib: Library, path: str) -> QueryEmbedding | None:
    with lib.catalog.read() as session:
        video = lib.catalog.video_by_path(session, os.fsencode(path))
        if video is None or video.status != STATUS_INDEXED:
            return None
        times, vectors = lib.catalog.video_clips(session, video.id, lib.manifest.encoder.dim)
        spreads = lib.catalog.video_pixel_std(session, video.id)
    return QueryEmbedding(times, vectors, spreads)


def needs_encoder(lib: Library, a: str | os.PathLike) -> bool:
    """Whether explaining ``a`` embeds a file (it is not an indexed video)."""
    return _stored(lib, os.path.abspath(os.fsdecode(a))) is None


def explain_pair(
    lib: Library,
    encoder: Encoder | None,
    a: str | os.PathLike,
    b: str | os.PathLike,
    threshold: float | None = None,
) -> Explanation:
    """The similarity matrix of ``a`` against the indexed video ``b`` and their aligned segments.

    ``encoder`` may be None when ``a`` is an indexed video.
    """
    path_a, path_b = (os.path.abspath(os.fsdecode(p)) for p in (a, b))
    ref = _stored(lib, path_b)
    if ref is None:
        raise VideoNotFoundError(f"{path_b}: no indexed video at that path (b must be indexed)")
    query = _stored(lib, path_a)
    stored = query is not None
    if query is None:
        if not os.path.exists(path_a):
            raise VideoNotFoundError(f"{path_a}: no such file, and no indexed video at that path")
        if encoder is None:
            raise ValueError("an encoder is needed to embed a video that is not indexed")
        lib.check_compatible(encoder.settings)
        query = embed_query(lib, encoder, path_a)
    thr, source = resolve_threshold(lib, threshold)
    sim = query.vectors @ ref.vectors.T
    matches = []
    for i, j in zip(*np.nonzero(sim >= thr)):
        (qs, qe), (rs, re_) = query.times[i], ref.times[j]
        matches.append(Match(float(qs), float(qe), float(rs), float(re_), float(sim[i, j])))
    hop, clip_s = lib.manifest.clips.hop_seconds, lib.manifest.clips.clip_seconds
    model = ConfidenceModel.of(lib, threshold)
    segments = [
        replace(s, confidence=model.confidence(evidence(s, matches, hop)))
        for s in align(matches, offset_tolerance=hop, max_gap=clip_s)
        if s.similarity >= thr
    ]
    # placed beyond the clip grid as dupes places a pair's (a stored) or search a query's (a file)
    b_end = float(ref.times[-1, 1]) if len(ref.times) else 0.0
    if stored and len(query.times):
        a_side = (query.times, query.vectors, ~is_blank(query.pixel_std), float(query.times[-1, 1]))
        b_side = (ref.times, ref.vectors, ~is_blank(ref.pixel_std), b_end)
        segments = [place(s, a_side, b_side, thr, search_s=0.75 * hop, reach_s=3 * hop) for s in segments]
    else:
        segments = [refine(s, query.times, query.vectors, ref.times, ref.vectors, b_end, 0.75 * hop) for s in segments]
    segments = without_repeats(segments)
    return Explanation(
        a=path_a,
        b=path_b,
        a_stored=stored,
        a_times=query.times,
        b_times=ref.times,
        similarity=sim,
        threshold=thr,
        threshold_source=source,
        segments=tuple(ExplainedSegment(s, _segment_clips(s, query.times, ref.times, sim, hop)) for s in segments),
    )


def _segment_clips(
    s: Segment, a_times: np.ndarray, b_times: np.ndarray, sim: np.ndarray, hop: float
) -> tuple[ClipMatch, ...]:
    """For each a clip inside the segment, the most similar b clip inside it at the segment's offset.

    A clip is inside when its middle is, or, where the segment is shorter than a clip (placed
    within one: a video shorter than a window), when it holds the segment's middle.
    """
    a_mid, b_mid = a_times.mean(axis=1), b_times.mean(axis=1)
    offset = s.r_start - s.q_start
    a_in, b_in = _inside(a_times, s.q_start, s.q_end), _inside(b_times, s.r_start, s.r_end)
    out = []
    for i in np.nonzero(a_in)[0]:
        near = b_in & (np.abs(b_mid - a_mid[i] - offset) <= hop + 1e-6)
        if not near.any():
            continue
        j = int(np.flatnonzero(near)[np.argmax(sim[i, near])])
        (a0, a1), (b0, b1) = a_times[i], b_times[j]
        out.append(ClipMatch(float(a0), float(a1), float(b0), float(b1), float(sim[i, j])))
    return tuple(out)


def _inside(times: np.ndarray, start: float, end: float) -> np.ndarray:
    mid, middle = times.mean(axis=1), (start + end) / 2
    return ((mid >= start) & (mid <= end)) | ((times[:, 0] <= middle) & (times[:, 1] >= middle))
