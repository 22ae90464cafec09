"""Search by example: a query video (or a time range of it, or an indexed video) → ranked videos.

The query is decoded and embedded with the index's own settings, but its windows start every
half hop so that a query cut anywhere lines up with the library's windows. Each query clip's
nearest clips are grouped by library video and aligned in time; a video ranks by its best
aligned segment.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace

import numpy as np

from vidsearch.errors import DecodeError, InvalidArgumentError, VideoNotFoundError
from vidsearch.media.readers import iter_clips, open_video
from vidsearch.media.windows import ClipPlan, plan_clips
from vidsearch.model.encoder import Encoder
from vidsearch.search.align import Match, Segment, align
from vidsearch.search.confidence import ConfidenceModel, evidence
from vidsearch.storage.catalog import STATUS_INDEXED
from vidsearch.storage.library import Library

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipHit:
    """A raw neighbour: one query clip and one library clip."""

    q_start: float
    q_end: float
    path: str
    r_start: float
    r_end: float
    similarity: float
    clip_id: int


@dataclass(frozen=True)
class VideoMatch:
    path: str
    video_id: int
    score: float
    segments: tuple[Segment, ...]


@dataclass
class SearchResult:
    query: str
    query_start: float
    query_end: float
    query_clips: int
    matches: list[VideoMatch] = field(default_factory=list)
    clip_hits: list[ClipHit] = field(default_factory=list)


@dataclass(frozen=True)
class QueryEmbedding:
    """Query clip times (N, 2) and unit vectors (N, D)."""

    times: np.ndarray
    vectors: np.ndarray


def embed_query(
    lib: Library,
    encoder: Encoder,
    path: str,
    start: float | None = None,
    end: float | None = None,
    batch_size: int = 8,
) -> QueryEmbedding:
    """Decode and embed a query file with the index's clip settings, windows every half hop."""
    m = lib.manifest
    pp = m.encoder.preprocessing
    with open_video(path, pp.frame_size()) as reader:
        times = reader.frame_times
        lo = 0.0 if start is None else float(start)
        hi = float(times[-1, 1]) if end is None else float(end)
        if lo < 0 or hi <= lo:
            raise InvalidArgumentError(f"query range must satisfy 0 <= start < end; got start={start}, end={end}")
        keep = np.nonzero((times[:, 0] >= lo - 1e-6) & (times[:, 0] < hi))[0]
        if len(keep) == 0:
            raise DecodeError(path, f"no frames between {lo:g}s and {hi:g}s (the video lasts {times[-1, 1]:.1f}s)")
        if end is None:
            hi = float(times[-1, 1])
        first = int(keep[0])
        sub = times[keep] - times[first, 0]
        sub[-1, 1] = min(sub[-1, 1], hi - times[first, 0])
        plans = plan_clips(sub, m.encoder.num_frames, m.clips.clip_seconds, m.clips.hop_seconds / 2)
        shift = float(times[first, 0])
        plans = [
            ClipPlan(p.position, p.start_s + shift, p.end_s + shift, tuple(i + first for i in p.frame_indices))
            for p in plans
        ]
        out_times, vectors, batch = [], [], []
        size = (reader.info.width, reader.info.height)
        for clip in iter_clips(reader, plans):
            batch.append(clip)
            if len(batch) == batch_size:
                vectors.append(encoder.embed([c.frames for c in batch], [size] * len(batch)))
                out_times += [(c.start_s, c.end_s) for c in batch]
                batch = []
        if batch:
            vectors.append(encoder.embed([c.frames for c in batch], [size] * len(batch)))
            out_times += [(c.start_s, c.end_s) for c in batch]
    return QueryEmbedding(np.asarray(out_times, dtype=np.float64).reshape(-1, 2), np.concatenate(vectors))


def _indexed_video_query(lib: Library, path_bytes: bytes) -> QueryEmbedding | None:
    with lib.catalog.read() as session:
        video = lib.catalog.video_by_path(session, path_bytes)
        if video is None or video.status != STATUS_INDEXED:
            return None
        times, vectors = lib.catalog.video_clips(session, video.id, lib.manifest.encoder.dim)
    return QueryEmbedding(times, vectors)


def read_queries(list_path: str | os.PathLike) -> list[str]:
    """The query paths listed in a file, one a line (blank lines and ``#`` comments skipped);
    a relative path is relative to the list's folder."""
    base = os.path.dirname(os.path.abspath(os.fsdecode(list_path)))
    try:
        with open(list_path, encoding="utf-8", errors="surrogateescape") as f:
            lines = [line.strip() for line in f]
    except OSError as exc:
        raise InvalidArgumentError(f"{os.fsdecode(list_path)}: cannot read the query list ({exc.strerror})") from exc
    return [os.path.join(base, line) for line in lines if line and not line.startswith("#")]


def search_video(
    lib: Library,
    encoder: Encoder | None,
    query: str | os.PathLike,
    start: float | None = None,
    end: float | None = None,
    k: int = 10,
    neighbors: int = 50,
    include_self: bool = False,
    min_confidence: float = 0.0,
) -> SearchResult:
    """Rank the library's videos by their best aligned segment against ``query``.

    ``query`` is a video file, or the path of an indexed video whose file is gone (its stored
    clips are used). ``encoder`` may be None only for the latter. Each segment carries its
    confidence (search/confidence.py); segments below ``min_confidence`` are left out, and
    videos left without one.
    """
    if not 0 <= min_confidence <= 1:
        raise InvalidArgumentError(f"min_confidence is in [0, 1]; got {min_confidence}")
    path = os.path.abspath(os.fsdecode(query))
    path_bytes = os.fsencode(path)
    if os.path.exists(path):
        if encoder is None:
            raise ValueError("an encoder is needed to embed a query file")
        lib.check_compatible(encoder.settings)
        q = embed_query(lib, encoder, path, start, end)
    else:
        stored = _indexed_video_query(lib, path_bytes)
        if stored is None:
            raise VideoNotFoundError(f"{path}: no such file, and no indexed video at that path")
        q = stored
        if start is not None or end is not None:
            lo, hi = start or 0.0, end if end is not None else np.inf
            keep = (q.times[:, 0] >= lo - 1e-6) & (q.times[:, 1] <= hi + 1e-6)
            if not keep.any():
                raise VideoNotFoundError(
                    f"{path}: its file is gone, and no stored clip lies wholly between {lo:g}s and {hi:g}s"
                )
            q = QueryEmbedding(q.times[keep], q.vectors[keep])
    result = SearchResult(
        query=path,
        query_start=float(q.times[0, 0]) if len(q.times) else 0.0,
        query_end=float(q.times[-1, 1]) if len(q.times) else 0.0,
        query_clips=len(q.times),
    )
    if not len(q.vectors):
        return result
    vi = lib.vectors()
    scores, ids = vi.search(q.vectors, neighbors)
    with lib.catalog.read() as session:
        info = lib.catalog.clip_info(session, ids[ids >= 0].tolist())
        vids = {v for v, _, _ in info.values()}
        paths = {v.id: v.path for v in lib.catalog.videos(session, ids=vids)}
    self_ids = {vid for vid, p in paths.items() if p == path_bytes} if not include_self else set()
    per_video: dict[int, list[Match]] = {}
    for qi in range(len(q.times)):
        qs, qe = q.times[qi]
        for sim, cid in zip(scores[qi], ids[qi]):
            if cid < 0 or int(cid) not in info:
                continue
            vid, rs, re_ = info[int(cid)]
            if vid in self_ids:
                continue
            per_video.setdefault(vid, []).append(Match(float(qs), float(qe), rs, re_, float(sim)))
            result.clip_hits.append(
                ClipHit(float(qs), float(qe), os.fsdecode(paths[vid]), rs, re_, float(sim), int(cid))
            )
    hop = lib.manifest.clips.hop_seconds
    model = ConfidenceModel.of(lib)
    for vid, matches in per_video.items():
        segments = align(matches, offset_tolerance=hop, max_gap=lib.manifest.clips.clip_seconds)
        scored = [replace(s, confidence=model.confidence(evidence(s, matches, hop))) for s in segments]
        kept = [s for s in scored if s.confidence is not None and s.confidence >= min_confidence]
        if kept:
            result.matches.append(VideoMatch(os.fsdecode(paths[vid]), vid, kept[0].score, tuple(kept)))
    result.matches.sort(key=lambda m: m.score, reverse=True)
    result.matches = result.matches[:k]
    result.clip_hits.sort(key=lambda h: h.similarity, reverse=True)
    return result
