"""Matches as the Meta Video Similarity Challenge 2022 matching track scores them.

One row per aligned segment: ``query_id, ref_id, query_start, query_end, ref_start, ref_end,
score``, with the video ids ``export --format vsc`` writes (``storage.export.vsc_video_ids``):
library videos get the ids of the whole index; query files the ids of the query set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
    """Every segment of every listed result of each query, best score first."""
    refs = library_vsc_ids(lib)
    queries = vsc_video_ids(dict.fromkeys(r.query for r in results))
    out = [
        VscMatch(queries[r.query], _id(refs, m.path), s.q_start, s.q_end, s.r_start, s.r_end, s.score)
        for r in results
        for m in r.matches
        for s in m.segments
    ]
    return sorted(out, key=lambda x: x.score, reverse=True)


def duplicate_matches(lib: Library, report: DuplicateReport) -> list[VscMatch]:
    """Every segment of every pair, video a as the query and b as the reference, best score first."""
    ids = library_vsc_ids(lib)
    out = [
        VscMatch(_id(ids, p.a), _id(ids, p.b), s.q_start, s.q_end, s.r_start, s.r_end, s.score)
        for p in report.pairs
        for s in p.segments
    ]
    return sorted(out, key=lambda x: x.score, reverse=True)


def _id(ids: dict[str, str], path: str) -> str:
    # a video indexed after the ids were read (an index job runs beside): its stem
    return ids.get(path, Path(path).stem)
