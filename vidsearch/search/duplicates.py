"""Library-wide near-duplicate pairs and groups.

Every clip's neighbours above the clip-similarity threshold (FAISS range search, or k-NN where
the index type has no range search, in batches) give candidate video pairs; each pair is
aligned in time with the code that search uses; a pair is reported when its best aligned
segment is long enough and its mean similarity is above the threshold. Connected pairs form
groups (union-find). The cost grows with the number of clips and their close neighbours, not
with the number of video pairs.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from vidsearch.search.align import Match, Segment, align
from vidsearch.storage.catalog import STATUS_INDEXED, ClipRow, Video
from vidsearch.storage.library import Library

log = logging.getLogger(__name__)

#: Used when the index was never calibrated and no --threshold is given.
DEFAULT_THRESHOLD = 0.90
#: A video covered at least this much by the matched segments is "contained" in the other.
CONTAINED_SHARE = 0.8


@dataclass(frozen=True)
class DuplicatePair:
    """Two videos sharing footage. ``segments`` have a's times as query and b's as library."""

    a: str
    b: str
    a_duration: float
    b_duration: float
    score: float
    similarity: float
    segments: tuple[Segment, ...]
    a_covered: float
    b_covered: float

    @property
    def relation(self) -> str:
        """"same", "a in b", "b in a" or "overlap"."""
        a_in, b_in = self.a_covered >= CONTAINED_SHARE, self.b_covered >= CONTAINED_SHARE
        return "same" if a_in and b_in else "a in b" if a_in else "b in a" if b_in else "overlap"


@dataclass(frozen=True)
class DuplicateGroup:
    """Connected duplicate videos, largest (longest) first; the first is the likely original."""

    videos: tuple[tuple[str, float], ...]

    @property
    def original(self) -> str:
        return self.videos[0][0]


@dataclass
class DuplicateReport:
    threshold: float
    threshold_source: str
    min_seconds: float | None
    pairs: list[DuplicatePair] = field(default_factory=list)
    candidates: int = 0
    clip_matches: int = 0

    def groups(self) -> list[DuplicateGroup]:
        return group_pairs(self.pairs)


@dataclass
class ClipTable:
    """All indexed clips as arrays sorted by clip id: id → (video, start, end)."""

    ids: np.ndarray
    video: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def lookup(self, clip_ids: np.ndarray) -> np.ndarray:
        """Row positions of ``clip_ids`` (-1 for ids not in the table)."""
        pos = np.searchsorted(self.ids, clip_ids)
        pos = np.clip(pos, 0, max(len(self.ids) - 1, 0))
        ok = len(self.ids) > 0
        return np.where(ok & (self.ids[pos] == clip_ids), pos, -1) if ok else np.full(len(clip_ids), -1)


def load_clip_table(lib: Library, session) -> ClipTable:
    rows = session.execute(
        select(ClipRow.id, ClipRow.video_id, ClipRow.start_s, ClipRow.end_s).order_by(ClipRow.id)
    ).all()
    arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return ClipTable(arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2], arr[:, 3])


def resolve_threshold(lib: Library, threshold: float | None) -> tuple[float, str]:
    if threshold is not None:
        return float(threshold), "given"
    if lib.manifest.duplicate_threshold is not None:
        return float(lib.manifest.duplicate_threshold), "calibrated"
    return DEFAULT_THRESHOLD, "default"


def clip_pairs(lib: Library, table: ClipTable, threshold: float, batch: int = 4096, k: int = 64) -> dict[tuple[int, int], np.ndarray]:
    """Matches between clips of different videos above ``threshold``, keyed by (video a, video b), a < b.

    Each value is an (M, 3) array: row of a's clip, row of b's clip, similarity (each clip pair
    once, with its best similarity). Memory grows with the number of such matches, not with
    the number of video pairs.
    """
    vi = lib.vectors()
    dim = lib.manifest.encoder.dim
    parts = []
    with lib.catalog.read() as session:
        for ids, vecs in lib.catalog.iter_embeddings(session, dim, chunk=batch):
            rows = table.lookup(ids)
            try:
                lims, sims, nbrs = vi.range_search(vecs, threshold)
                owner = np.repeat(np.arange(len(ids)), np.diff(lims))
            except RuntimeError:  # HNSW and some others have no range search: k-NN, then filter
                d, i = vi.search(vecs, k)
                keep = (i >= 0) & (d >= threshold)
                owner = np.nonzero(keep)[0]
                sims, nbrs = d[keep], i[keep]
            qrows, nrows = rows[owner], table.lookup(nbrs)
            ok = (nrows >= 0) & (qrows >= 0)
            qrows, nrows, sims = qrows[ok], nrows[ok], sims[ok]
            ok = table.video[qrows] != table.video[nrows]
            qrows, nrows, sims = qrows[ok], nrows[ok], sims[ok]
            swap = table.video[qrows] > table.video[nrows]  # orient every pair as (lower video id, higher)
            parts.append(np.stack([np.where(swap, nrows, qrows), np.where(swap, qrows, nrows), sims], axis=1))
    if not parts:
        return {}
    m = np.concatenate(parts)
    if not len(m):
        return {}
    ra, rb = m[:, 0].astype(np.int64), m[:, 1].astype(np.int64)
    order = np.lexsort((-m[:, 2], rb, ra))  # best similarity first within each clip pair
    m, ra, rb = m[order], ra[order], rb[order]
    first = np.ones(len(m), dtype=bool)
    first[1:] = (ra[1:] != ra[:-1]) | (rb[1:] != rb[:-1])
    m, ra, rb = m[first], ra[first], rb[first]
    va, vb = table.video[ra], table.video[rb]
    order = np.lexsort((vb, va))
    m, va, vb = m[order], va[order], vb[order]
    cuts = np.nonzero((va[1:] != va[:-1]) | (vb[1:] != vb[:-1]))[0] + 1
    return {
        (int(va[g[0]]), int(vb[g[0]])): m[g[0] : g[-1] + 1]
        for g in np.split(np.arange(len(m)), cuts)
    }


def _covered(intervals: list[tuple[float, float]]) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def find_duplicates(
    lib: Library,
    threshold: float | None = None,
    min_seconds: float | None = None,
    batch: int = 4096,
) -> DuplicateReport:
    """Near-duplicate video pairs of the whole library, best first.

    ``min_seconds`` defaults, per pair, to the smaller of two hops and 80% of the shorter video.
    """
    thr, source = resolve_threshold(lib, threshold)
    hop, clip_s = lib.manifest.clips.hop_seconds, lib.manifest.clips.clip_seconds
    with lib.catalog.read() as session:
        table = load_clip_table(lib, session)
        videos = {
            vid: (os.fsdecode(path), dur or 0.0)
            for vid, path, dur in session.execute(
                select(Video.id, Video.path, Video.duration_s).where(Video.status == STATUS_INDEXED)
            )
        }
    candidates = clip_pairs(lib, table, thr, batch)
    report = DuplicateReport(thr, source, min_seconds, candidates=len(candidates),
                             clip_matches=sum(len(v) for v in candidates.values()))
    for (va, vb), matches in candidates.items():
        if va not in videos or vb not in videos:
            continue
        (pa, da), (pb, db) = videos[va], videos[vb]
        need = min_seconds if min_seconds is not None else min(2 * hop, 0.8 * min(da, db))
        ra, rb = matches[:, 0].astype(np.int64), matches[:, 1].astype(np.int64)
        ms = [
            Match(float(qs), float(qe), float(rs), float(re_), float(sim))
            for qs, qe, rs, re_, sim in zip(table.start[ra], table.end[ra], table.start[rb], table.end[rb], matches[:, 2])
        ]
        segments = [
            s for s in align(ms, offset_tolerance=hop, max_gap=clip_s)
            if s.similarity >= thr and min(s.q_end - s.q_start, s.r_end - s.r_start) >= need - 1e-6
        ]
        if not segments:
            continue
        best = segments[0]
        report.pairs.append(DuplicatePair(
            a=pa, b=pb, a_duration=da, b_duration=db, score=best.score, similarity=best.similarity,
            segments=tuple(segments),
            a_covered=min(1.0, _covered([(s.q_start, s.q_end) for s in segments]) / da) if da else 0.0,
            b_covered=min(1.0, _covered([(s.r_start, s.r_end) for s in segments]) / db) if db else 0.0,
        ))
    report.pairs.sort(key=lambda p: p.score, reverse=True)
    return report


def group_pairs(pairs: list[DuplicatePair]) -> list[DuplicateGroup]:
    """Union-find over pairs; each group longest video first (the likely original)."""
    parent: dict[str, str] = {}
    duration: dict[str, float] = {}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        for v, d in ((p.a, p.a_duration), (p.b, p.b_duration)):
            parent.setdefault(v, v)
            duration[v] = d
        ra, rb = find(p.a), find(p.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[str]] = defaultdict(list)
    for v in parent:
        members[find(v)].append(v)
    groups = [
        DuplicateGroup(tuple(sorted(((v, duration[v]) for v in vs), key=lambda x: (-x[1], x[0]))))
        for vs in members.values()
    ]
    groups.sort(key=lambda g: (-len(g.videos), g.original))
    return groups
