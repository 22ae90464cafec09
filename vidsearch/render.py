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
    from vidsearch.search.explain import Explanation
    from vidsearch.search.query import ClipHit, SearchResult
    from vidsearch.search.vsc import VscMatch
    from vidsearch.storage.decisions import Decision
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
    out = {
        f"{first}_start": round(s.q_start, 3),
        f"{first}_end": round(s.q_end, 3),
        f"{second}_start": round(s.r_start, 3),
        f"{second}_end": round(s.r_end, 3),
        "similarity": round(s.similarity, 5),
        "clips": s.matches,
        "score": round(s.score, 5),
    }
    if s.confidence is not None:
        out["confidence"] = round(s.confidence, 4)
    return out


def _confidence(s: Segment) -> str:
    return "" if s.confidence is None else f", confidence {s.confidence:.2f}"


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
    return to_json(search_body(results, raw_clips, k))


def search_body(results: Sequence[SearchResult], raw_clips: bool, k: int) -> dict[str, Any]:
    """``search --json``'s document, without ``schema_version`` (the web app adds its own keys)."""
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
                    "video_id": m.video_id,
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
    return {"queries": queries}


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
        f"similarity {s.similarity:.3f}, {s.matches} clips{_confidence(s)}"
    )


def vsc_csv(matches: Sequence[VscMatch]) -> str:
    """The VSC 2022 matching-track CSV: a header, then one row per segment."""
    from vidsearch.search.vsc import COLUMNS

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for m in matches:
        w.writerow(
            [m.query_id, m.ref_id]
            + [f"{t:.3f}" for t in (m.query_start, m.query_end, m.ref_start, m.ref_end)]
            + [f"{m.score:.6f}"]
        )
    return buf.getvalue()


# ---- stats and verify --------------------------------------------------------------------------


def stats_json(st: LibraryStats) -> str:
    return to_json(stats_body(st))


def stats_body(st: LibraryStats) -> dict[str, Any]:
    d = asdict(st)
    d["failed"] = [{"path": p, "error": e} for p, e in st.failed]
    return d


def index_type(spec: str, pinned: bool, exact_until: int | None) -> str:
    """``IVF1024,SQfp16 (pinned)``, or ``pinned IVF256,Flat; exact search until 256 clips``."""
    if exact_until is not None:
        return f"{'pinned ' if pinned else ''}{spec}; exact search until {exact_until} clips"
    return spec + (" (pinned)" if pinned else "")


def reindex_text(spec: str, pinned: bool, params: dict, clips: int, exact_until: int | None) -> str:
    if exact_until is not None:
        return f"rebuilt over {clips} clips: {index_type(spec, pinned, exact_until)}"
    return f"rebuilt {spec} ({'pinned' if pinned else 'chosen by size'}) over {clips} clips" + (
        f"; {params}" if params else ""
    )


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
        ("index type", index_type(st.index_type, st.index_type_pinned, st.exact_search_until)),
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
            "notes": report.notes,
        }
    )


def verify_text(report: VerifyReport, repair: bool) -> str:
    lines = [f"{p.part}: {p.message}{'' if p.repairable else ' (cannot be repaired)'}" for p in report.problems]
    lines += [f"repaired: {r}" for r in report.repaired]
    lines += [f"note: {n}" for n in report.notes]
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
        "confidence": round(p.confidence, 4),
        "decision": p.decision,
        "segments": [segment_json(s, "a", "b") for s in p.segments],
        "common_segments": [segment_json(s, "a", "b") for s in p.common_segments],
    }


def dupes_json(report: DuplicateReport, groups: bool) -> str:
    return to_json(dupes_body(report, groups))


def dupes_body(report: DuplicateReport, groups: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "threshold": report.threshold,
        "threshold_source": report.threshold_source,
        "min_seconds": report.min_seconds,
        "common_min_videos": report.common_min_videos,
        "common_clips": report.common_clips,
        "hidden_by_decisions": report.hidden,
    }
    if groups:
        body["groups"] = [
            {"original": g.original, "videos": [{"path": p, "duration": round(d, 3)} for p, d in g.videos]}
            for g in report.groups()
        ]
    else:
        body["pairs"] = [_pair_json(p) for p in report.pairs]
    return body


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
                "decision",
                "confidence",
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
                    p.decision or "",
                    f"{p.confidence:.4f}",
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


def _hidden_note(report: DuplicateReport) -> list[str]:
    if not report.hidden:
        return []
    return [f"({report.hidden} pair(s) you judged not_a_match or keep_both are hidden; --include-decided shows them)"]


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
        return "\n".join(lines + _hidden_note(report))
    lines = [
        f"{len(report.pairs)} duplicate pair(s) at threshold {report.threshold:g} ({report.threshold_source}){note}"
    ]
    for p in report.pairs:
        lines.append(
            f"{p.score:7.3f}  {p.a}\n         {p.b}\n         {p.relation}; covers {p.a_covered:.0%} of a, "
            f"{p.b_covered:.0%} of b" + (f"; your verdict: {p.decision}" if p.decision else "")
        )
        lines += [
            f"         a [{seconds(s.q_start)}-{seconds(s.q_end)}] <-> b "
            f"[{seconds(s.r_start)}-{seconds(s.r_end)}]  similarity {s.similarity:.3f}{_confidence(s)}"
            for s in p.segments
        ]
        lines += [
            f"         a [{seconds(s.q_start)}-{seconds(s.q_end)}] <-> b "
            f"[{seconds(s.r_start)}-{seconds(s.r_end)}]  common footage"
            for s in p.common_segments
        ]
    return "\n".join(lines + _hidden_note(report))


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


# ---- decisions ---------------------------------------------------------------------------------


def decision_text(d: Decision) -> str:
    where = "" if d.indexed else "  (not both indexed now)"
    return f"{d.id:>4}  {d.verdict:<11}  {d.paths[0]}\n      {'':<11}  {d.paths[1]}{where}"


def decisions_text(decisions: Sequence[Decision]) -> str:
    if not decisions:
        return "no decisions yet (`vidsearch decide A B not_a_match|same|keep_both` records one)"
    return "\n".join(decision_text(d) for d in decisions)


def decisions_json(decisions: Sequence[Decision]) -> str:
    from vidsearch.storage.decisions import export_decisions

    return to_json(export_decisions(list(decisions)))


# ---- explain -----------------------------------------------------------------------------------


def _span(times, i: int) -> str:
    return f"[{seconds(times[i, 0])}-{seconds(times[i, 1])}]"


def explain_text(e: Explanation) -> str:
    lines = [
        f"a: {e.a} ({len(e.a_times)} clips, {'stored' if e.a_stored else 'embedded, windows every half hop'})",
        f"b: {e.b} ({len(e.b_times)} clips, stored)",
        f"threshold {e.threshold:g} ({e.threshold_source}); {len(e.segments)} aligned segment(s)",
    ]
    for n, x in enumerate(e.segments, 1):
        s = x.segment
        lines.append(
            f"segment {n}: a [{seconds(s.q_start)}-{seconds(s.q_end)}] <-> b [{seconds(s.r_start)}-{seconds(s.r_end)}]"
            f"  similarity {s.similarity:.3f}, {s.matches} clips{_confidence(s)}"
        )
        lines += [
            f"    a [{seconds(c.a_start)}-{seconds(c.a_end)}] ~ b [{seconds(c.b_start)}-{seconds(c.b_end)}]"
            f"  {c.similarity:.3f}"
            for c in x.clips
        ]
    best = e.best_clip()
    if not e.segments and best is not None:
        i, j = best
        lines.append(
            f"no aligned segment at or above the threshold; the most similar clips: a {_span(e.a_times, i)} ~ "
            f"b {_span(e.b_times, j)}  {e.similarity[i, j]:.3f}"
        )
    return "\n".join(lines)


def explain_json(e: Explanation) -> str:
    segments = []
    for x in e.segments:
        d = segment_json(x.segment, "a", "b")
        d["clip_matches"] = [
            {
                "a_start": round(c.a_start, 3),
                "a_end": round(c.a_end, 3),
                "b_start": round(c.b_start, 3),
                "b_end": round(c.b_end, 3),
                "similarity": round(c.similarity, 5),
            }
            for c in x.clips
        ]
        segments.append(d)
    return to_json(
        {
            "a": e.a,
            "b": e.b,
            "a_clips": len(e.a_times),
            "b_clips": len(e.b_times),
            "a_source": "stored" if e.a_stored else "embedded",
            "threshold": e.threshold,
            "threshold_source": e.threshold_source,
            "segments": segments,
        }
    )


def _extent(times) -> tuple[float, float]:
    """The time span a matrix axis covers: clip starts, each row one step (the start spacing) tall."""
    step = float(times[1, 0] - times[0, 0]) if len(times) > 1 else float(times[0, 1] - times[0, 0])
    return float(times[0, 0]), float(times[-1, 0]) + step


def require_plot():
    """matplotlib's pyplot (non-interactive), or the error that names the extra to install."""
    from vidsearch.errors import MissingExtraError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("explain --plot", "plot", "matplotlib") from None
    return plt


def explain_png(e: Explanation) -> bytes:
    """The clip-by-clip similarity matrix as a PNG (a down, b across, in seconds), segments outlined."""
    import os

    plt = require_plot()
    from matplotlib.patches import Rectangle

    (a0, a1), (b0, b1) = _extent(e.a_times), _extent(e.b_times)
    fig, ax = plt.subplots(figsize=(7, 6))
    try:
        image = ax.imshow(e.similarity, extent=(b0, b1, a1, a0), aspect="auto", cmap="viridis", interpolation="nearest")
        for x in e.segments:
            s = x.segment
            ax.add_patch(
                Rectangle((s.r_start, s.q_start), s.r_end - s.r_start, s.q_end - s.q_start, fill=False, ec="red", lw=2)
            )
        ax.set_xlabel(f"b: {os.path.basename(e.b)} (s)")
        ax.set_ylabel(f"a: {os.path.basename(e.a)} (s)")
        ax.set_title(f"clip similarity; {len(e.segments)} aligned segment(s) at threshold {e.threshold:g}")
        fig.colorbar(image, ax=ax, label="cosine similarity")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buf.getvalue()


# ---- calibrate ---------------------------------------------------------------------------------


def calibration_json(cal: Calibration) -> str:
    return to_json(cal.figures())


#: What each reason for leaving a pair out of the negatives means.
EXCLUSION_REASONS = {
    "aligned": "clips aligned in time",
    "short": "a video too short to align (1-2 clips)",
    "covered": "a whole-video match covering most of the shorter video",
}


def calibration_text(cal: Calibration) -> str:
    f = cal.figures()
    fit = f["fit"]
    lines = [
        f"threshold {f['threshold']} " + ("(stored in the manifest)" if f["stored"] else "(NOT stored)"),
        f"  positives (augmented copies): {f['positives']}, quantiles {f['positive_quantiles']}",
        f"  negatives (unrelated nearest clips): {f['negatives']}, quantiles {f['negative_quantiles']}",
        f"  tail: a normal fit of the negatives' Fisher z (median {fit['z_median']}, MAD {fit['z_mad']}) puts "
        f"{f['target_fpr']:g} at {fit['threshold']}; the threshold is "
        + ("the fit's" if f["method"] == "fit" else "read off the negatives"),
        f"  at the threshold: recall {f['recall']:.3f}, false-positive rate {f['fpr']:.4f} among the negatives, "
        f"{f['fitted_fpr']:.4f} by the fit (target {f['target_fpr']:g}); {f['videos']} videos, {f['clips']} clips, "
        f"{f['seconds']}s",
    ]
    ex = f["excluded"]
    if ex["pairs"]:
        why = "; ".join(f"{text}: {ex[r]}" for r, text in EXCLUSION_REASONS.items() if ex[r])
        lines += [
            f"  left out of the negatives: {ex['pairs']} clip pair(s) at similarity {f['suspect_level']} or more "
            f"with no evidence of unrelated videos ({why}; a pair may have several)",
            "these look like real copies:",
        ]
        lines += [
            f"  {c['similarity']:.4f}  {c['a']}\n          {c['b']}\n          "
            f"{c['clips']} clip pair(s); {', '.join(EXCLUSION_REASONS[r] for r in c['reasons'])}"
            for c in f["likely_copies"]
        ]
    if cal.warning:
        lines.append(f"WARNING: {cal.warning}")
        lines.append("  alternatives:  threshold  recall  false-positive rate (negatives / fit)")
        lines += [
            f"                 {a['threshold']:.4f}     {a['recall']:.2f}    {a['fpr']:.4f} / {a['fitted_fpr']:.4f}"
            for a in f["alternatives"]
        ]
    lines += [f"  note: {note}" for note in f["notes"]]
    return "\n".join(lines)
