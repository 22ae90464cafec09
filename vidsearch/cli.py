"""The ``vidsearch`` command: a thin shell over the library API.

Each command parses its options, calls one library function and prints what ``render`` makes
of the result. Errors are mapped to exit codes in one place, ``VidsearchGroup``: a
``VidsearchError`` exits with its class's ``exit_code`` (the table is in the README and in
``vidsearch.errors``); anything else is a bug, reported as such (with its traceback under --debug).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import sys
import threading
from contextlib import contextmanager

import click

from vidsearch import __version__, render
from vidsearch.errors import (
    CorruptIndexError,
    InvalidArgumentError,
    JobInterrupted,
    StorageError,
    Terminated,
    VideosFailedError,
    VidsearchError,
)

DEFAULT_INDEX = "vidsearch-index"

log = logging.getLogger("vidsearch")


def _setup_logging(debug: bool, verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("vidsearch").setLevel(level)


class VidsearchGroup(click.Group):
    """Maps errors to exit codes once, for every command.

    A ``VidsearchError`` is one line on stderr and its class's exit code. An ``OSError`` that no
    layer turned into one is the environment's (a full disk is exit 9, anything else 1), said
    in one line. Anything else is a bug: said as one, with the traceback under ``--debug``.
    """

    def invoke(self, ctx: click.Context):
        try:
            with _sigterm_as_interrupt():
                return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as exc:
            click.echo("terminated" if isinstance(exc, Terminated) else "interrupted", err=True)
            ctx.exit(_interrupt_exit_code(isinstance(exc, Terminated)))
        except Exception as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            click.echo(f"Error: {_describe(exc)}", err=True)
            ctx.exit(_exit_code(exc))


def _raise_terminated(signum, frame):
    raise Terminated


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises Terminated (a KeyboardInterrupt) while a command runs, so that it stops as
    Ctrl-C stops it: a job commits what is done and saves the FAISS file. Left alone when SIGTERM
    is already ignored or handled, or off the main thread (where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _interrupt_exit_code(terminated: bool) -> int:
    return Terminated.exit_code if terminated else JobInterrupted.exit_code


def _describe(exc: Exception) -> str:
    if isinstance(exc, (VidsearchError, OSError)):
        return str(exc)
    return (
        f"internal error, a bug in vidsearch ({type(exc).__name__}: {exc}); "
        "run again with --debug for the traceback, and please report it"
    )


def _exit_code(exc: Exception) -> int:
    if isinstance(exc, VidsearchError):
        return exc.exit_code
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # the README promises 9 for a full disk
        return StorageError.exit_code
    return 1


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, which lets nan (every comparison false) and inf through, without them."""

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


index_option = click.option(
    "--index",
    "index_dir",
    envvar="VIDSEARCH_INDEX",
    default=DEFAULT_INDEX,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Index directory (env VIDSEARCH_INDEX).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (see README).")
keep_common_option = click.option(
    "--keep-common",
    is_flag=True,
    help="Count common footage (intros, stings: see `vidsearch common`) as evidence like any other.",
)
threshold_option = click.option(
    "--threshold",
    type=FiniteFloatRange(-1, 1),
    default=None,
    help="Clip similarity threshold [default: the calibrated one, else 0.90].",
)
common_min_videos_option = click.option(
    "--common-min-videos",
    type=click.IntRange(1),
    default=None,
    metavar="N",
    help="Footage is common when it appears in more than N unrelated videos [default: 5].",
)


def model_options(fn):
    for opt in reversed(
        [
            click.option(
                "--model",
                envvar="VIDSEARCH_MODEL",
                default=None,
                help="Hub id or local checkpoint folder (env VIDSEARCH_MODEL); default: the index's, "
                "else MCG-NJU/videomae-large.",
            ),
            click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
            click.option(
                "--dtype",
                type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
                default="auto",
                show_default=True,
                help="auto: bf16 on CUDA and on CPUs with native bf16, else float32.",
            ),
        ]
    ):
        fn = opt(fn)
    return fn


@click.group(cls=VidsearchGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option(
    "--batch-size",
    default=None,
    type=click.IntRange(1),
    help="Clips per encoder batch [default: 32 on a GPU, 1 on a CPU].",
)
@click.option(
    "--workers", default=None, type=click.IntRange(1), help="Decode worker processes [default: CPU count, at most 8]."
)
@click.option(
    "--clip-seconds",
    type=FiniteFloatRange(min=0.1),
    default=None,
    help="Clip window length [default: 2.0, or the index's].",
)
@click.option(
    "--hop-seconds",
    type=FiniteFloatRange(min=0.1),
    default=None,
    help="Seconds between clip starts [default: clip seconds].",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=300.0,
    show_default=True,
    type=FiniteFloatRange(min=0.1),
    help="Seconds a decoder may go without producing a clip before its video is marked failed.",
)
@click.option(
    "--max-decode-memory",
    "max_decode_mb",
    default=None,
    type=click.IntRange(64),
    metavar="MB",
    help="Memory each decode worker may use; a video that needs more is failed [default: 4096].",
)
@click.option("--exclude", multiple=True, help="Glob of paths or names to skip (repeatable).")
@click.option("--retry-failed", is_flag=True, help="Try again the videos that failed before.")
@click.option("--prune", is_flag=True, help="Remove indexed videos whose files are gone.")
@click.option("--faiss-spec", default=None, help="Pin a FAISS index type (factory string), e.g. 'IDMap2,Flat'.")
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help="Decode and embed on a Ray cluster (needs vidsearch[ray]): ADDRESS, else RAY_ADDRESS, else a new local "
    "Ray. Put it after PATHS, or write --ray=ADDRESS.",
)
@click.option(
    "--ray-actors", type=click.IntRange(1), default=None, help="Encoder actors [default: one per GPU, else 1]."
)
@click.option(
    "--ray-gpus-per-actor",
    type=FiniteFloatRange(min=0),
    default=None,
    help="GPUs each encoder actor holds [default: 1 where the cluster has GPUs, else 0].",
)
@click.option(
    "--ray-decode-cpus",
    type=FiniteFloatRange(min=0, min_open=True),
    default=None,
    help="CPUs each decode task holds [default: 1].",
)
@click.pass_context
def index_cmd(
    ctx,
    paths,
    index_dir,
    model,
    device,
    dtype,
    batch_size,
    workers,
    clip_seconds,
    hop_seconds,
    timeout_s,
    max_decode_mb,
    exclude,
    retry_failed,
    prune,
    faiss_spec,
    ray_address,
    ray_actors,
    ray_gpus_per_actor,
    ray_decode_cpus,
):
    """Index the videos under PATHS (files or folders, recursive). Incremental and resumable."""
    from vidsearch.indexer.job import DEFAULT_MAX_DECODE_MB, IndexOptions, default_workers, index_paths

    ray_options = _ray_options(ray_address, ray_actors, ray_gpus_per_actor, ray_decode_cpus, workers)

    quiet = ctx.obj["quiet"]
    opts = IndexOptions(
        model=model,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        workers=workers or default_workers(),
        clip_seconds=clip_seconds,
        hop_seconds=hop_seconds,
        timeout_s=timeout_s,
        retry_failed=retry_failed,
        prune=prune,
        exclude=tuple(exclude),
        faiss_spec=faiss_spec,
        max_decode_mb=max_decode_mb or DEFAULT_MAX_DECODE_MB,
        progress=not quiet and sys.stderr.isatty(),
    )
    if ray_options is None:
        summary = index_paths(index_dir, paths, opts)
    else:
        from vidsearch.indexer.ray_job import index_on_ray

        summary = index_on_ray(index_dir, paths, opts, ray_options)
    click.echo(render.index_summary(summary), err=quiet)
    for path, reason in summary.failed:
        click.echo(f"failed: {path}: {reason}", err=True)
    if summary.interrupted:
        click.echo(
            f"{'terminated' if summary.terminated else 'interrupted'}: the videos committed so far are kept; "
            "run the same command to finish",
            err=True,
        )
        ctx.exit(_interrupt_exit_code(summary.terminated))
    if summary.failed:
        ctx.exit(VideosFailedError.exit_code)


def _ray_options(address, actors, gpus_per_actor, decode_cpus, workers):
    """RayOptions for ``index --ray``, or None without it (the other --ray-* options need it)."""
    if address is None:
        named = (("actors", actors), ("gpus-per-actor", gpus_per_actor), ("decode-cpus", decode_cpus))
        given = [name for name, value in named if value is not None]
        if given:
            raise click.UsageError(f"--ray-{given[0]} needs --ray")
        return None
    if address and os.path.exists(address):  # `--ray PATH`: click took a path for the address
        raise click.BadParameter(
            f"{address!r} is a path, not a Ray address: put PATHS before --ray, or write --ray=ADDRESS",
            param_hint="--ray",
        )
    if workers is not None:
        raise click.UsageError("--workers is for the built-in job: with --ray, decode tasks take --ray-decode-cpus")
    from vidsearch.indexer.ray_job import RayOptions

    return RayOptions(address or None, actors, gpus_per_actor, 1.0 if decode_cpus is None else decode_cpus)


@cli.command("search")
@click.argument("queries", nargs=-1, type=click.Path())
@index_option
@model_options
@click.option(
    "--queries",
    "query_list",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="File listing query videos, one a line (relative to the file's folder), searched after any QUERIES.",
)
@click.option("--start", type=FiniteFloatRange(min=0), default=None, help="Query only from this second.")
@click.option("--end", type=FiniteFloatRange(min=0), default=None, help="Query only up to this second.")
@click.option(
    "-k", "--top", "k", default=10, show_default=True, type=click.IntRange(1), help="Videos to list per query."
)
@click.option(
    "--neighbors", default=50, show_default=True, type=click.IntRange(1), help="Nearest clips fetched per query clip."
)
@click.option("--clips", "raw_clips", is_flag=True, help="List raw clip hits instead of aligned videos.")
@click.option("--include-self", is_flag=True, help="Keep the query video itself in its results.")
@keep_common_option
@click.option(
    "--min-confidence",
    type=FiniteFloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Leave out segments whose confidence (0-1, the same scale for every query) is lower.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "vsc"]),
    default="text",
    show_default=True,
    help="vsc: the VSC 2022 matching-track CSV, one row per segment.",
)
@json_option
@click.pass_context
def search_cmd(
    ctx,
    queries,
    index_dir,
    model,
    device,
    dtype,
    query_list,
    start,
    end,
    k,
    neighbors,
    raw_clips,
    include_self,
    keep_common,
    min_confidence,
    fmt,
    as_json,
):
    """Find the indexed videos most like each QUERY (a video file, or an indexed video's path)."""
    from vidsearch.model.encoder import load_encoder
    from vidsearch.search.query import read_queries, search_video
    from vidsearch.search.vsc import search_matches
    from vidsearch.storage.stats import open_library

    if start is not None and end is not None and end <= start:
        raise click.BadParameter(f"--end ({end:g}) must be after --start ({start:g})", param_hint="--end")
    fmt = "json" if as_json else fmt
    queries = list(queries) + (read_queries(query_list) if query_list else [])
    if not queries:
        raise click.UsageError("give QUERIES or --queries LIST")
    out = []
    with open_library(index_dir) as lib:
        encoder = None
        if model is not None or any(os.path.exists(q) for q in queries):
            encoder = load_encoder(model or lib.manifest.encoder.model, device, dtype)
            lib.check_compatible(encoder.settings)
        for q in queries:
            res = search_video(
                lib,
                encoder,
                q,
                start=start,
                end=end,
                k=k,
                neighbors=neighbors,
                include_self=include_self,
                keep_common=keep_common,
                min_confidence=min_confidence,
            )
            out.append(res)
            if fmt == "text":
                click.echo(render.search_text(res, raw_clips, k))
        if fmt == "vsc":
            click.echo(render.vsc_csv(search_matches(lib, out)), nl=False)
    if fmt == "json":
        click.echo(render.search_json(out, raw_clips, k))


@cli.command("stats")
@index_option
@json_option
def stats_cmd(index_dir, as_json):
    """Counts, settings, size on disk, and the videos that failed."""
    from vidsearch.storage.stats import library_stats, open_library

    with open_library(index_dir) as lib:
        st = library_stats(lib)
    click.echo(render.stats_json(st) if as_json else render.stats_text(st))


@cli.command("remove")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@index_option
def remove_cmd(paths, index_dir):
    """Take videos (or every video under a folder) out of the index."""
    from vidsearch.indexer.job import remove_paths

    removed = remove_paths(index_dir, paths)
    click.echo(f"removed {len(removed)} video(s)")


@cli.command("reindex")
@index_option
@click.option("--spec", default=None, help="Pin a FAISS index factory string, e.g. 'IVF1024,SQfp16' or 'HNSW32,Flat'.")
@click.option("--auto", "auto", is_flag=True, help="Unpin: let the index size choose the type again.")
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
        until = lib.exact_until(n)
    click.echo(render.reindex_text(m.faiss_spec, m.faiss_pinned, m.faiss_params, n, until))


@cli.command("verify")
@index_option
@click.option("--repair", is_flag=True, help="Rebuild what can be rebuilt (the FAISS file; damaged catalog rows).")
@json_option
@click.pass_context
def verify_cmd(ctx, index_dir, repair, as_json):
    """Check that the manifest, catalog and FAISS index agree (exit 5 when they do not)."""
    from vidsearch.storage.verify import verify

    report = verify(index_dir, repair=repair)
    click.echo(render.verify_json(report) if as_json else render.verify_text(report, repair))
    if not report.ok:
        ctx.exit(CorruptIndexError.exit_code)


@cli.command("dupes")
@index_option
@threshold_option
@click.option(
    "--min-seconds",
    type=FiniteFloatRange(min=0),
    default=None,
    help="Shortest matched segment to report [default: the smaller of two hops and 80% of the shorter video].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "vsc"]),
    default="table",
    show_default=True,
    help="vsc: the VSC 2022 matching-track CSV, one row per segment (video a as the query).",
)
@click.option("--groups", is_flag=True, help="Report groups of connected duplicates instead of pairs.")
@click.option(
    "--include-decided", is_flag=True, help="Also report the pairs you judged not_a_match or keep_both (`decide`)."
)
@common_min_videos_option
@keep_common_option
@click.pass_context
def dupes_cmd(ctx, index_dir, threshold, min_seconds, fmt, groups, include_decided, common_min_videos, keep_common):
    """Find near-duplicate videos across the library (pairs, or --groups)."""
    from vidsearch.search.duplicates import COMMON_MIN_VIDEOS, find_duplicates
    from vidsearch.search.vsc import duplicate_matches
    from vidsearch.storage.stats import open_library

    if fmt == "vsc" and groups:
        raise click.UsageError("--format vsc lists the segments of pairs; it has no --groups form")
    with open_library(index_dir) as lib:
        report = find_duplicates(
            lib,
            threshold,
            min_seconds,
            common_min_videos=common_min_videos or COMMON_MIN_VIDEOS,
            keep_common=keep_common,
            include_decided=include_decided,
        )
        matches = duplicate_matches(lib, report) if fmt == "vsc" else []
    _default_threshold_note(report.threshold_source, report.threshold)
    if fmt == "vsc":
        click.echo(render.vsc_csv(matches), nl=False)
    elif fmt == "json":
        click.echo(render.dupes_json(report, groups))
    elif fmt == "csv":
        click.echo(render.dupes_csv(report, groups), nl=False)
    else:
        click.echo(render.dupes_text(report, groups))


@cli.command("common")
@index_option
@threshold_option
@common_min_videos_option
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def common_cmd(index_dir, threshold, common_min_videos, fmt):
    """List common footage (intros, stings): where it appears, largest first. Search marks it."""
    from vidsearch.search.duplicates import COMMON_MIN_VIDEOS, find_common
    from vidsearch.storage.stats import open_library

    with open_library(index_dir) as lib:
        report = find_common(lib, threshold, common_min_videos or COMMON_MIN_VIDEOS)
    _default_threshold_note(report.threshold_source, report.threshold)
    if fmt == "json":
        click.echo(render.common_json(report))
    elif fmt == "csv":
        click.echo(render.common_csv(report), nl=False)
    else:
        click.echo(render.common_text(report))


def _default_threshold_note(source: str, threshold: float) -> None:
    if source == "default":
        click.echo(
            f"note: using the default threshold {threshold:g}; run `vidsearch calibrate` to fit it "
            "to this model and library",
            err=True,
        )


@cli.command("decide")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.argument("verdict", type=click.Choice(["not_a_match", "same", "keep_both"]))
@index_option
def decide_cmd(a, b, verdict, index_dir):
    """Record your VERDICT on the indexed videos at paths A and B; `dupes` then hides the pair
    (not_a_match, keep_both) or marks it (same). It follows the files' content, not their paths."""
    from vidsearch.storage.decisions import decide
    from vidsearch.storage.stats import open_library

    with open_library(index_dir) as lib:
        decision = decide(lib, a, b, verdict)
    click.echo(render.decision_text(decision))


@cli.command("decisions")
@index_option
@click.option("--undo", type=click.IntRange(1), default=None, metavar="N", help="Remove the verdict numbered N.")
@click.option(
    "--import",
    "import_from",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Store the verdicts of a `decisions --json` file (e.g. from the index of another model).",
)
@json_option
def decisions_cmd(index_dir, undo, import_from, as_json):
    """List your verdicts on pairs (`decide`), numbered; --undo N removes one."""
    from vidsearch.storage.decisions import import_decisions, list_decisions, undo_decision
    from vidsearch.storage.stats import open_library

    if undo is not None and import_from is not None:
        raise click.UsageError("give --undo or --import, not both")
    with open_library(index_dir) as lib:
        if undo is not None:
            click.echo(f"removed:\n{render.decision_text(undo_decision(lib, undo))}")
            return
        if import_from is not None:
            click.echo(f"imported {import_decisions(lib, import_from)} verdict(s) from {import_from}", err=True)
        found = list_decisions(lib)
    click.echo(render.decisions_json(found) if as_json else render.decisions_text(found))


@cli.command("explain")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@index_option
@model_options
@threshold_option
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Draw the clip-by-clip similarity matrix to this PNG, segments outlined (needs vidsearch[plot]).",
)
@json_option
def explain_cmd(a, b, index_dir, model, device, dtype, threshold, plot, as_json):
    """Why A and B match: their aligned segments with per-clip similarities. B is an indexed video;
    A an indexed video (its stored clips) or a video file (embedded like a search query)."""
    from pathlib import Path

    from vidsearch.model.encoder import load_encoder
    from vidsearch.search.explain import explain_pair, needs_encoder
    from vidsearch.storage.stats import open_library

    if plot is not None:
        render.require_plot()
    with open_library(index_dir) as lib:
        encoder = None
        if needs_encoder(lib, a) and os.path.exists(a):
            encoder = load_encoder(model or lib.manifest.encoder.model, device, dtype)
        explanation = explain_pair(lib, encoder, a, b, threshold)
    click.echo(render.explain_json(explanation) if as_json else render.explain_text(explanation))
    if plot is not None:
        Path(plot).write_bytes(render.explain_png(explanation))
        click.echo(f"wrote the similarity matrix to {plot}", err=True)


@cli.command("calibrate")
@index_option
@model_options
@click.option("--sample", default=50, show_default=True, type=click.IntRange(2), help="Videos to sample.")
@click.option("--clips-per-video", default=4, show_default=True, type=click.IntRange(1))
@click.option(
    "--target-fpr",
    default=0.001,
    show_default=True,
    type=FiniteFloatRange(0, 1, min_open=True, max_open=True),
    help="False-positive rate to hold among unrelated nearest-neighbour clips.",
)
@click.option("--max-seconds", default=600.0, show_default=True, type=FiniteFloatRange(min=1), help="Time budget.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--accept",
    is_flag=True,
    help="Store the threshold even when it misses more than half of the augmented copies.",
)
@json_option
@click.pass_context
def calibrate_cmd(
    ctx, index_dir, model, device, dtype, sample, clips_per_video, target_fpr, max_seconds, seed, accept, as_json
):
    """Fit the duplicate threshold to this model and library; stored in the manifest.

    Pairs that look like real copies in the library (as similar as augmented copies, and
    aligned in time, in a video too short to align, or mostly covered by the two videos' match)
    are left out of the unrelated pairs and listed. A threshold that would miss more than half
    of the augmented copies (recall < 0.5) is shown with alternatives but not stored, and
    calibrate exits 1: store it with --accept, or give dupes a --threshold.
    """
    from vidsearch.model.encoder import load_encoder
    from vidsearch.search.calibrate import calibrate
    from vidsearch.storage.stats import open_library

    with open_library(index_dir, writable=True) as lib:
        encoder = load_encoder(model or lib.manifest.encoder.model, device, dtype)
        cal = calibrate(
            lib,
            encoder,
            sample=sample,
            clips_per_video=clips_per_video,
            target_fpr=target_fpr,
            max_seconds=max_seconds,
            seed=seed,
            accept=accept,
            say=lambda m: click.echo(m, err=True),
        )
    click.echo(render.calibration_json(cal) if as_json else render.calibration_text(cal))
    if as_json and cal.warning:
        click.echo(f"WARNING: {cal.warning}", err=True)
    if not cal.stored:
        ctx.exit(VidsearchError.exit_code)


@cli.command("export")
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
@index_option
@click.option("--format", "fmt", type=click.Choice(["vsc", "npz", "parquet"]), default="vsc", show_default=True)
@click.option(
    "--only",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="File listing the videos to export (paths, file stems or VSC ids, one a line).",
)
@click.option(
    "--dim", type=click.IntRange(1), default=None, help="Reduce with PCA fitted on the exported set (VSC: 512)."
)
def export_cmd(out, index_dir, fmt, only, dim):
    """Write clip descriptors to OUT: VSC 2022 descriptor npz (with its id table, OUT.ids.csv), plain npz,
    or parquet. OUT - is stdout (npz and parquet)."""
    from vidsearch.storage.export import export
    from vidsearch.storage.stats import open_library

    to_stdout = out == "-"
    if to_stdout and sys.stdout.isatty():
        raise click.UsageError("not writing binary descriptors to a terminal; redirect stdout, or give a file")
    with open_library(index_dir) as lib:
        n = export(lib, sys.stdout.buffer if to_stdout else out, fmt, only, dim)
    click.echo(f"wrote {n} descriptors to {'stdout' if to_stdout else out}", err=to_stdout)


@cli.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the demo's videos and index [default: a new temporary folder].",
)
@model_options
@click.pass_context
def demo_cmd(ctx, directory, model, device, dtype):
    """Index a small library made from the bundled Big Buck Bunny clip, search it, find its duplicates."""
    import shlex

    from vidsearch.demo import run_demo
    from vidsearch.indexer.job import IndexOptions

    quiet = ctx.obj["quiet"]
    opts = IndexOptions(model=model, device=device, dtype=dtype, progress=not quiet and sys.stderr.isatty())
    demo = run_demo(directory, opts, say=lambda message: click.echo(message, err=quiet))
    click.echo("\nsearch: which videos hold the query's footage, and where")
    click.echo(render.search_text(demo.search, raw_clips=False, k=10))
    click.echo("\ndupes --groups: which videos share footage")
    click.echo(render.dupes_text(demo.dupes, groups=True))
    index = shlex.quote(str(demo.index_dir))
    nexts = [
        f"vidsearch search {shlex.quote(str(demo.library.query))} --index {index}",
        f"vidsearch dupes --groups --index {index}",
    ]
    if "serve" in cli.commands:
        nexts.append(f"vidsearch serve --index {index}")
    click.echo(f"\nthe index is in {demo.index_dir}; next, try:")
    for command in nexts:
        click.echo(f"  {command}")


@cli.command("serve")
@index_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (off loopback: --token needed).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@model_options
@click.option(
    "--token",
    envvar="VIDSEARCH_TOKEN",
    default=None,
    help="Access token every request must carry (env VIDSEARCH_TOKEN); required off loopback.",
)
@click.option(
    "--max-upload-mb",
    default=500,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Largest query upload (refused while it streams).",
)
def serve_cmd(index_dir, host, port, model, device, dtype, token, max_upload_mb):
    """Serve the web app and its JSON API over this index (needs the `serve` extra)."""
    try:
        import uvicorn

        from vidsearch.server.app import create_app, is_loopback
    except ImportError as exc:
        raise InvalidArgumentError(
            f"vidsearch serve needs the `serve` extra: pip install 'vidsearch[serve]' ({exc.name} is missing)"
        ) from None
    if not is_loopback(host) and not token:
        raise InvalidArgumentError(
            f"binding to {host} (off loopback) needs an access token: pass --token or set VIDSEARCH_TOKEN"
        )
    app = create_app(index_dir, model=model, device=device, dtype=dtype, token=token, max_upload_mb=max_upload_mb)
    click.echo(f"vidsearch serving {os.path.abspath(index_dir)} on http://{host}:{port}/ (Ctrl-C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main() -> None:
    cli(prog_name="vidsearch")


if __name__ == "__main__":
    main()
