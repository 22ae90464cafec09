"""Library-wide near-duplicate pairs and groups.

Every clip's neighbours above the clip-similarity threshold give candidate video pairs: all
pairs of clips while the library is small, then pairs within overlapping k-means cells (FAISS),
in blocks so memory stays bounded; each pair is
aligned in time with the code that search uses; a pair is reported when its best aligned
segment is long enough and its mean similarity is above the threshold. Connected pairs form
groups (union-find). The cost grows with the number of clips and their close neighbours, not
with the number of video pairs.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from vidsearch.search.align import Match, Segment, align
from vidsearch.search.confidence import ConfidenceModel, evidence
from vidsearch.storage.catalog import STATUS_INDEXED, ClipTable
from vidsearch.storage.decisions import HIDDEN_VERDICTS, decided_pairs, pair_key
from vidsearch.storage.faiss_spec import cells_for
from vidsearch.storage.library import Library

log = logging.getLogger(__name__)

#: Used when the index was never calibrated and no --threshold is given.
DEFAULT_THRESHOLD = 0.90
#: A video covered at least this much by the matched segments is "contained" in the other.
CONTAINED_SHARE = 0.8
#: Up to this many clips, candidates come from comparing every clip with every other (exact).
EXACT_CANDIDATES_LIMIT = 20_000


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
    #: the user's verdict on the pair (``vidsearch decide``), if any
    decision: str | None = None

    @property
    def confidence(self) -> float:
        """The best of its segments' confidences (search/confidence.py)."""
        return max((s.confidence or 0.0) for s in self.segments)

    @property
    def relation(self) -> str:
        """ "same", "a in b", "b in a" or "overlap"."""
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
    #: pairs left out because the user judged them not_a_match or keep_both
    hidden: int = 0

    def groups(self) -> list[DuplicateGroup]:
        return group_pairs(self.pairs)


def resolve_threshold(lib: Library, threshold: float | None) -> tuple[float, str]:
    if threshold is not None:
        return float(threshold), "given"
    if lib.manifest.duplicate_threshold is not None:
        return float(lib.manifest.duplicate_threshold), "calibrated"
    return DEFAULT_THRESHOLD, "default"


def _partitions(vectors: np.ndarray, dim: int) -> list[np.ndarray]:
    """Row groups to compare within: one group (exact) while small, else overlapping k-means cells.

    Each clip joins the cells of its two nearest centroids, so two clips similar enough to be
    near-duplicates almost always share a cell; comparing only within cells makes the cost
    about n·√n instead of n².
    """
    import faiss

    n = len(vectors)
    if n <= EXACT_CANDIDATES_LIMIT:
        return [np.arange(n)]
    nlist = cells_for(n)
    rng = np.random.default_rng(0)
    sample = vectors[np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))].astype(np.float32)
    km = faiss.Kmeans(dim, nlist, niter=10, spherical=True, seed=1)
    km.train(sample)
    cells = np.empty((n, 2), dtype=np.int64)
    for i in range(0, n, 65536):
        _, cells[i : i + 65536] = km.index.search(vectors[i : i + 65536].astype(np.float32), 2)
    rows = np.repeat(np.arange(n), 2)
    flat = cells.ravel()
    order = np.argsort(flat, kind="stable")
    cuts = np.nonzero(np.diff(flat[order]))[0] + 1
    log.info("comparing %d clips within %d overlapping cells", n, nlist)
    return np.split(rows[order], cuts)


def clip_pairs(
    lib: Library, session, table: ClipTable, threshold: float, block: int = 2048
) -> dict[tuple[int, int], np.ndarray]:
    """Matches between clips of different videos above ``threshold``, keyed by (video a, video b), a < b.

    Each value is an (M, 3) array: row of a's clip, row of b's clip, similarity (each clip pair
    once, with its best similarity). Similarities are computed in blocks (matrix products), so
    memory stays bounded by the block size and the number of matches.
    """
    dim = lib.manifest.encoder.dim
    vectors = np.empty((len(table.ids), dim), dtype=np.float16)  # float16: half the memory
    for ids, vecs in lib.catalog.iter_embeddings(session, dim):  # the snapshot ``table`` was read in
        vectors[table.lookup(ids)] = vecs
    parts = []
    for members in _partitions(vectors, dim):
        x = vectors[members].astype(np.float32)
        vids = table.video[members]
        rows = max(16, min(block, 50_000_000 // len(members)))  # a similarity block stays under ~200 MB
        for i in range(0, len(members), rows):
            s = x[i : i + rows] @ x.T
            qi, nj = np.nonzero(s >= threshold)
            keep = (nj > qi + i) & (vids[qi + i] != vids[nj])  # each unordered pair once, across videos
            qi, nj = qi[keep], nj[keep]
            a, b = members[qi + i], members[nj]
            swap = table.video[a] > table.video[b]  # orient every pair as (lower video id, higher)
            parts.append(np.stack([np.where(swap, b, a), np.where(swap, a, b), s[qi, nj]], axis=1))
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
    return {(int(va[g[0]]), int(vb[g[0]])): m[g[0] : g[-1] + 1] for g in np.split(np.arange(len(m)), cuts)}


def _covered(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of the intervals."""
    total, cur_s, cur_e = 0.0, 0.0, -np.inf
    for s, e in sorted(intervals):
        if s > cur_e:
            total += max(cur_e - cur_s, 0.0)
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + max(cur_e - cur_s, 0.0)


def find_duplicates(
    lib: Library,
    threshold: float | None = None,
    min_seconds: float | None = None,
    batch: int = 4096,
    include_decided: bool = False,
) -> DuplicateReport:
    """Near-duplicate video pairs of the whole library, best first.

    ``min_seconds`` defaults, per pair, to the smaller of two hops and 80% of the shorter video.
    Pairs the user judged ``not_a_match`` or ``keep_both`` are left out (and counted in
    ``hidden``) unless ``include_decided``.
    """
    thr, source = resolve_threshold(lib, threshold)
    model = ConfidenceModel.of(lib, threshold)
    hop, clip_s = lib.manifest.clips.hop_seconds, lib.manifest.clips.clip_seconds
    with lib.catalog.read() as session:  # one snapshot, even while an index job writes
        table = lib.catalog.clip_table(session)
        indexed = lib.catalog.videos(session, STATUS_INDEXED)
        videos = {v.id: (v.display_path, v.duration_s or 0.0) for v in indexed}
        fingerprints = {v.id: v.fingerprint for v in indexed}
        decided = decided_pairs(lib, session)
        candidates = clip_pairs(lib, session, table, thr, batch)
    report = DuplicateReport(
        thr, source, min_seconds, candidates=len(candidates), clip_matches=sum(len(v) for v in candidates.values())
    )
    for (va, vb), matches in candidates.items():
        if va not in videos or vb not in videos:
            continue
        (pa, da), (pb, db) = videos[va], videos[vb]
        need = min_seconds if min_seconds is not None else min(2 * hop, 0.8 * min(da, db))
        ra, rb = matches[:, 0].astype(np.int64), matches[:, 1].astype(np.int64)
        ms = [
            Match(float(qs), float(qe), float(rs), float(re_), float(sim))
            for qs, qe, rs, re_, sim in zip(
                table.start[ra], table.end[ra], table.start[rb], table.end[rb], matches[:, 2]
            )
        ]
        segments = [
            replace(s, confidence=model.confidence(evidence(s, ms, hop)))
            for s in align(ms, offset_tolerance=hop, max_gap=clip_s)
            if s.similarity >= thr and min(s.q_end - s.q_start, s.r_end - s.r_start) >= need - 1e-6
        ]
        if not segments:
            continue
        decision = decided.get(pair_key(fingerprints[va], fingerprints[vb]))
        if decision in HIDDEN_VERDICTS and not include_decided:
            report.hidden += 1
            continue
        best = segments[0]
        report.pairs.append(
            DuplicatePair(
                a=pa,
                b=pb,
                a_duration=da,
                b_duration=db,
                score=best.score,
                similarity=best.similarity,
                segments=tuple(segments),
                a_covered=min(1.0, _covered([(s.q_start, s.q_end) for s in segments]) / da) if da else 0.0,
                b_covered=min(1.0, _covered([(s.r_start, s.r_end) for s in segments]) / db) if db else 0.0,
                decision=decision,
            )
        )
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
