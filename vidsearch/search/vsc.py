"""Matches as the Meta Video Similarity Challenge 2022 matching track scores them.

One row per aligned segment: ``query_id, ref_id, query_start, query_end, ref_start, ref_end,
score``, with the video ids ``export --format vsc`` writes (``storage.export.vsc_video_ids``):
library videos get the ids of the whole index; query files the ids of the query set. The
score is the segment's confidence (search/confidence.py), which ranks the segments of all
queries on one scale, as the track's metric does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import numpy as np

from vidsearch.search.duplicates import DuplicateReport
from vidsearch.search.query import SearchResult
from vidsearch.storage.catalog import STATUS_INDEXED
from vidsearch.storage.export import vsc_video_ids
from vidsearch.storage.library import Library

COLUMNS = ("query_id", "ref_id", "query_start", "query_end", "ref_start", "ref_end", "score")


@dataclass(frozen=True)
class VscMatch:
    query_id: str
    ref_id: str
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float


def library_vsc_ids(lib: Library) -> dict[str, str]:
    """The VSC video id of every indexed video, by path: the ids ``export --format vsc`` writes."""
    with lib.catalog.read() as session:
        return vsc_video_ids(v.display_path for v in lib.catalog.videos(session, STATUS_INDEXED))


def search_matches(lib: Library, results: Sequence[SearchResult]) -> list[VscMatch]:
    """Every segment of every listed result of each query, most confident first."""
    refs = library_vsc_ids(lib)
    queries = vsc_video_ids(dict.fromkeys(r.query for r in results))
    out = [
        VscMatch(queries[r.query], _id(refs, m.path), s.q_start, s.q_end, s.r_start, s.r_end, s.confidence or 0.0)
        for r in results
        for m in r.matches
        for s in m.segments
    ]
    return sorted(out, key=lambda x: x.score, reverse=True)


def duplicate_matches(lib: Library, report: DuplicateReport) -> list[VscMatch]:
    """Every segment of every pair, video a as the query and b as the reference, most confident first."""
    ids = library_vsc_ids(lib)
    out = [
        VscMatch(_id(ids, p.a), _id(ids, p.b), s.q_start, s.q_end, s.r_start, s.r_end, s.confidence or 0.0)
        for p in report.pairs
        for s in p.segments
    ]
    return sorted(out, key=lambda x: x.score, reverse=True)


def _id(ids: dict[str, str], path: str) -> str:
    # a video indexed after the ids were read (an index job runs beside): its stem
    return ids.get(path, Path(path).stem)


# ---- the challenge's metrics (our implementation of its definitions) ---------------------------

#: Descriptor track: nearest clip pairs retrieved per query video, and video pairs kept per query.
RETRIEVED_PER_QUERY = 1200
PAIRS_PER_QUERY = 25


def micro_ap(truth: set[tuple[str, str]], predictions: Sequence[tuple[str, str, float]]) -> float:
    """Micro average precision of scored (query, ref) pairs against the true pairs, over all
    queries at once: the sum of the precision at each correct prediction, over the number of
    true pairs (a true pair never predicted counts as missed)."""
    if not truth:
        raise ValueError("micro AP needs at least one true pair")
    ranked = sorted(predictions, key=lambda p: p[2], reverse=True)
    hits, total = 0, 0.0
    for rank, (q, r, _) in enumerate(ranked, 1):
        if (q, r) in truth:
            hits += 1
            total += hits / rank
    return total / len(truth)


def descriptor_pairs(
    query_ids: np.ndarray, query_features: np.ndarray, ref_ids: np.ndarray, ref_features: np.ndarray
) -> list[tuple[str, str, float]]:
    """The descriptor track's candidate video pairs: the ``RETRIEVED_PER_QUERY`` × queries most
    similar (query clip, ref clip) pairs overall, each video pair scored by its best clip pair,
    the best ``PAIRS_PER_QUERY`` × queries pairs kept."""
    n_queries = len(set(query_ids.tolist()))
    sims = query_features @ ref_features.T
    flat = sims.ravel()
    keep = min(len(flat), RETRIEVED_PER_QUERY * n_queries)
    top = np.argpartition(-flat, keep - 1)[:keep] if keep < len(flat) else np.arange(len(flat))
    best: dict[tuple[str, str], float] = {}
    for i, j in zip(*np.unravel_index(top, sims.shape)):
        key = (str(query_ids[i]), str(ref_ids[j]))
        best[key] = max(best.get(key, -np.inf), float(sims[i, j]))
    pairs = sorted(((q, r, s) for (q, r), s in best.items()), key=lambda p: p[2], reverse=True)
    return pairs[: PAIRS_PER_QUERY * n_queries]


def _union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(e - s for s, e in intervals)


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Length of the intersection of two unions of intervals."""
    return _length(a) + _length(b) - _length(_union(a + b))


def _boxes_overlap(a: VscMatch, b: VscMatch) -> bool:
    return min(a.query_end, b.query_end) > max(a.query_start, b.query_start) and min(a.ref_end, b.ref_end) > max(
        a.ref_start, b.ref_start
    )


def segment_ap(truth: Sequence[VscMatch], predictions: Sequence[VscMatch]) -> float:
    """The matching track's segment AP.

    Predictions are taken best score first, equal scores together. After each step, on each
    time axis (query, ref): the intersection is the length of the predicted intervals that
    lies within the true intervals of the same video pair, counting only the true segments that
    some prediction of that pair overlaps (as a box in query × ref time); precision is the
    intersection over the length the predictions cover, recall the intersection over the
    length of all true segments. P and R are the geometric means of the two axes', and
    AP = Σ P · ΔR.
    """
    axes = (("query_start", "query_end"), ("ref_start", "ref_end"))
    gt_by_pair: dict[tuple[str, str], list[VscMatch]] = {}
    for t in truth:
        gt_by_pair.setdefault((t.query_id, t.ref_id), []).append(t)
    gt_total = [
        sum(_length(_union((getattr(t, lo), getattr(t, hi)) for t in ts)) for ts in gt_by_pair.values())
        for lo, hi in axes
    ]
    if not all(gt_total):
        raise ValueError("segment AP needs true segments of non-zero length")
    pred_by_pair: dict[tuple[str, str], list[VscMatch]] = {}
    pair_hit: dict[tuple[str, str], list[float]] = {}
    pair_cover: dict[tuple[str, str], list[float]] = {}
    hit, cover = [0.0, 0.0], [0.0, 0.0]  # summed over the pairs, per axis
    ap, recall = 0.0, 0.0
    if not all(np.isfinite(p.score) for p in predictions):
        raise ValueError("every prediction needs a finite score")
    ranked = sorted(predictions, key=lambda p: p.score, reverse=True)
    for _, group in groupby(ranked, key=lambda p: p.score):
        for p in group:
            key = (p.query_id, p.ref_id)
            preds = pred_by_pair.setdefault(key, [])
            preds.append(p)
            seen = [t for t in gt_by_pair.get(key, []) if any(_boxes_overlap(t, x) for x in preds)]
            for a, (lo, hi) in enumerate(axes):
                spans = _union((getattr(x, lo), getattr(x, hi)) for x in preds)
                new_hit = _overlap(spans, _union((getattr(t, lo), getattr(t, hi)) for t in seen))
                hit[a] += new_hit - pair_hit.setdefault(key, [0.0, 0.0])[a]
                cover[a] += _length(spans) - pair_cover.setdefault(key, [0.0, 0.0])[a]
                pair_hit[key][a], pair_cover[key][a] = new_hit, _length(spans)
        new_recall = float(np.sqrt(hit[0] / gt_total[0] * hit[1] / gt_total[1]))
        precision = float(np.sqrt(hit[0] / cover[0] * hit[1] / cover[1])) if cover[0] and cover[1] else 0.0
        ap += precision * (new_recall - recall)
        recall = new_recall
    return ap
