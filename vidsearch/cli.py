"""The ``vidsearch`` command: a thin shell over the library API.

Exit codes: 0 ok; 1 some videos failed or another error; 2 bad usage; 3 model unavailable;
4 no index, or an incompatible one; 5 damaged index; 6 undecodable query video; 7 index
locked by another job; 8 no indexed video at that path; 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys

import click

from vidsearch import __version__
from vidsearch.errors import VidsearchError

JSON_SCHEMA_VERSION = 1
DEFAULT_INDEX = "vidsearch-index"

log = logging.getLogger("vidsearch")


def _setup_logging(debug: bool, verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("vidsearch").setLevel(level)


def _handle_errors(fn):
    """Typed errors become one line on stderr and the class's exit code (a traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = (ctx.find_root().obj or {}).get("debug", False)
        try:
            return fn(*args, **kwargs)
        except VidsearchError as exc:
            if debug:
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (ValueError, OSError) as exc:
            if debug:
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)

    return wrapper


index_option = click.option(
    "--index", "index_dir", envvar="VIDSEARCH_INDEX", default=DEFAULT_INDEX, show_default=True,
    type=click.Path(file_okay=False), help="Index directory (env VIDSEARCH_INDEX).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (see README).")


def model_options(fn):
    for opt in reversed([
        click.option("--model", envvar="VIDSEARCH_MODEL", default=None,
                     help="Hub id or local checkpoint folder (env VIDSEARCH_MODEL); default: the index's, "
                          "else MCG-NJU/videomae-large."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
                     show_default=True, help="auto: bf16 on CUDA and on CPUs with native bf16, else float32."),
    ]):
        fn = opt(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vidsearch")
@click.option("--debug", is_flag=True, help="Debug logging, and tracebacks on errors.")
@click.option("-v", "--verbose", is_flag=True, help="Say what is being done.")
@click.option("-q", "--quiet", is_flag=True, help="Errors only; no progress bar.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool, quiet: bool) -> None:
    """Index a video library, search it by example, find near-duplicates."""
    _setup_logging(debug, verbose, quiet)
    ctx.obj = {"debug": debug, "quiet": quiet}


@cli.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@index_option
@model_options
@click.option("--batch-size", default=None, type=click.IntRange(1), help="Clips per encoder batch [default: 32 on a GPU, 1 on a CPU].")
@click.option("--workers", default=None, type=click.IntRange(1), help="Decode worker processes [default: CPU count, at most 8].")
@click.option("--clip-seconds", type=click.FloatRange(min=0.1), default=None, help="Clip window length [default: 2.0, or the index's].")
@click.option("--hop-seconds", type=click.FloatRange(min=0.1), default=None, help="Seconds between clip starts [default: clip seconds].")
@click.option("--timeout", "timeout_s", default=300.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a decoder may go without producing a clip before its video is marked failed.")
@click.option("--max-decode-memory", "max_decode_mb", default=None, type=click.IntRange(64), metavar="MB",
              help="Memory each decode worker may use; a video that needs more is failed [default: 4096].")
@click.option("--exclude", multiple=True, help="Glob of paths or names to skip (repeatable).")
@click.option("--retry-failed", is_flag=True, help="Try again the videos that failed before.")
@click.option("--prune", is_flag=True, help="Remove indexed videos whose files are gone.")
@click.option("--faiss-spec", default=None, help="Pin a FAISS index type (factory string), e.g. 'IDMap2,Flat'.")
@click.pass_context
@_handle_errors
def index_cmd(ctx, paths, index_dir, model, device, dtype, batch_size, workers, clip_seconds, hop_seconds,
              timeout_s, max_decode_mb, exclude, retry_failed, prune, faiss_spec):
    """Index the videos under PATHS (files or folders, recursive). Incremental and resumable."""
    from vidsearch.indexer.job import DEFAULT_MAX_DECODE_MB, IndexOptions, default_workers, index_paths

    quiet = ctx.obj["quiet"]
    opts = IndexOptions(
        model=model, device=device, dtype=dtype, batch_size=batch_size, workers=workers or default_workers(),
        clip_seconds=clip_seconds, hop_seconds=hop_seconds, timeout_s=timeout_s, retry_failed=retry_failed,
        prune=prune, exclude=tuple(exclude), faiss_spec=faiss_spec, max_decode_mb=max_decode_mb or DEFAULT_MAX_DECODE_MB,
        progress=not quiet and sys.stderr.isatty(),
    )
    summary = index_paths(index_dir, paths, opts)
    parts = [f"indexed {summary.indexed}", f"skipped {summary.skipped}", f"moved {summary.moved}"]
    if summary.copied:
        parts.append(f"copied {summary.copied}")
    if summary.pruned:
        parts.append(f"pruned {summary.pruned}")
    parts += [f"failed {len(summary.failed)}", f"{summary.clips} clips in {summary.seconds:.1f}s"]
    click.echo(", ".join(parts), err=quiet)
    for path, reason in summary.failed:
        click.echo(f"failed: {path}: {reason}", err=True)
    if summary.interrupted:
        click.echo("interrupted: the videos committed so far are kept; run the same command to finish", err=True)
        ctx.exit(130)
    if summary.failed:
        ctx.exit(1)


def _fmt_time(t: float) -> str:
    return f"{t:.1f}"


def _segment_json(s) -> dict:
    return {
        "query_start": round(s.q_start, 3), "query_end": round(s.q_end, 3),
        "library_start": round(s.r_start, 3), "library_end": round(s.r_end, 3),
        "similarity": round(s.similarity, 5), "clips": s.matches, "score": round(s.score, 5),
    }


@cli.command("search")
@click.argument("queries", nargs=-1, required=True, type=click.Path())
@index_option
@model_options
@click.option("--start", type=click.FloatRange(min=0), default=None, help="Query only from this second.")
@click.option("--end", type=click.FloatRange(min=0), default=None, help="Query only up to this second.")
@click.option("-k", "--top", "k", default=10, show_default=True, type=click.IntRange(1), help="Videos to list per query.")
@click.option("--neighbors", default=50, show_default=True, type=click.IntRange(1), help="Nearest clips fetched per query clip.")
@click.option("--clips", "raw_clips", is_flag=True, help="List raw clip hits instead of aligned videos.")
@click.option("--include-self", is_flag=True, help="Keep the query video itself in its results.")
@json_option
@click.pass_context
@_handle_errors
def search_cmd(ctx, queries, index_dir, model, device, dtype, start, end, k, neighbors, raw_clips, include_self, as_json):
    """Find the indexed videos most like each QUERY (a video file, or an indexed video's path)."""
    from vidsearch.model.encoder import load_encoder
    from vidsearch.search.query import search_video
    from vidsearch.storage.stats import open_library

    if start is not None and end is not None and end <= start:
        raise click.BadParameter(f"--end ({end:g}) must be after --start ({start:g})", param_hint="--end")
    out = []
    with open_library(index_dir) as lib:
        encoder = None
        if model is not None or any(os.path.exists(q) for q in queries):
            encoder = load_encoder(model or lib.manifest.encoder.model, device, dtype)
            lib.check_compatible(encoder.settings)
        for q in queries:
            res = search_video(lib, encoder, q, start=start, end=end, k=k, neighbors=neighbors, include_self=include_self)
            out.append(res)
            if not as_json:
                _print_result(res, raw_clips, k)
    if as_json:
        click.echo(json.dumps({
            "schema_version": JSON_SCHEMA_VERSION,
            "queries": [
                {
                    "query": r.query, "query_start": r.query_start, "query_end": r.query_end, "query_clips": r.query_clips,
                    "results": [
                        {"path": m.path, "score": round(m.score, 5), "segments": [_segment_json(s) for s in m.segments]}
                        for m in r.matches
                    ],
                    **({"clips": [
                        {"path": h.path, "similarity": round(h.similarity, 5), "clip_id": h.clip_id,
                         "query_start": h.q_start, "query_end": h.q_end, "library_start": h.r_start, "library_end": h.r_end}
                        for h in r.clip_hits[: k * 10]
                    ]} if raw_clips else {}),
                }
                for r in out
            ],
        }, indent=2))


def _print_result(res, raw_clips: bool, k: int) -> None:
    click.echo(f"query {res.query} [{_fmt_time(res.query_start)}-{_fmt_time(res.query_end)}s], {res.query_clips} clips")
    if raw_clips:
        for h in res.clip_hits[: k * 10]:
            click.echo(f"  {h.similarity:.3f}  query [{_fmt_time(h.q_start)}-{_fmt_time(h.q_end)}] -> "
                       f"{h.path} [{_fmt_time(h.r_start)}-{_fmt_time(h.r_end)}]")
        return
    if not res.matches:
        click.echo("  no matches")
    for rank, m in enumerate(res.matches, 1):
        click.echo(f"{rank:>3}. {m.score:7.3f}  {m.path}")
        for s in m.segments:
            click.echo(f"        query [{_fmt_time(s.q_start)}-{_fmt_time(s.q_end)}] -> library "
                       f"[{_fmt_time(s.r_start)}-{_fmt_time(s.r_end)}]  similarity {s.similarity:.3f}, {s.matches} clips")


@cli.command("stats")
@index_option
@json_option
@_handle_errors
def stats_cmd(index_dir, as_json):
    """Counts, settings, size on disk, and the videos that failed."""
    from dataclasses import asdict

    from vidsearch.storage.stats import library_stats, open_library

    with open_library(index_dir) as lib:
        st = library_stats(lib)
    if as_json:
        d = asdict(st)
        d["failed"] = [{"path": p, "error": e} for p, e in st.failed]
        click.echo(json.dumps({"schema_version": JSON_SCHEMA_VERSION, **d}, indent=2))
        return
    rows = [
        ("index", st.index), ("videos indexed", st.videos_indexed), ("videos failed", st.videos_failed),
        ("clips", st.clips), ("total duration", f"{st.total_duration_s / 3600:.2f} h ({st.total_duration_s:.0f} s)"),
        ("model", f"{st.model} @ {st.revision}"), ("dim / pooling", f"{st.dim} / {st.pooling}"),
        ("clip / hop seconds", f"{st.clip_seconds:g} / {st.hop_seconds:g}"),
        ("index type", st.index_type + (" (pinned)" if st.index_type_pinned else "")),
        ("size on disk", f"{st.size_bytes / 1e6:.1f} MB"),
    ]
    for name, value in rows:
        click.echo(f"{name:>20}: {value}")
    for path, error in st.failed:
        click.echo(f"  failed: {path}: {error}")


@cli.command("remove")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@index_option
@_handle_errors
def remove_cmd(paths, index_dir):
    """Take videos (or every video under a folder) out of the index."""
    from vidsearch.indexer.job import remove_paths

    removed = remove_paths(index_dir, paths)
    click.echo(f"removed {len(removed)} video(s)")


@cli.command("reindex")
@index_option
@click.option("--spec", default=None, help="Pin a FAISS index factory string, e.g. 'IVF1024,SQfp16' or 'HNSW32,Flat'.")
@click.option("--auto", "auto", is_flag=True, help="Unpin: let the index size choose the type again.")
@_handle_errors
def reindex_cmd(index_dir, spec, auto):
    """Rebuild the FAISS index from the catalog (optionally of another type)."""
    from vidsearch.storage.stats import open_library

    if spec and auto:
        raise click.UsageError("give --spec or --auto, not both")
    with open_library(index_dir, writable=True) as lib:
        if auto:
            lib.update_manifest(faiss_pinned=False)
            if not lib.switch_index_type():
                lib.rebuild_vectors()
        elif spec:
            lib.switch_index_type(spec)
        else:
            lib.rebuild_vectors()
        m = lib.manifest
        n = lib.vectors().ntotal
    click.echo(f"rebuilt {m.faiss_spec} ({'pinned' if m.faiss_pinned else 'chosen by size'}) over {n} clips"
               + (f"; {m.faiss_params}" if m.faiss_params else ""))


@cli.command("verify")
@index_option
@click.option("--repair", is_flag=True, help="Rebuild what can be rebuilt (the FAISS file; damaged catalog rows).")
@json_option
@click.pass_context
@_handle_errors
def verify_cmd(ctx, index_dir, repair, as_json):
    """Check that the manifest, catalog and FAISS index agree (exit 5 when they do not)."""
    from vidsearch.storage.verify import verify

    report = verify(index_dir, repair=repair)
    if as_json:
        click.echo(json.dumps({
            "schema_version": JSON_SCHEMA_VERSION, "index": report.index, "ok": report.ok, "counts": report.counts,
            "problems": [{"part": p.part, "message": p.message, "repairable": p.repairable} for p in report.problems],
            "repaired": report.repaired,
        }, indent=2))
    else:
        for p in report.problems:
            click.echo(f"{p.part}: {p.message}{'' if p.repairable else ' (cannot be repaired)'}")
        for r in report.repaired:
            click.echo(f"repaired: {r}")
        if not report.problems:
            c = report.counts
            click.echo(f"ok: {c.get('videos', 0)} videos, {c.get('clips', 0)} clips; manifest, catalog and "
                       "vectors.faiss agree")
        elif not repair and all(p.repairable for p in report.problems):
            click.echo("run `vidsearch verify --repair` to fix these")
    if not report.ok:
        ctx.exit(5)


def _pair_json(p) -> dict:
    return {
        "a": p.a, "b": p.b, "a_duration": round(p.a_duration, 3), "b_duration": round(p.b_duration, 3),
        "score": round(p.score, 5), "similarity": round(p.similarity, 5), "relation": p.relation,
        "a_covered": round(p.a_covered, 4), "b_covered": round(p.b_covered, 4),
        "segments": [
            {"a_start": round(s.q_start, 3), "a_end": round(s.q_end, 3), "b_start": round(s.r_start, 3),
             "b_end": round(s.r_end, 3), "similarity": round(s.similarity, 5), "clips": s.matches}
            for s in p.segments
        ],
    }


@cli.command("dupes")
@index_option
@click.option("--threshold", type=click.FloatRange(-1, 1), default=None,
              help="Clip similarity threshold [default: the calibrated one, else 0.90].")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=None,
              help="Shortest matched segment to report [default: the smaller of two hops and 80% of the shorter video].")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--groups", is_flag=True, help="Report groups of connected duplicates instead of pairs.")
@click.pass_context
@_handle_errors
def dupes_cmd(ctx, index_dir, threshold, min_seconds, fmt, groups):
    """Find near-duplicate videos across the library (pairs, or --groups)."""
    from vidsearch.search.duplicates import find_duplicates
    from vidsearch.storage.stats import open_library

    with open_library(index_dir) as lib:
        report = find_duplicates(lib, threshold, min_seconds)
    if report.threshold_source == "default":
        click.echo(f"note: using the default threshold {report.threshold:g}; run `vidsearch calibrate` to fit it "
                   "to this model and library", err=True)
    if fmt == "json":
        body = {"schema_version": JSON_SCHEMA_VERSION, "threshold": report.threshold,
                "threshold_source": report.threshold_source, "min_seconds": report.min_seconds}
        if groups:
            body["groups"] = [
                {"original": g.original, "videos": [{"path": p, "duration": round(d, 3)} for p, d in g.videos]}
                for g in report.groups()
            ]
        else:
            body["pairs"] = [_pair_json(p) for p in report.pairs]
        click.echo(json.dumps(body, indent=2))
    elif fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        if groups:
            w.writerow(["group", "path", "duration", "original"])
            for i, g in enumerate(report.groups(), 1):
                for p, d in g.videos:
                    w.writerow([i, p, f"{d:.3f}", int(p == g.original)])
        else:
            w.writerow(["a", "b", "score", "similarity", "relation", "a_covered", "b_covered",
                        "a_start", "a_end", "b_start", "b_end"])
            for p in report.pairs:
                s = p.segments[0]
                w.writerow([p.a, p.b, f"{p.score:.5f}", f"{p.similarity:.5f}", p.relation, f"{p.a_covered:.4f}",
                            f"{p.b_covered:.4f}", f"{s.q_start:.3f}", f"{s.q_end:.3f}", f"{s.r_start:.3f}", f"{s.r_end:.3f}"])
        click.echo(buf.getvalue(), nl=False)
    elif groups:
        found = report.groups()
        click.echo(f"{len(found)} duplicate group(s) at threshold {report.threshold:g} ({report.threshold_source})")
        for i, g in enumerate(found, 1):
            click.echo(f"group {i}: {len(g.videos)} videos")
            for p, d in g.videos:
                click.echo(f"  {'*' if p == g.original else ' '} {d:8.1f}s  {p}")
        if found:
            click.echo("(* the longest video, likely the original)")
    else:
        click.echo(f"{len(report.pairs)} duplicate pair(s) at threshold {report.threshold:g} ({report.threshold_source})")
        for p in report.pairs:
            click.echo(f"{p.score:7.3f}  {p.a}\n         {p.b}\n         {p.relation}; covers {p.a_covered:.0%} of a, "
                       f"{p.b_covered:.0%} of b")
            for s in p.segments:
                click.echo(f"         a [{_fmt_time(s.q_start)}-{_fmt_time(s.q_end)}] <-> b "
                           f"[{_fmt_time(s.r_start)}-{_fmt_time(s.r_end)}]  similarity {s.similarity:.3f}")


@cli.command("calibrate")
@index_option
@model_options
@click.option("--sample", default=50, show_default=True, type=click.IntRange(2), help="Videos to sample.")
@click.option("--clips-per-video", default=4, show_default=True, type=click.IntRange(1))
@click.option("--target-fpr", default=0.001, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="False-positive rate to hold among unrelated nearest-neighbour clips.")
@click.option("--max-seconds", default=600.0, show_default=True, type=click.FloatRange(min=1), help="Time budget.")
@click.option("--seed", default=0, show_default=True, type=int)
@json_option
@_handle_errors
def calibrate_cmd(index_dir, model, device, dtype, sample, clips_per_video, target_fpr, max_seconds, seed, as_json):
    """Fit the duplicate threshold to this model and library; stored in the manifest."""
    from vidsearch.model.encoder import load_encoder
    from vidsearch.search.calibrate import calibrate
    from vidsearch.storage.stats import open_library

    with open_library(index_dir, writable=True) as lib:
        encoder = load_encoder(model or lib.manifest.encoder.model, device, dtype)
        cal = calibrate(lib, encoder, sample=sample, clips_per_video=clips_per_video, target_fpr=target_fpr,
                        max_seconds=max_seconds, seed=seed, say=lambda m: click.echo(m, err=True))
    f = cal.figures()
    if as_json:
        click.echo(json.dumps({"schema_version": JSON_SCHEMA_VERSION, **f}, indent=2))
        return
    click.echo(f"threshold {f['threshold']} (stored in the manifest)")
    click.echo(f"  positives (augmented copies): {f['positives']}, quantiles {f['positive_quantiles']}")
    click.echo(f"  negatives (unrelated nearest clips): {f['negatives']}, quantiles {f['negative_quantiles']}")
    click.echo(f"  at the threshold: recall {f['recall']:.3f}, false-positive rate {f['fpr']:.4f} "
               f"(target {f['target_fpr']:g}); {f['videos']} videos, {f['clips']} clips, {f['seconds']}s")
    for note in f["notes"]:
        click.echo(f"  note: {note}")


@cli.command("export")
@click.argument("out", type=click.Path(dir_okay=False))
@index_option
@click.option("--format", "fmt", type=click.Choice(["vsc", "npz", "parquet"]), default="vsc", show_default=True)
@click.option("--only", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File listing the videos to export (paths or file stems, one a line).")
@click.option("--dim", type=click.IntRange(1), default=None, help="Reduce with PCA fitted on the exported set (VSC: 512).")
@_handle_errors
def export_cmd(out, index_dir, fmt, only, dim):
    """Write clip descriptors to OUT: VSC 2022 descriptor npz, plain npz, or parquet."""
    from vidsearch.storage.export import export
    from vidsearch.storage.stats import open_library

    with open_library(index_dir) as lib:
        n = export(lib, out, fmt, only, dim)
    click.echo(f"wrote {n} descriptors to {out}")


def main() -> None:
    cli(prog_name="vidsearch")


if __name__ == "__main__":
    main()
