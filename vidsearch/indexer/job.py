"""The indexing job: incremental, resumable, decode in worker processes overlapped with embedding.

Each video is committed (row, clips, embeddings, status) in one transaction as soon as its
last clip is embedded, so killing the job at any moment loses only the videos in flight, and
running it again finishes the work. The FAISS file is saved every minute and at the end; a
file older than the catalog is rebuilt from it on the next open.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from vidsearch.errors import Terminated
from vidsearch.faults import fault
from vidsearch.indexer.plan import abs_bytes, classify, is_under
from vidsearch.indexer.workers import (
    DEFAULT_MAX_DECODE_MB,
    ClipMsg,
    DecodeSettings,
    DecodeTask,
    Done,
    Failed,
    Info,
    Switched,
    WorkerPool,
    probe_durations,
)
from vidsearch.media.discover import DiscoveryReport, VideoFile, check_paths_exist, discover
from vidsearch.media.readers import Clip, VideoInfo
from vidsearch.model.encoder import Encoder, load_encoder
from vidsearch.settings import DEFAULT_MODEL, ClipSettings
from vidsearch.storage.catalog import ClipRecord, VideoRecord
from vidsearch.storage.library import Library
from vidsearch.storage.progress import ProgressFile
from vidsearch.storage.vectors import VectorIndex

log = logging.getLogger(__name__)

SAVE_EVERY_S = 60.0
_NO_FRAMES = np.zeros((0, 1, 1, 3), dtype=np.uint8)
#: On a CPU, a job whose embedding should take longer than this is announced with an estimate.
ESTIMATE_WARN_S = 60.0


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2)))


def default_batch_size(device: str) -> int:
    """32 clips on a GPU; 1 on a CPU, where batching VideoMAE-L was measured 10% slower than
    one clip at a time (benchmarks/RESULTS.md)."""
    return 32 if str(device).startswith("cuda") else 1


@dataclass(frozen=True)
class IndexOptions:
    """Settings of an indexing job. ``None`` means: the index's own, or the default."""

    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int | None = None
    workers: int = field(default_factory=default_workers)
    clip_seconds: float | None = None
    hop_seconds: float | None = None
    timeout_s: float = 300.0
    retry_failed: bool = False
    prune: bool = False
    exclude: tuple[str, ...] = ()
    faiss_spec: str | None = None
    progress: bool = False
    backend: str = "auto"
    #: each decode worker's memory limit; a file that needs more is failed
    max_decode_mb: int = DEFAULT_MAX_DECODE_MB

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout_s}")
        if self.max_decode_mb < 1:
            raise ValueError(f"max_decode_mb must be >= 1, got {self.max_decode_mb}")


@dataclass
class IndexSummary:
    indexed: int = 0
    skipped: int = 0
    moved: int = 0
    copied: int = 0
    pruned: int = 0
    clips: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    interrupted: bool = False
    #: interrupted by SIGTERM (Terminated) rather than Ctrl-C
    terminated: bool = False
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


@dataclass
class _Job:
    file: VideoFile
    replace_id: int | None
    info: VideoInfo | None = None
    planned: int = 0
    clips: dict[int, Clip] = field(default_factory=dict)
    pixel_std: dict[int, float] = field(default_factory=dict)
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)
    done: int | None = None
    warnings: list[str] = field(default_factory=list)


def _open_or_create(index_dir, opts: IndexOptions, encoder: Encoder | None) -> tuple[Library, Encoder]:
    if opts.faiss_spec:
        VectorIndex.empty(8, opts.faiss_spec)  # a bad factory string fails before anything is written
    if Library.exists(index_dir):
        lib = Library.open(index_dir, writable=True)
        try:
            have = lib.manifest.clips
            if opts.clip_seconds is not None or opts.hop_seconds is not None:
                lib.check_compatible(
                    clips=ClipSettings(
                        opts.clip_seconds if opts.clip_seconds is not None else have.clip_seconds,
                        opts.hop_seconds if opts.hop_seconds is not None else have.hop_seconds,
                    )
                )
            if encoder is None:
                encoder = load_encoder(opts.model or lib.manifest.encoder.model, opts.device, opts.dtype)
            lib.check_compatible(encoder.settings)
            if opts.faiss_spec and (opts.faiss_spec != lib.manifest.faiss_spec or not lib.manifest.faiss_pinned):
                lib.update_manifest(faiss_spec=opts.faiss_spec, faiss_pinned=True, faiss_params={})
        except BaseException:
            lib.close()
            raise
        return lib, encoder
    if encoder is None:
        encoder = load_encoder(
            opts.model or os.environ.get("VIDSEARCH_MODEL") or DEFAULT_MODEL, opts.device, opts.dtype
        )
    clips = None
    if opts.clip_seconds is not None or opts.hop_seconds is not None:
        clip_s = opts.clip_seconds if opts.clip_seconds is not None else ClipSettings().clip_seconds
        clips = ClipSettings(clip_s, opts.hop_seconds if opts.hop_seconds is not None else clip_s)
    return Library.create(index_dir, encoder.settings, clips, opts.faiss_spec), encoder


def _plan_work(
    lib: Library,
    paths,
    files: Sequence[VideoFile],
    opts: IndexOptions,
    summary: IndexSummary,
    deferred: list[VideoFile],
) -> list[_Job]:
    """Classify discovered files against the catalog, apply the moves, copies, failures and
    pruning, and return the videos to decode and embed. Files with the same content as one already
    queued go to ``deferred``, to be planned again (as copies) after the run."""
    with lib.catalog.read() as session:
        rows = lib.catalog.videos(session)
    plan = classify(files, rows, opts.retry_failed, paths if opts.prune else ())
    summary.skipped += plan.skipped + len(plan.touched)
    for f, reason in plan.unreadable:
        _fail(lib, f, reason, summary)
    for move in plan.touched:
        lib.sync_vectors(
            lib.catalog.move_video(move.video_id, move.file.path_bytes, move.file.size, move.file.mtime_ns)
        )
    for move in plan.moves:
        lib.sync_vectors(
            lib.catalog.move_video(move.video_id, move.file.path_bytes, move.file.size, move.file.mtime_ns)
        )
        summary.moved += 1
        log.info("%s: moved from %s; embeddings kept", move.file.path, os.fsdecode(move.previous))
    for copy in plan.copies:
        _, clip_ids, removed = lib.catalog.copy_video(copy.source_id, _record(copy.file, None))
        with lib.catalog.read() as session:
            ids, vectors = lib.catalog.embeddings_by_ids(session, clip_ids, lib.manifest.encoder.dim)
        lib.sync_vectors(removed, ids, vectors)
        summary.copied += 1
    if plan.prune:
        lib.sync_vectors(lib.catalog.remove_videos(plan.prune))
        summary.pruned = len(plan.prune)
    deferred.extend(plan.deferred)
    return [_Job(e.file, e.replace_id) for e in plan.embed]


def _record(f: VideoFile, info: VideoInfo | None) -> VideoRecord:
    return VideoRecord(
        path=f.path_bytes,
        size=f.size,
        mtime_ns=f.mtime_ns,
        fingerprint=f.fingerprint,
        duration_s=info.duration_s if info else None,
        fps=info.fps if info else None,
        width=info.width if info else None,
        height=info.height if info else None,
    )


def _fail(lib: Library, f: VideoFile, reason: str, summary: IndexSummary) -> None:
    _, kept = lib.catalog.store_failure(_record(f, None), reason)
    if kept:
        reason += " (the version indexed before is kept)"
    log.info("failed: %s: %s", f.path, reason)
    summary.failed.append((f.path, reason))


#: Decodes, embeds and commits the planned videos: ``_run`` here, ``indexer.ray_job`` on a Ray cluster.
Runner = Callable[[Library, Encoder, "list[_Job]", IndexOptions, IndexSummary], None]


def index_paths(
    index_dir: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    options: IndexOptions | None = None,
    encoder: Encoder | None = None,
    runner: Runner | None = None,
) -> IndexSummary:
    """Index the videos under ``paths`` into ``index_dir`` (created on first use).

    Unchanged files are skipped, changed ones re-indexed, moved ones keep their embeddings.
    Failed videos are recorded with their reason; the job goes on. Returns a summary.
    ``runner`` replaces the built-in decode-and-embed loop; planning and commits stay here.
    """
    opts = options or IndexOptions()
    t0 = time.monotonic()
    summary = IndexSummary()
    check_paths_exist(paths)
    lib, encoder = _open_or_create(index_dir, opts, encoder)
    run_id = None
    completed = False
    try:
        run_id = lib.catalog.start_run()
        report = DiscoveryReport()
        files = list(discover(paths, opts.exclude, report))
        summary.problems = report.problems
        lib.vectors()  # load or rebuild before any change, so the writer's copy tracks its commits
        deferred: list[VideoFile] = []
        work = _plan_work(lib, paths, files, opts, summary, deferred)
        while work:
            (runner or _run)(lib, encoder, work, opts, summary)
            again, deferred = deferred, []
            work = _plan_work(lib, [], again, replace(opts, prune=False), summary, deferred)
        completed = True
    except KeyboardInterrupt as exc:
        summary.interrupted = True
        summary.terminated = isinstance(exc, Terminated)
    finally:
        try:
            if completed:
                lib.switch_index_type()  # exact while small; approximate and tuned past a size
            lib.save_vectors()
            if run_id is not None:
                lib.catalog.finish_run(
                    run_id,
                    "interrupted" if summary.interrupted else "done",
                    indexed=summary.indexed,
                    skipped=summary.skipped,
                    moved=summary.moved,
                    failed=len(summary.failed),
                    clips=summary.clips,
                )
        finally:
            lib.close()
    summary.seconds = time.monotonic() - t0
    return summary


def decode_settings(lib: Library, opts: IndexOptions) -> DecodeSettings:
    """What a decode worker needs to cut and resize this index's clips."""
    m = lib.manifest
    pp = m.encoder.preprocessing
    return DecodeSettings(
        short_edge=pp.shortest_edge if pp.do_resize else None,
        resample=pp.resample,
        num_frames=m.encoder.num_frames,
        clip_seconds=m.clips.clip_seconds,
        hop_seconds=m.clips.hop_seconds,
        backend=opts.backend,
        log_level=logging.getLogger("vidsearch").getEffectiveLevel(),
        max_memory_mb=opts.max_decode_mb,
    )


def _run(lib: Library, encoder: Encoder, work: list[_Job], opts: IndexOptions, summary: IndexSummary) -> None:
    m = lib.manifest
    settings = decode_settings(lib, opts)
    batch_size = opts.batch_size or default_batch_size(encoder.device)
    jobs = {i: job for i, job in enumerate(work)}
    todo = deque(jobs)
    pending: list[tuple[int, int]] = []  # (token, clip index) waiting for the encoder
    pool = WorkerPool(min(opts.workers, len(work)), settings, opts.timeout_s)
    bar = _progress(len(work), opts.progress)
    progress = ProgressFile(lib.root, len(work))
    finished = 0

    def advance() -> None:
        nonlocal finished
        finished += 1
        bar.update(1)
        progress.update(finished, summary.clips)

    last_save = started = time.monotonic()
    estimated = str(encoder.device).startswith("cuda")
    try:
        while todo or pool.busy() or pending:
            for wid in pool.idle():
                if not todo:
                    break
                token = todo.popleft()
                pool.assign(wid, DecodeTask(token, jobs[token].file.path))
            msg = pool.get(timeout=0.05 if pending else 0.5)
            match msg:
                case Info(token, info, planned):
                    jobs[token].info, jobs[token].planned = info, planned
                    for note in info.notes:  # workers do not log: the parent says it
                        log.info("%s: %s", jobs[token].file.path, note)
                case ClipMsg(token, clip, spread):
                    jobs[token].clips[clip.position] = clip
                    jobs[token].pixel_std[clip.position] = spread
                    pending.append((token, clip.position))
                case Switched(token, switch):
                    log.info("%s: %s", jobs[token].file.path, switch)
                case Done(token, decoded, warnings):
                    jobs[token].done, jobs[token].warnings = decoded, warnings
                    fault("after_decode")
                case Failed(token, reason):
                    _fail(lib, jobs[token].file, reason, summary)
                    pending = [p for p in pending if p[0] != token]
                    del jobs[token]
                    advance()
            if len(pending) >= batch_size or (pending and (msg is None or not pool.busy())):
                spent = _embed(encoder, jobs, pending[:batch_size], pool, summary)
                if not estimated:  # timed on the first real batch: no clip is embedded just to time it
                    estimated = True
                    with pool.paused():
                        _estimate(
                            encoder.settings.model, spent / min(len(pending), batch_size), work, m.clips.hop_seconds
                        )
                del pending[:batch_size]
            for task, reason in pool.reap():
                if task.token in jobs:
                    _fail(lib, jobs[task.token].file, reason, summary)
                    pending = [p for p in pending if p[0] != task.token]
                    del jobs[task.token]
                    advance()
            for token in [t for t, j in jobs.items() if j.done is not None and len(j.embeddings) == j.done]:
                with pool.paused():
                    _commit(lib, jobs.pop(token), summary)
                advance()
                rate = summary.clips / max(time.monotonic() - started, 1e-9)
                bar.set_postfix_str(f"{summary.clips} clips, {rate:.1f} clips/s", refresh=False)
            if time.monotonic() - last_save > SAVE_EVERY_S:
                with pool.paused():
                    lib.save_vectors()
                last_save = time.monotonic()
    finally:
        pool.close()
        bar.close()
        progress.close()


@dataclass(frozen=True)
class Embedded:
    """A clip embedded outside the job's loop (by a Ray encoder actor): ClipMsg's clip (its frames
    let go) and pixel spread, and its unit vector."""

    token: int
    clip: Clip
    pixel_std: float
    vector: np.ndarray


def consume(
    lib: Library,
    work: list[_Job],
    stream: Iterable[Info | Embedded | Switched | Done | Failed],
    opts: IndexOptions,
    summary: IndexSummary,
) -> None:
    """Commit ``work`` from a stream of messages about it whose clips come embedded (``token``:
    the video's place in ``work``). Messages may come in any order and more than once: clips are
    keyed by (token, position), and a video is committed once, when its info, its final message
    and all its clips are in. A video still open when the stream ends is failed."""
    jobs = dict(enumerate(work))
    bar = _progress(len(work), opts.progress)
    progress = ProgressFile(lib.root, len(work))
    last_save = time.monotonic()

    def finish(token: int, reason: str | None = None) -> None:
        job = jobs.pop(token)
        if reason is None:
            _commit(lib, job, summary)
        else:
            _fail(lib, job.file, reason, summary)
        bar.update(1)
        progress.update(len(work) - len(jobs), summary.clips)

    try:
        for msg in stream:
            job = jobs.get(msg.token)
            if job is None:  # committed or failed already: a repeat from a retried task
                continue
            match msg:
                case Info(_, info, planned):
                    job.info, job.planned = info, planned
                    for note in info.notes:
                        log.info("%s: %s", job.file.path, note)
                case Embedded(_, clip, spread, vector):
                    job.clips[clip.position], job.pixel_std[clip.position] = clip, spread
                    job.embeddings[clip.position] = vector
                case Switched(_, switch):
                    log.info("%s: %s", job.file.path, switch)
                case Done(_, decoded, warnings):
                    job.done, job.warnings = decoded, warnings
                    fault("after_decode")
                case Failed(_, reason):
                    finish(msg.token, reason)
                    continue
            if job.info is not None and job.done is not None and len(job.embeddings) == job.done:
                finish(msg.token)
            if time.monotonic() - last_save > SAVE_EVERY_S:
                lib.save_vectors()
                last_save = time.monotonic()
        for token, job in list(jobs.items()):
            got = f"{len(job.embeddings)} of {job.done if job.done is not None else job.planned or '?'} clips"
            finish(token, f"its decode or embedding was lost ({got} came back); --retry-failed tries it again")
    finally:
        bar.close()
        progress.close()


def _embed(
    encoder: Encoder, jobs: dict[int, _Job], batch: list[tuple[int, int]], pool: WorkerPool, summary: IndexSummary
) -> float:
    """Embed ``batch`` into its jobs; returns the seconds it took."""
    with pool.paused():
        t = time.monotonic()
        clips = [jobs[tok].clips[i] for tok, i in batch]
        sizes = [_source_size(jobs[tok].info) for tok, _ in batch]
        vectors = encoder.embed([c.frames for c in clips], sizes)
        for (tok, i), vec in zip(batch, vectors):
            job = jobs[tok]
            job.embeddings[i] = vec
            c = job.clips[i]
            job.clips[i] = Clip(
                c.position, c.start_s, c.end_s, _NO_FRAMES
            )  # let the frames go (a view would keep them)
        spent = time.monotonic() - t
    summary.embed_seconds += spent
    fault("after_embed")
    return spent


def _source_size(info: VideoInfo | None) -> tuple[int, int] | None:
    """The size a clip's frames were decoded from (Info always comes before a video's clips)."""
    return (info.width, info.height) if info is not None else None


@contextmanager
def _signals_deferred():
    """Hold a Ctrl-C or SIGTERM that arrives inside the block until the block is done, then
    deliver it to the handler it would have met (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in held]
    try:
        yield
    finally:
        for sig, handler in zip(held, previous):
            signal.signal(sig, handler)
    for signum in dict.fromkeys(caught):
        signal.raise_signal(signum)


def _commit(lib: Library, job: _Job, summary: IndexSummary) -> None:
    if job.done == 0:
        _fail(lib, job.file, "no clip could be decoded", summary)
        return
    try:
        st = os.stat(job.file.path)
        changed = (st.st_size, st.st_mtime_ns) != (job.file.size, job.file.mtime_ns)
    except FileNotFoundError:
        _fail(lib, job.file, "file was deleted while it was being indexed", summary)
        return
    except OSError as exc:
        _fail(lib, job.file, f"cannot read file any more ({exc.strerror or exc})", summary)
        return
    if changed:  # its clips may mix old and new content: keep none; the next run sees it as changed
        _fail(lib, job.file, "file changed while it was being indexed; run again to index the new version", summary)
        return
    order = sorted(job.embeddings)
    records = [ClipRecord(job.clips[i].start_s, job.clips[i].end_s, job.embeddings[i], job.pixel_std[i]) for i in order]
    with _signals_deferred():  # the catalog and the in-memory index change together
        _, clip_ids, removed = lib.catalog.store_video(_record(job.file, job.info), records, job.replace_id)
        lib.sync_vectors(removed, clip_ids, np.stack([job.embeddings[i] for i in order]))
    summary.indexed += 1
    summary.clips += len(records)
    summary.warnings.extend(job.warnings)
    for w in job.warnings:  # workers do not log: the parent says it
        log.warning("%s", w)
    if job.planned and len(records) < job.planned:
        log.info("%s: %d of %d clips decoded", job.file.path, job.done, job.planned)


def _estimate(model: str, per_clip: float, work: list[_Job], hop_seconds: float) -> None:
    """On a CPU, say early roughly how long embedding will take (``per_clip``: seconds a clip, measured)."""
    if per_clip < 0.05:  # a small model: nothing worth warning about
        return
    sample = work if len(work) <= 200 else [work[i] for i in np.linspace(0, len(work) - 1, 200).astype(int)]
    seconds = probe_durations([job.file.path for job in sample])  # in a child: a bad file cannot hurt the job
    if seconds is None:
        return
    clips = max(len(work), int(seconds * len(work) / len(sample) / hop_seconds))
    total = per_clip * clips
    if total > ESTIMATE_WARN_S:
        log.warning(
            "running %s on the CPU: about %d clips at %.1fs each, roughly %s of embedding; "
            "a GPU (--device cuda) is far faster",
            model,
            clips,
            per_clip,
            _duration(total),
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="video", desc="indexing", dynamic_ncols=True)


def remove_paths(index_dir: str | os.PathLike, paths: Sequence[str | os.PathLike]) -> list[str]:
    """Take videos (files, or every video under a folder) out of the catalog and FAISS index."""
    from vidsearch.errors import VideoNotFoundError

    with Library.open(index_dir, writable=True) as lib:
        lib.vectors()  # loaded before the change, so that the change is applied to it
        with lib.catalog.read() as session:
            rows = lib.catalog.videos(session)
        chosen: dict[int, bytes] = {}
        for p in paths:
            target = abs_bytes(p)
            hits = [r for r in rows if is_under(r.path, target)]
            if not hits:
                raise VideoNotFoundError(f"{os.fsdecode(p)}: no indexed video at that path")
            chosen.update((r.id, r.path) for r in hits)
        lib.sync_vectors(lib.catalog.remove_videos(list(chosen)))
        lib.save_vectors()
    return [os.fsdecode(p) for p in chosen.values()]
