"""Library-wide near-duplicate pairs and groups.

Every clip's neighbours above the clip-similarity threshold give candidate video pairs: all
pairs of clips while the library is small, then pairs within overlapping k-means cells (FAISS),
in blocks so memory stays bounded; each pair is
aligned in time with the code that search uses; a pair is reported when its best aligned
segment is long enough and its mean similarity is above the threshold. Connected pairs form
groups (union-find). The cost grows with the number of clips and their close neighbours, not
with the number of video pairs.

Blank clips (media.blank) take no part: a black or flat frame matches every other one. Common
footage (search.common) is found in the same pass, from the same clip matches, and stored in the
catalog for search: a pair whose only shared footage is common is not reported, and the common
parts of a reported pair are listed apart from its segments.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from vidsearch.errors import CorruptIndexError, IndexLockedError, StorageError
from vidsearch.media.blank import is_blank
from vidsearch.search.align import Match, Segment, align, covered_seconds, place, without_repeats
from vidsearch.search.common import CommonSegment, common_segments, mark_common, spreads, suspects, touched
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
#: Rows of vectors read from the catalog at a time while comparing within cells: float16 and a
#: float32 copy while decoded, ~1.5 GB for 1024-d clips, whatever the size of the library
#: (holding every clip's vector instead took 20 GB at 10M clips).
CELL_BATCH_ROWS = 250_000
#: Default ``--common-min-videos``: footage is common when it appears in more than this many
#: mutually unrelated videos. Copies of one video count once however many there are, so this
#: only limits how often the same footage may be reused in otherwise different videos and still
#: count as evidence: a clip quoted in two to five videos still makes them duplicates, while
#: a series' intro or a channel's sting, in dozens, does not. Lower values start to hide genuine
#: reuse; higher ones let the intros of short series through.
COMMON_MIN_VIDEOS = 5


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
    #: aligned stretches of common footage the two also share: not evidence, listed apart
    common_segments: tuple[Segment, ...] = ()
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
    #: footage in more than this many unrelated videos was not evidence; None: kept (--keep-common)
    common_min_videos: int | None = None
    #: clips found common, and the seconds the common-footage pass took
    common_clips: int = 0
    common_seconds: float = 0.0
    #: pairs left out because the user judged them not_a_match or keep_both
    hidden: int = 0

    def groups(self) -> list[DuplicateGroup]:
        return group_pairs(self.pairs)


@dataclass
class CommonReport:
    """The library's common footage, largest first; ``stored``: whether search can now mark it."""

    threshold: float
    threshold_source: str
    min_videos: int
    segments: list[CommonSegment]
    stored: bool


def resolve_threshold(lib: Library, threshold: float | None) -> tuple[float, str]:
    if threshold is not None:
        return float(threshold), "given"
    if lib.manifest.duplicate_threshold is not None:
        return float(lib.manifest.duplicate_threshold), "calibrated"
    return DEFAULT_THRESHOLD, "default"


def _partitions(lib: Library, session, table: ClipTable, dim: int) -> list[np.ndarray]:
    """Row groups of ``table`` to compare within: one group (exact) while small, else
    overlapping k-means cells.

    Each clip joins the cells of its two nearest centroids, so two clips similar enough to be
    near-duplicates almost always share a cell; comparing only within cells makes the cost
    about n·√n instead of n². The centroids are trained on a sample and the clips assigned
    reading the catalog in chunks, so no more than a chunk of vectors is in memory.
    """
    import faiss

    n = len(table.ids)
    if n <= EXACT_CANDIDATES_LIMIT:
        return [np.arange(n)]
    nlist = cells_for(n)
    _, sample = lib.catalog.sample_embeddings(session, 40 * nlist, dim)
    km = faiss.Kmeans(dim, nlist, niter=10, spherical=True, seed=1)
    km.train(sample)
    cells = np.empty((n, 2), dtype=np.int64)
    for ids, vecs in lib.catalog.iter_embeddings(session, dim):
        _, cells[table.lookup(ids)] = km.index.search(vecs, 2)
    rows = np.repeat(np.arange(n), 2)
    flat = cells.ravel()
    order = np.argsort(flat, kind="stable")
    cuts = np.nonzero(np.diff(flat[order]))[0] + 1
    log.info("comparing %d clips within %d overlapping cells", n, nlist)
    return np.split(rows[order], cuts)


def _batches(
    lib: Library, session, table: ClipTable, dim: int, skip: np.ndarray | None = None
) -> Iterator[tuple[list[np.ndarray], np.ndarray, np.ndarray]]:
    """The cells (row groups of ``table``, rows where ``skip`` is true left out) a batch at a
    time, with the batch's rows (sorted) and their float16 vectors: about CELL_BATCH_ROWS rows of
    vectors in memory at once."""
    cells = [c[~skip[c]] if skip is not None else c for c in _partitions(lib, session, table, dim)]
    cells = [c for c in cells if len(c)]
    start = 0
    while start < len(cells):
        stop, size = start, 0
        while stop < len(cells) and (stop == start or size + len(cells[stop]) <= CELL_BATCH_ROWS):
            size += len(cells[stop])
            stop += 1
        rows = np.unique(np.concatenate(cells[start:stop]))
        _, vecs = lib.catalog.embeddings_by_ids(session, table.ids[rows].tolist(), dim)
        yield cells[start:stop], rows, vecs.astype(np.float16)  # float16: half the memory
        start = stop


def clip_pairs(
    lib: Library,
    session,
    table: ClipTable,
    threshold: float,
    block: int = 2048,
    skip: np.ndarray | None = None,
) -> dict[tuple[int, int], np.ndarray]:
    """Matches between clips of different videos above ``threshold``, keyed by (video a, video b), a < b.

    Each value is an (M, 3) array: row of a's clip, row of b's clip, similarity (each clip pair
    once, with its best similarity). Similarities are computed in blocks (matrix products), so
    memory stays bounded by the block size, the batch of cells and the number of matches. Rows
    where ``skip`` is true take no part.
    """
    if not len(table.ids):
        return {}
    dim = lib.manifest.encoder.dim
    parts = []
    for cells, batch_rows, vectors in _batches(lib, session, table, dim, skip):
        for members in cells:
            x = vectors[np.searchsorted(batch_rows, members)].astype(np.float32)
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


class _Snapshot:
    """One snapshot's clips and clip matches, and the alignment of a pair's matches into segments."""

    def __init__(self, lib: Library, threshold: float | None, min_seconds: float | None, batch: int):
        self.threshold, self.source = resolve_threshold(lib, threshold)
        self.model = ConfidenceModel.of(lib, threshold)
        self.min_seconds = min_seconds
        self.hop, self.clip_s = lib.manifest.clips.hop_seconds, lib.manifest.clips.clip_seconds
        with lib.catalog.read() as session:  # one snapshot, even while an index job writes
            self.table = lib.catalog.clip_table(session)
            indexed = lib.catalog.videos(session, STATUS_INDEXED)
            self.videos = {v.id: (v.display_path, v.duration_s or 0.0) for v in indexed}
            self.fingerprints = {v.id: v.fingerprint for v in indexed}
            lib.skip_orphans(session)
            #: the user's verdicts by pair_key (``vidsearch decide``)
            self.decided = decided_pairs(lib, session)
            blank = is_blank(self.table.pixel_std)
            self.candidates = clip_pairs(lib, session, self.table, self.threshold, batch, skip=blank)
        blank_spans: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for r in np.nonzero(blank)[0]:
            blank_spans[int(self.table.video[r])].append((float(self.table.start[r]), float(self.table.end[r])))
        #: seconds of each video that are not blank: what a pair's coverage is a share of
        self.footage = {v: max(d - covered_seconds(blank_spans.get(v, [])), 0.0) for v, (_, d) in self.videos.items()}
        self.longest_clip = float((self.table.end - self.table.start).max()) if len(self.table.ids) else 0.0
        #: a pair's segments from all its matches, kept by the common pass for the report
        self.cache: dict[tuple[int, int], list[Segment]] = {}
        #: the table's rows ordered by video, and their videos: a video's rows, found for refinement
        self.by_video: tuple[np.ndarray, np.ndarray] | None = None

    def pairs(self):
        """(video a, video b, matches) of the candidate pairs whose videos are both indexed."""
        for (va, vb), matches in self.candidates.items():
            if va in self.videos and vb in self.videos:
                yield va, vb, matches

    def aligned(self, matches: np.ndarray, need: float = 0.0) -> list[Segment]:
        """The segments these clip matches (rows of a, rows of b, similarity) align into that
        reach the threshold and last ``need`` seconds on both sides, each with its confidence."""
        t = self.table
        ra, rb = matches[:, 0].astype(np.int64), matches[:, 1].astype(np.int64)
        ms = [
            Match(float(qs), float(qe), float(rs), float(re_), float(sim))
            for qs, qe, rs, re_, sim in zip(t.start[ra], t.end[ra], t.start[rb], t.end[rb], matches[:, 2])
        ]
        return [
            replace(s, confidence=self.model.confidence(evidence(s, ms, self.hop)))
            for s in align(ms, offset_tolerance=self.hop, max_gap=self.clip_s)
            if s.similarity >= self.threshold and min(s.q_end - s.q_start, s.r_end - s.r_start) >= need - 1e-6
        ]

    def segments(self, va: int, vb: int, matches: np.ndarray) -> list[Segment]:
        """The segments that make a duplicate: long enough, similar enough."""
        if self.min_seconds is not None:
            need = self.min_seconds
        else:
            need = min(2 * self.hop, 0.8 * min(self.videos[va][1], self.videos[vb][1]))
        return self.aligned(matches, need)

    def covered(self, va: int, vb: int, segments: list[Segment]) -> tuple[float, float]:
        """The shares of a's and b's footage (blank clips aside) that ``segments`` cover."""
        fa, fb = self.footage[va], self.footage[vb]
        a = min(1.0, covered_seconds([(s.q_start, s.q_end) for s in segments]) / fa) if fa else 0.0
        b = min(1.0, covered_seconds([(s.r_start, s.r_end) for s in segments]) / fb) if fb else 0.0
        return a, b

    def is_copy(self, va: int, vb: int, matches: np.ndarray) -> bool:
        """Whether these matches' segments cover most (CONTAINED_SHARE) of a's or b's footage."""
        share_a, share_b = CONTAINED_SHARE * self.footage[va], CONTAINED_SHARE * self.footage[vb]
        if len(matches) * self.longest_clip < min(share_a, share_b):  # cannot cover that much: most pairs stop here
            return False
        t = self.table
        ua, ub = np.unique(matches[:, 0].astype(np.int64)), np.unique(matches[:, 1].astype(np.int64))
        if (t.end[ua] - t.start[ua]).sum() < share_a and (t.end[ub] - t.start[ub]).sum() < share_b:
            return False
        return max(self.covered(va, vb, self.segments(va, vb, matches))) >= CONTAINED_SHARE

    def refined(
        self, lib: Library, va: int, vb: int, segments: list[Segment], no_evidence: np.ndarray
    ) -> list[Segment]:
        """``segments`` placed beyond the clip grid (align.place, at the threshold): the offset
        refined, a's stored clips taking the query's part, then the ends grown over the clips
        next to them that still match at that offset and are evidence (not a ``no_evidence`` row:
        blank or common). Only the clips around each segment are read. Similarity and
        confidence stay as matched."""
        search, reach = 0.75 * self.hop, 3 * self.hop
        a_end, b_end = self.videos[va][1], self.videos[vb][1]
        if not a_end or not b_end:  # no duration in the catalog: nothing to cut the segments to
            return segments
        out = []
        with lib.catalog.read() as session:
            for s in segments:
                a = self.clips_near(lib, session, va, s.q_start - reach, s.q_end + reach)
                b = self.clips_near(lib, session, vb, s.r_start - reach - search, s.r_end + reach + search)
                if not len(a[0]) or not len(b[0]):  # removed since the snapshot
                    out.append(s)
                    continue
                out.append(
                    place(
                        s,
                        (a[1], a[2], ~no_evidence[a[0]], a_end),
                        (b[1], b[2], ~no_evidence[b[0]], b_end),
                        self.threshold,
                        search_s=search,
                        reach_s=reach,
                    )
                )
        return out

    def clips_near(
        self, lib: Library, session, video: int, lo: float, hi: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One video's clips of the snapshot that overlap [lo, hi], in time order: their table
        rows, (N, 2) times and unit vectors (those still in the catalog)."""
        if self.by_video is None:
            order = np.argsort(self.table.video, kind="stable")
            self.by_video = (order, self.table.video[order])
        order, videos = self.by_video
        rows = order[np.searchsorted(videos, video, "left") : np.searchsorted(videos, video, "right")]
        rows = rows[(self.table.end[rows] >= lo) & (self.table.start[rows] <= hi)]
        ids, vectors = lib.catalog.embeddings_by_ids(session, self.table.ids[rows].tolist(), lib.manifest.encoder.dim)
        rows = np.sort(rows)  # by id, as the vectors are
        rows = rows[np.isin(self.table.ids[rows], ids)]
        times = np.stack([self.table.start[rows], self.table.end[rows]], axis=1).astype(np.float64)
        by_time = np.argsort(times[:, 0], kind="stable")
        return rows[by_time], times[by_time], vectors[by_time]

    def related(self, suspect: np.ndarray, videos: set[int]) -> set[tuple[int, int]]:
        """The pairs among ``videos`` that share a duplicate's segment of footage that is not
        ``suspect`` (of being common), or of which one is a copy of the other: one family each
        to the common-footage count. Pairs without suspects keep their segments for the report."""
        related = set()
        chosen = [(va, vb, m) for va, vb, m in self.pairs() if va in videos and vb in videos]
        for (va, vb, m), n, shady in zip(chosen, *_flag_matches(chosen, suspect)):
            if n == 0:
                self.cache[(va, vb)] = self.segments(va, vb, m)
                if self.cache[(va, vb)]:
                    related.add((va, vb))
            elif (n < len(m) and self.segments(va, vb, m[~shady])) or self.is_copy(va, vb, m):
                related.add((va, vb))
        return related


def _flag_matches(pairs: list[tuple[int, int, np.ndarray]], flagged: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """For each (video a, video b, matches): how many of its matches involve a ``flagged`` row,
    and which. Looked up for all pairs at once, so that a pair costs no array work of its own
    unless its matches are mixed (most have none or all flagged)."""
    if not pairs:
        return [], []
    rows = np.concatenate([m[:, :2] for _, _, m in pairs]).astype(np.int64)
    hit = flagged[rows[:, 0]] | flagged[rows[:, 1]]
    sizes = np.array([len(m) for _, _, m in pairs])
    ends = np.cumsum(sizes)
    counts = np.add.reduceat(hit.astype(np.int64), ends - sizes).tolist()
    return counts, [hit[e - n : e] for n, e in zip(sizes.tolist(), ends.tolist())]


def _common_pass(lib: Library, snap: _Snapshot, min_videos: int) -> tuple[np.ndarray, float, bool]:
    """Find the common clips and store them in the catalog: (videos each row's footage appears in
    when common, else 0; seconds the finding took; whether it was stored)."""
    t = time.perf_counter()
    spread = spreads(snap.table, snap.candidates)
    suspect = suspects(spread, min_videos)
    related = snap.related(suspect, touched(snap.table, spread, suspect)) if suspect.any() else set()
    appears_in = mark_common(snap.table, spread, suspect, related, min_videos)
    seconds = time.perf_counter() - t
    counts = {int(snap.table.ids[r]): int(appears_in[r]) for r in np.nonzero(appears_in)[0]}
    try:
        with lib.writing_catalog() as catalog:
            catalog.set_common(counts)
    except (IndexLockedError, StorageError, CorruptIndexError, OSError) as exc:  # a reader reports all the same
        log.warning(
            "found %d common clips but did not store them, so search cannot mark them yet: %s", len(counts), exc
        )
        return appears_in, seconds, False
    return appears_in, seconds, True


def find_duplicates(
    lib: Library,
    threshold: float | None = None,
    min_seconds: float | None = None,
    batch: int = 4096,
    common_min_videos: int = COMMON_MIN_VIDEOS,
    keep_common: bool = False,
    include_decided: bool = False,
    refine_segments: bool = True,
) -> DuplicateReport:
    """Near-duplicate video pairs of the whole library, best first.

    ``min_seconds`` defaults, per pair, to the smaller of two hops and 80% of the shorter video.
    Footage in more than ``common_min_videos`` unrelated videos is common: it is no evidence,
    and the clips found common are stored in the catalog for search. ``keep_common`` skips that
    pass: every match but a blank clip's counts, as before common footage was told apart.
    Pairs the user judged ``not_a_match`` or ``keep_both`` are left out (and counted in
    ``hidden``) unless ``include_decided``. With ``refine_segments`` a reported pair's segments
    are placed beyond the clip grid (align.place, on both videos' stored clips), as search's are
    (align.refine); which pairs are reported, and their scores, do not change.
    """
    snap = _Snapshot(lib, threshold, min_seconds, batch)
    report = DuplicateReport(
        snap.threshold,
        snap.source,
        min_seconds,
        candidates=len(snap.candidates),
        clip_matches=sum(len(v) for v in snap.candidates.values()),
    )
    common = np.zeros(len(snap.table.ids), dtype=bool)
    if not keep_common:
        appears_in, report.common_seconds, _ = _common_pass(lib, snap, common_min_videos)
        common = appears_in > 0
        report.common_min_videos, report.common_clips = common_min_videos, int(common.sum())
    no_evidence = common | is_blank(snap.table.pixel_std)
    pairs = list(snap.pairs())
    for (va, vb, matches), n, in_common in zip(pairs, *_flag_matches(pairs, common)):
        if n == len(matches):
            continue
        if n:
            segments = snap.segments(va, vb, matches[~in_common])
            shared = snap.aligned(matches[in_common])
        else:
            segments = snap.cache[(va, vb)] if (va, vb) in snap.cache else snap.segments(va, vb, matches)
            shared = []
        if not segments:
            continue
        decision = snap.decided.get(pair_key(snap.fingerprints[va], snap.fingerprints[vb]))
        if decision in HIDDEN_VERDICTS and not include_decided:
            report.hidden += 1
            continue
        best = segments[0]
        if refine_segments:
            segments = snap.refined(lib, va, vb, segments, no_evidence)
        # the same footage at another alignment (a slow scene's block) is listed once: its best
        segments, shared = without_repeats(segments), without_repeats(shared)
        a_covered, b_covered = snap.covered(va, vb, segments + shared)
        (pa, da), (pb, db) = snap.videos[va], snap.videos[vb]
        report.pairs.append(
            DuplicatePair(
                a=pa,
                b=pb,
                a_duration=da,
                b_duration=db,
                score=best.score,
                similarity=best.similarity,
                segments=tuple(segments),
                a_covered=a_covered,
                b_covered=b_covered,
                common_segments=tuple(shared),
                decision=decision,
            )
        )
    report.pairs.sort(key=lambda p: p.score, reverse=True)
    return report


def find_common(
    lib: Library, threshold: float | None = None, min_videos: int = COMMON_MIN_VIDEOS, batch: int = 4096
) -> CommonReport:
    """The library's common footage (intros, stings) with where it appears, largest first; the
    pass that ``find_duplicates`` runs, also stored in the catalog for search."""
    snap = _Snapshot(lib, threshold, None, batch)
    appears_in, _, stored = _common_pass(lib, snap, min_videos)
    paths = {v: p for v, (p, _) in snap.videos.items()}
    found = common_segments(snap.table, snap.candidates, appears_in, paths, max_gap=snap.clip_s)
    return CommonReport(snap.threshold, snap.source, min_videos, found, stored)


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
