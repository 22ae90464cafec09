"""Search by example: a query video (or a time range of it, or an indexed video) → ranked videos.

The query is decoded and embedded with the index's own settings, but its windows start every
half hop so that a query cut anywhere lines up with the library's windows. Each query clip's
nearest clips are grouped by library video and aligned in time; a video ranks by its best
aligned segment.

Blank clips (media.blank), the query's or the library's, are no evidence and are left out.
Matches with clips that the last ``dupes`` or ``common`` pass found common (an intro in many
videos) are aligned apart from the others: a video whose best segment is common footage is a
common match; it ranks after every other match and says in how many videos that footage appears.

The reported videos' segments are then refined (align.refine) from the clip
vectors already at hand: their offsets placed between the library's clip times, their ends
where the query's windows end or the library video does.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace

import numpy as np

from vidsearch.errors import InvalidArgumentError, VideoNotFoundError
from vidsearch.media.blank import is_blank, pixel_std
from vidsearch.media.readers import iter_clips, open_video
from vidsearch.media.windows import ClipPlan, plan_clips
from vidsearch.model.encoder import Encoder
from vidsearch.search.align import Match, Segment, align, refine, without_repeats
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
    """A library video and its aligned segments. ``common_segments`` align the matches with
    common footage, which appears in up to ``appears_in`` videos; ``common``: that footage is the
    best the video offers (its score is then that footage's)."""

    path: str
    video_id: int
    score: float
    segments: tuple[Segment, ...]
    common_segments: tuple[Segment, ...] = ()
    appears_in: int = 0
    common: bool = False


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
    """Query clip times (N, 2), unit vectors (N, D) and pixel spreads (N,) (media.blank; NaN: not measured)."""

    times: np.ndarray
    vectors: np.ndarray
    pixel_std: np.ndarray


def embed_query(
    lib: Library,
    encoder: Encoder,
    path: str,
    start: float | None = None,
    end: float | None = None,
    batch_size: int = 8,
) -> QueryEmbedding:
    """Decode and embed a query file with the index's clip settings, windows every half hop.

    A still image is a static clip: its one frame repeated over one window.
    """
    m = lib.manifest
    pp = m.encoder.preprocessing
    with open_video(path, pp.frame_size(), still_seconds=m.clips.clip_seconds) as reader:
        times = reader.frame_times
        lo = 0.0 if start is None else float(start)
        hi = float(times[-1, 1]) if end is None else float(end)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or (end is not None and hi <= lo):
            raise InvalidArgumentError(f"query range must satisfy 0 <= start < end; got start={start}, end={end}")
        keep = np.nonzero((times[:, 0] >= lo - 1e-6) & (times[:, 0] < hi))[0]
        if len(keep) == 0:  # the range lies past the video's end: a wrong argument, not a bad file
            span = f"from {lo:g}s on" if end is None else f"between {lo:g}s and {hi:g}s"
            raise InvalidArgumentError(f"{path}: no frames {span}; the video lasts {times[-1, 1]:.1f}s")
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
        out_times, vectors, spreads, batch = [], [], [], []
        size = (reader.info.width, reader.info.height)
        for clip in iter_clips(reader, plans):
            spreads.append(pixel_std(clip.frames))
            batch.append(clip)
            if len(batch) == batch_size:
                vectors.append(encoder.embed([c.frames for c in batch], [size] * len(batch)))
                out_times += [(c.start_s, c.end_s) for c in batch]
                batch = []
        if batch:
            vectors.append(encoder.embed([c.frames for c in batch], [size] * len(batch)))
            out_times += [(c.start_s, c.end_s) for c in batch]
    return QueryEmbedding(
        np.asarray(out_times, dtype=np.float64).reshape(-1, 2), np.concatenate(vectors), np.asarray(spreads)
    )


def _indexed_video_query(lib: Library, path_bytes: bytes) -> QueryEmbedding | None:
    with lib.catalog.read() as session:
        video = lib.catalog.video_by_path(session, path_bytes)
        if video is None or video.status != STATUS_INDEXED:
            return None
        times, vectors = lib.catalog.video_clips(session, video.id, lib.manifest.encoder.dim)
        spreads = lib.catalog.video_pixel_std(session, video.id)
    return QueryEmbedding(times, vectors, spreads)


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
    keep_common: bool = False,
    min_confidence: float = 0.0,
    refine_segments: bool = True,
) -> SearchResult:
    """Rank the library's videos by their best aligned segment against ``query``.

    ``query`` is a video file, or the path of an indexed video whose file is gone (its stored
    clips are used). ``encoder`` may be None only for the latter. ``keep_common`` counts
    common footage like any other (blank clips are never counted). Each segment, ordinary or
    common, carries its confidence (search/confidence.py); segments below ``min_confidence``
    are left out, and videos left without one. With ``refine_segments`` the
    reported segments' times are refined beyond the library's clip grid (align.refine); without,
    they are the matched clips' own times.
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
                span = f"from {lo:g}s on" if end is None else f"between {lo:g}s and {hi:g}s"
                raise InvalidArgumentError(f"{path}: its file is gone, and no stored clip lies wholly {span}")
            q = QueryEmbedding(q.times[keep], q.vectors[keep], q.pixel_std[keep])
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
        marks = lib.catalog.clip_marks(session, list(info))
        vids = {v for v, _, _ in info.values()}
        found = {v.id: v for v in lib.catalog.videos(session, ids=vids)}
        paths = {vid: v.path for vid, v in found.items()}
        if vids - paths.keys():
            lib.skip_orphans(session)
    unknown = len(np.setdiff1d(ids[ids >= 0], np.fromiter(info, dtype=np.int64, count=len(info))))
    if unknown:
        log.warning(
            "%s: %d clips the vectors index found are not in the catalog (removed meanwhile, or the index is "
            "damaged: `vidsearch verify` checks it); skipped",
            lib.root,
            unknown,
        )
    self_ids = {vid for vid, p in paths.items() if p == path_bytes} if not include_self else set()
    per_video: dict[int, list[Match]] = {}
    per_video_common: dict[int, list[Match]] = {}
    appears_in: dict[int, int] = {}
    blank_query = is_blank(q.pixel_std)
    for qi in range(len(q.times)):
        if blank_query[qi]:
            continue
        qs, qe = q.times[qi]
        for sim, cid in zip(scores[qi], ids[qi]):
            if cid < 0 or int(cid) not in info:
                continue
            vid, rs, re_ = info[int(cid)]
            spread, videos = marks[int(cid)]
            if vid in self_ids or vid not in paths or is_blank(spread):
                continue
            match = Match(float(qs), float(qe), rs, re_, float(sim))
            if videos and not keep_common:
                per_video_common.setdefault(vid, []).append(match)
                appears_in[vid] = max(appears_in.get(vid, 0), videos)
            else:
                per_video.setdefault(vid, []).append(match)
            result.clip_hits.append(
                ClipHit(float(qs), float(qe), os.fsdecode(paths[vid]), rs, re_, float(sim), int(cid))
            )
    hop, clip_s = lib.manifest.clips.hop_seconds, lib.manifest.clips.clip_seconds
    model = ConfidenceModel.of(lib)

    def confident(matches: list[Match]) -> list[Segment]:
        scored = [
            replace(s, confidence=model.confidence(evidence(s, matches, hop)))
            for s in align(matches, offset_tolerance=hop, max_gap=clip_s)
        ]
        return [s for s in scored if s.confidence is not None and s.confidence >= min_confidence]

    for vid in per_video.keys() | per_video_common.keys():
        segments = confident(per_video.get(vid, []))
        shared = confident(per_video_common.get(vid, []))
        ordinary = segments[0].score if segments else -np.inf
        common = bool(shared) and shared[0].score > ordinary
        if segments or shared:
            result.matches.append(
                VideoMatch(
                    os.fsdecode(paths[vid]),
                    vid,
                    shared[0].score if common else ordinary,
                    tuple(segments),
                    tuple(shared),
                    appears_in.get(vid, 0),
                    common,
                )
            )
    result.matches.sort(key=lambda m: (m.common, -m.score))
    result.matches = result.matches[:k]
    if refine_segments:
        result.matches = _refined(lib, q, result.matches, {vid: v.duration_s for vid, v in found.items()})
    result.matches = [  # the same footage at another alignment is listed once (its best)
        replace(
            m, segments=tuple(without_repeats(m.segments)), common_segments=tuple(without_repeats(m.common_segments))
        )
        for m in result.matches
    ]
    result.clip_hits.sort(key=lambda h: h.similarity, reverse=True)
    return result


def _refined(
    lib: Library, q: QueryEmbedding, matches: list[VideoMatch], durations: dict[int, float | None]
) -> list[VideoMatch]:
    """``matches`` with their segments' times refined against their videos' stored clips.

    Ranks and scores stay as matched: refinement says where footage lies, not whether it matches.
    """
    dim, hop = lib.manifest.encoder.dim, lib.manifest.clips.hop_seconds
    out = []
    with lib.catalog.read() as session:
        for m in matches:
            clips = lib.catalog.clips_of(session, m.video_id)
            # the clips in and around the segments, by id as embeddings_by_ids returns them, then by time
            near = 2 * hop
            wanted = sorted(c for c in clips if any(s.r_start - near <= c[1] <= s.r_end + near for s in m.segments))
            if not wanted:  # removed since the search read it
                out.append(m)
                continue
            _, vectors = lib.catalog.embeddings_by_ids(session, [c[0] for c in wanted], dim)
            times = np.array([(s, e) for _, s, e in wanted], dtype=np.float64).reshape(-1, 2)
            order = np.argsort(times[:, 0], kind="stable")
            times, vectors = times[order], vectors[order]
            end = durations.get(m.video_id) or float(clips[-1][2])
            segments = tuple(
                refine(s, q.times, q.vectors, times, vectors, end, search_s=0.75 * hop) for s in m.segments
            )
            out.append(replace(m, segments=segments))
    return out
