"""Output formatting, the one place for it: text tables, JSON documents and CSV.

Every function takes the library's result dataclasses and returns text (the CLI prints it) or a
JSON-ready dict carrying ``schema_version``. Segments are serialised by ``segment_json`` alone.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vidsearch.indexer.job import IndexSummary
    from vidsearch.search.align import Segment
    from vidsearch.search.calibrate import Calibration
    from vidsearch.search.duplicates import CommonReport, DuplicatePair, DuplicateReport
    from vidsearch.search.query import ClipHit, SearchResult
    from vidsearch.storage.stats import LibraryStats
    from vidsearch.storage.verify import VerifyReport

#: Bumped when a JSON document loses or renames a key (adding keys keeps it).
JSON_SCHEMA_VERSION = 1


def to_json(body: dict[str, Any]) -> str:
    return json.dumps({"schema_version": JSON_SCHEMA_VERSION, **body}, indent=2)


def seconds(t: float) -> str:
    return f"{t:.1f}"


def segment_json(s: Segment, first: str = "query", second: str = "library") -> dict[str, Any]:
    """A matched segment: ``first`` is the side whose times are ``q_*``, ``second`` the ``r_*`` side."""
    return {
        f"{first}_start": round(s.q_start, 3),
        f"{first}_end": round(s.q_end, 3),
        f"{second}_start": round(s.r_start, 3),
        f"{second}_end": round(s.r_end, 3),
        "similarity": round(s.similarity, 5),
        "clips": s.matches,
        "score": round(s.score, 5),
    }


# ---- index -------------------------------------------------------------------------------------


def index_summary(summary: IndexSummary) -> str:
    parts = [f"indexed {summary.indexed}", f"skipped {summary.skipped}", f"moved {summary.moved}"]
    if summary.copied:
        parts.append(f"copied {summary.copied}")
    if summary.pruned:
        parts.append(f"pruned {summary.pruned}")
    parts += [f"failed {len(summary.failed)}", f"{summary.clips} clips in {summary.seconds:.1f}s"]
    return ", ".join(parts)


# ---- search ------------------------------------------------------------------------------------


def _clip_hit_json(h: ClipHit) -> dict[str, Any]:
    return {
        "path": h.path,
        "similarity": round(h.similarity, 5),
        "clip_id": h.clip_id,
        "query_start": h.q_start,
        "query_end": h.q_end,
        "library_start": h.r_start,
        "library_end": h.r_end,
    }


def search_json(results: Sequence[SearchResult], raw_clips: bool, k: int) -> str:
    queries = []
    for r in results:
        q: dict[str, Any] = {
            "query": r.query,
            "query_start": r.query_start,
            "query_end": r.query_end,
            "query_clips": r.query_clips,
            "results": [
                {
                    "path": m.path,
                    "score": round(m.score, 5),
                    "segments": [segment_json(s) for s in m.segments],
                    "common": m.common,
                    "appears_in": m.appears_in,
                    "common_segments": [segment_json(s) for s in m.common_segments],
                }
                for m in r.matches
            ],
        }
        if raw_clips:
            q["clips"] = [_clip_hit_json(h) for h in r.clip_hits[: k * 10]]
        queries.append(q)
    return to_json({"queries": queries})


def search_text(res: SearchResult, raw_clips: bool, k: int) -> str:
    lines = [f"query {res.query} [{seconds(res.query_start)}-{seconds(res.query_end)}s], {res.query_clips} clips"]
    if raw_clips:
        lines += [
            f"  {h.similarity:.3f}  query [{seconds(h.q_start)}-{seconds(h.q_end)}] -> "
            f"{h.path} [{seconds(h.r_start)}-{seconds(h.r_end)}]"
            for h in res.clip_hits[: k * 10]
        ]
        return "\n".join(lines)
    if not res.matches:
        lines.append("  no matches")
    for rank, m in enumerate(res.matches, 1):
        common = f"common footage: appears in {m.appears_in} videos"
        lines.append(f"{rank:>3}. {m.score:7.3f}  {m.path}" + (f"  ({common})" if m.common else ""))
        marked = [
            f"        {_search_segment(s)}  ({'common footage' if m.common else common})" for s in m.common_segments
        ]
        plain = [f"        {_search_segment(s)}" for s in m.segments]
        lines += marked + plain if m.common else plain + marked
    return "\n".join(lines)


def _search_segment(s: Segment) -> str:
    return (
        f"query [{seconds(s.q_start)}-{seconds(s.q_end)}] -> library [{seconds(s.r_start)}-{seconds(s.r_end)}]  "
        f"similarity {s.similarity:.3f}, {s.matches} clips"
    )


# ---- stats and verify --------------------------------------------------------------------------


def stats_json(st: LibraryStats) -> str:
    d = asdict(st)
    d["failed"] = [{"path": p, "error": e} for p, e in st.failed]
    return to_json(d)


def stats_text(st: LibraryStats) -> str:
    rows = [
        ("index", st.index),
        ("videos indexed", st.videos_indexed),
        ("videos failed", st.videos_failed),
        ("clips", st.clips),
        ("total duration", f"{st.total_duration_s / 3600:.2f} h ({st.total_duration_s:.0f} s)"),
        ("model", f"{st.model} @ {st.revision}"),
        ("dim / pooling", f"{st.dim} / {st.pooling}"),
        ("clip / hop seconds", f"{st.clip_seconds:g} / {st.hop_seconds:g}"),
        ("index type", st.index_type + (" (pinned)" if st.index_type_pinned else "")),
        ("size on disk", f"{st.size_bytes / 1e6:.1f} MB"),
    ]
    lines = [f"{name:>20}: {value}" for name, value in rows]
    lines += [f"  failed: {path}: {error}" for path, error in st.failed]
    return "\n".join(lines)


def verify_json(report: VerifyReport) -> str:
    return to_json(
        {
            "index": report.index,
            "ok": report.ok,
            "counts": report.counts,
            "problems": [{"part": p.part, "message": p.message, "repairable": p.repairable} for p in report.problems],
            "repaired": report.repaired,
        }
    )


def verify_text(report: VerifyReport, repair: bool) -> str:
    lines = [f"{p.part}: {p.message}{'' if p.repairable else ' (cannot be repaired)'}" for p in report.problems]
    lines += [f"repaired: {r}" for r in report.repaired]
    if not report.problems:
        c = report.counts
        lines.append(
            f"ok: {c.get('videos', 0)} videos, {c.get('clips', 0)} clips; manifest, catalog and vectors.faiss agree"
        )
    elif not repair and all(p.repairable for p in report.problems):
        lines.append("run `vidsearch verify --repair` to fix these")
    return "\n".join(lines)


# ---- duplicates --------------------------------------------------------------------------------


def _pair_json(p: DuplicatePair) -> dict[str, Any]:
    return {
        "a": p.a,
        "b": p.b,
        "a_duration": round(p.a_duration, 3),
        "b_duration": round(p.b_duration, 3),
        "score": round(p.score, 5),
        "similarity": round(p.similarity, 5),
        "relation": p.relation,
        "a_covered": round(p.a_covered, 4),
        "b_covered": round(p.b_covered, 4),
        "segments": [segment_json(s, "a", "b") for s in p.segments],
        "common_segments": [segment_json(s, "a", "b") for s in p.common_segments],
    }


def dupes_json(report: DuplicateReport, groups: bool) -> str:
    body: dict[str, Any] = {
        "threshold": report.threshold,
        "threshold_source": report.threshold_source,
        "min_seconds": report.min_seconds,
        "common_min_videos": report.common_min_videos,
        "common_clips": report.common_clips,
    }
    if groups:
        body["groups"] = [
            {"original": g.original, "videos": [{"path": p, "duration": round(d, 3)} for p, d in g.videos]}
            for g in report.groups()
        ]
    else:
        body["pairs"] = [_pair_json(p) for p in report.pairs]
    return to_json(body)


def dupes_csv(report: DuplicateReport, groups: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    if groups:
        w.writerow(["group", "path", "duration", "original"])
        for i, g in enumerate(report.groups(), 1):
            for path, d in g.videos:
                w.writerow([i, path, f"{d:.3f}", int(path == g.original)])
    else:
        w.writerow(
            [
                "a",
                "b",
                "score",
                "similarity",
                "relation",
                "a_covered",
                "b_covered",
                "a_start",
                "a_end",
                "b_start",
                "b_end",
            ]
        )
        for p in report.pairs:
            s = p.segments[0]
            w.writerow(
                [
                    p.a,
                    p.b,
                    f"{p.score:.5f}",
                    f"{p.similarity:.5f}",
                    p.relation,
                    f"{p.a_covered:.4f}",
                    f"{p.b_covered:.4f}",
                    f"{s.q_start:.3f}",
                    f"{s.q_end:.3f}",
                    f"{s.r_start:.3f}",
                    f"{s.r_end:.3f}",
                ]
            )
    return buf.getvalue()


def _common_note(report: DuplicateReport) -> str:
    if not report.common_clips:
        return ""
    return (
        f"; {report.common_clips} clips of footage in more than {report.common_min_videos} unrelated videos "
        "are common, not evidence"
    )


def dupes_text(report: DuplicateReport, groups: bool) -> str:
    note = _common_note(report)
    if groups:
        found = report.groups()
        lines = [f"{len(found)} duplicate group(s) at threshold {report.threshold:g} ({report.threshold_source}){note}"]
        for i, g in enumerate(found, 1):
            lines.append(f"group {i}: {len(g.videos)} videos")
            lines += [f"  {'*' if p == g.original else ' '} {d:8.1f}s  {p}" for p, d in g.videos]
        if found:
            lines.append("(* the longest video, likely the original)")
        return "\n".join(lines)
    lines = [
        f"{len(report.pairs)} duplicate pair(s) at threshold {report.threshold:g} ({report.threshold_source}){note}"
    ]
    for p in report.pairs:
        lines.append(
            f"{p.score:7.3f}  {p.a}\n         {p.b}\n         {p.relation}; covers {p.a_covered:.0%} of a, "
            f"{p.b_covered:.0%} of b"
        )
        lines += [
            f"         a [{seconds(s.q_start)}-{seconds(s.q_end)}] <-> b "
            f"[{seconds(s.r_start)}-{seconds(s.r_end)}]  similarity {s.similarity:.3f}"
            for s in p.segments
        ]
        lines += [
            f"         a [{seconds(s.q_start)}-{seconds(s.q_end)}] <-> b "
            f"[{seconds(s.r_start)}-{seconds(s.r_end)}]  common footage"
            for s in p.common_segments
        ]
    return "\n".join(lines)


# ---- common footage ----------------------------------------------------------------------------


def common_json(report: CommonReport) -> str:
    return to_json(
        {
            "threshold": report.threshold,
            "threshold_source": report.threshold_source,
            "common_min_videos": report.min_videos,
            "stored": report.stored,
            "segments": [
                {
                    "seconds": round(c.seconds, 3),
                    "videos": c.videos,
                    "occurrences": [
                        {"path": o.path, "start": round(o.start, 3), "end": round(o.end, 3)} for o in c.occurrences
                    ],
                }
                for c in report.segments
            ],
        }
    )


def common_csv(report: CommonReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["segment", "seconds", "videos", "path", "start", "end"])
    for i, c in enumerate(report.segments, 1):
        for o in c.occurrences:
            w.writerow([i, f"{c.seconds:.3f}", c.videos, o.path, f"{o.start:.3f}", f"{o.end:.3f}"])
    return buf.getvalue()


def common_text(report: CommonReport) -> str:
    lines = [
        f"{len(report.segments)} common segment(s): footage in more than {report.min_videos} unrelated videos, "
        f"at threshold {report.threshold:g} ({report.threshold_source})"
    ]
    for i, c in enumerate(report.segments, 1):
        lines.append(f"{i}. {seconds(c.seconds)}s in {c.videos} videos")
        lines += [f"     [{seconds(o.start)}-{seconds(o.end)}]  {o.path}" for o in c.occurrences]
    return "\n".join(lines)


# ---- calibrate ---------------------------------------------------------------------------------


def calibration_json(cal: Calibration) -> str:
    return to_json(cal.figures())


def calibration_text(cal: Calibration) -> str:
    f = cal.figures()
    lines = [
        f"threshold {f['threshold']} (stored in the manifest)",
        f"  positives (augmented copies): {f['positives']}, quantiles {f['positive_quantiles']}",
        f"  negatives (unrelated nearest clips): {f['negatives']}, quantiles {f['negative_quantiles']}",
        f"  at the threshold: recall {f['recall']:.3f}, false-positive rate {f['fpr']:.4f} "
        f"(target {f['target_fpr']:g}); {f['videos']} videos, {f['clips']} clips, {f['seconds']}s",
    ]
    lines += [f"  note: {note}" for note in f["notes"]]
    return "\n".join(lines)
