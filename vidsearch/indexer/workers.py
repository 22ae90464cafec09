"""Decode worker processes: one video at a time, clips streamed back to the parent.

Workers are spawned (not forked: the parent holds torch and SQLite state), use one decoder
thread each, and die with the parent (PR_SET_PDEATHSIG on Linux, a watchdog thread elsewhere).
The parent kills a worker that goes silent for longer than the timeout or crashes, marks its
video failed and starts a new worker.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vidsearch.faults import worker_fault, worker_start_fault

if TYPE_CHECKING:
    from vidsearch.media.readers import BackendSwitch, Clip, VideoInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeTask:
    token: int
    path: str


#: Default ``--max-decode-memory``. A worker holds torch (~400 MB resident), FFmpeg's reference
#: frames (HEVC 4K: up to 16 × 12 MB) and a chunk of RGB frames (_PIXEL_BUDGET, ~50 MB, in and
#: resized); decord's read-ahead swings by hundreds of MB more (benchmarks: up to 1 GB at 1080p).
#: 4 GB holds a 4K decode two to three times over and stops a runaway decoder long before it
#: takes a machine's memory.
DEFAULT_MAX_DECODE_MB = 4096
#: Exit status of a worker that went over its memory limit.
OVER_MEMORY_EXIT = 86


@dataclass(frozen=True)
class DecodeSettings:
    short_edge: int | None
    resample: str
    num_frames: int
    clip_seconds: float
    hop_seconds: float
    backend: str = "auto"
    #: the job's log level: decoders' own logs are shown at INFO (-v) and below
    log_level: int = logging.WARNING
    max_memory_mb: int = DEFAULT_MAX_DECODE_MB


#: Decode workers run at a lower priority than the job (and its encoder threads).
WORKER_NICENESS = 10
#: A worker that has not started (imported torch and the decoders) after this long is replaced.
#: Its start never counts against ``--timeout``: on a busy machine a niced worker can take tens
#: of seconds to start, and every video handed to it would time out before it was opened.
STARTUP_TIMEOUT_S = 300.0

# ---- messages from a worker, each about the video of one task (``token``) ----------------------


@dataclass(frozen=True)
class Info:
    """The video opened: what it is and how many clips are planned."""

    token: int
    info: VideoInfo
    planned: int


@dataclass(frozen=True)
class ClipMsg:
    """One decoded clip (media.readers.Clip), with its frames' pixel spread (media.blank), measured
    here so that the parent, which runs the encoder, spends no time on it."""

    token: int
    clip: Clip
    pixel_std: float


@dataclass(frozen=True)
class Switched:
    """decord failed part-way through the video; the rest was read with PyAV."""

    token: int
    switch: BackendSwitch


@dataclass(frozen=True)
class Done:
    """Every clip was sent; ``decoded`` of them, with the warnings (a truncated file, say)."""

    token: int
    decoded: int
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Failed:
    """The video could not be decoded, for ``reason``."""

    token: int
    reason: str


Message = Info | ClipMsg | Switched | Done | Failed


@dataclass(frozen=True)
class _Ready:
    """The worker has started; the pool handles this one itself."""


@dataclass
class _Worker:
    proc: Any  # multiprocessing Process
    conn: Any  # its end of the pipe
    task: DecodeTask | None = None
    #: when it last made progress (monotonic seconds)
    last: float = field(default_factory=time.monotonic)
    #: its pipe broke or it died; reap() collects it
    dead: bool = False
    #: it has said it started: from then on its task's time counts against the timeout
    ready: bool = False
    started: float = field(default_factory=time.monotonic)


def _die_with_parent(parent_pid: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watchdog() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watchdog, daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)


def _limit_memory(max_mb: int) -> None:
    """Exit with OVER_MEMORY_EXIT as soon as the resident set passes ``max_mb``.

    A watcher rather than RLIMIT_AS: torch maps gigabytes of address space it never touches,
    and an allocation refused under RLIMIT_AS surfaces as any of a dozen errors (or an abort in
    decord's C++). Decoders release the GIL while they decode, so the watcher runs meanwhile;
    at 20 ms a decoder writing memory at a few GB/s overshoots by under 100 MB.
    """
    try:
        statm = open("/proc/self/statm", "rb")  # noqa: SIM115  (read for the life of the process)
    except OSError:  # not Linux: the parent's timeout is the only bound
        return
    limit_pages = max_mb * 2**20 // os.sysconf("SC_PAGE_SIZE")

    def watch() -> None:
        while True:
            statm.seek(0)
            if int(statm.read().split()[1]) > limit_pages:
                os._exit(OVER_MEMORY_EXIT)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True, name="memory-limit").start()


def worker_main(worker_id: int, conn, settings: DecodeSettings, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    _limit_memory(settings.max_memory_mb)
    # the parent handles Ctrl-C and SIGTERM, and stops its workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        # on a CPU the encoder is the bottleneck: decoders take the cycles it leaves, not its own
        os.nice(WORKER_NICENESS)
    except OSError:
        pass
    import torch

    torch.set_num_threads(1)
    from vidsearch.errors import DecodeError
    from vidsearch.media.blank import pixel_std
    from vidsearch.media.readers import iter_clips, open_video
    from vidsearch.media.windows import plan_clips
    from vidsearch.settings import FrameSize

    logger = logging.getLogger("vidsearch")
    logger.setLevel(settings.log_level)
    # the parent says what a worker learns (messages); unhandled, Python would print it here too
    logger.addHandler(logging.NullHandler())
    if settings.log_level > logging.INFO:
        # decord's C++ prints its own complaints ("Failed to seek file to position: 0") straight
        # to stderr whatever its log level, and mid-line into the job's; without -v, say nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    frame_size = FrameSize(settings.short_edge, settings.resample)
    worker_start_fault()
    send = conn.send
    send(_Ready())
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the parent is gone
            return
        if task is None:
            return

        def switched(switch: BackendSwitch, token: int = task.token) -> None:
            send(Switched(token, switch))

        try:
            with open_video(task.path, frame_size, settings.backend, num_threads=1) as reader:
                plans = plan_clips(reader.frame_times, settings.num_frames, settings.clip_seconds, settings.hop_seconds)
                send(Info(task.token, reader.info, len(plans)))
                warnings: list[str] = []
                n = 0
                for clip in iter_clips(reader, plans, warnings, switched):
                    worker_fault(task.path)
                    send(ClipMsg(task.token, clip, pixel_std(clip.frames)))
                    n += 1
                send(Done(task.token, n, warnings))
        except DecodeError as exc:
            send(Failed(task.token, exc.reason))
        except Exception as exc:  # any decoder failure is this video's, not the job's
            send(Failed(task.token, f"{type(exc).__name__}: {exc}"))


class WorkerPool:
    """Spawned decode workers, each with its own pipe and fed one task at a time.

    One pipe per worker (not a shared queue): a worker that dies half-way through sending a
    clip takes only its own pipe down, which the parent sees as end-of-file and discards.
    """

    def __init__(self, n: int, settings: DecodeSettings, timeout_s: float):
        self.ctx = mp.get_context("spawn")
        self.settings = settings
        self.timeout_s = timeout_s
        self.workers: dict[int, _Worker] = {}
        self._next_id = 0
        for _ in range(max(1, n)):
            self._start()

    def _start(self) -> None:
        wid = self._next_id
        self._next_id += 1
        parent_end, child_end = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=worker_main,
            args=(wid, child_end, self.settings, os.getpid()),
            daemon=True,
            name=f"vidsearch-decode-{wid}",
        )
        proc.start()
        child_end.close()  # so that the worker's death reads as end-of-file here
        self.workers[wid] = _Worker(proc, parent_end)

    def idle(self) -> list[int]:
        return [wid for wid, w in self.workers.items() if w.task is None and not w.dead]

    def busy(self) -> int:
        return sum(w.task is not None for w in self.workers.values())

    def assign(self, wid: int, task: DecodeTask) -> None:
        w = self.workers[wid]
        w.task, w.last = task, time.monotonic()
        try:
            w.conn.send(task)
        except OSError:
            w.dead = True  # reap() fails its task and replaces it

    def get(self, timeout: float) -> Message | None:
        """The next message from any worker about its current task, or None after ``timeout`` seconds."""
        from multiprocessing.connection import wait

        conns = {w.conn: wid for wid, w in self.workers.items() if not w.dead}
        for conn in wait(list(conns), timeout):
            w = self.workers[conns[conn]]
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):  # died, perhaps half-way through a message
                w.dead = True
                continue
            if isinstance(msg, _Ready):
                w.ready, w.last = True, time.monotonic()
                continue
            if w.task is not None and w.task.token == msg.token:
                w.last = time.monotonic()
                if isinstance(msg, (Done, Failed)):
                    w.task = None
                return msg
        return None

    @contextmanager
    def paused(self):
        """Time the parent spends inside (embedding, committing) does not count against workers."""
        t = time.monotonic()
        try:
            yield
        finally:
            spent = time.monotonic() - t
            for w in self.workers.values():
                w.last += spent

    def reap(self) -> list[tuple[DecodeTask, str]]:
        """Kill hung workers, collect crashed ones; returns their tasks with reasons."""
        failed = []
        now = time.monotonic()
        for wid, w in list(self.workers.items()):
            proc, task = w.proc, w.task
            reason = None
            if w.dead or not proc.is_alive():
                proc.join(1)
                code = proc.exitcode
                if code == OVER_MEMORY_EXIT:
                    reason = f"decoder used more than {self.settings.max_memory_mb} MB"
                elif code and code < 0:
                    reason = f"decoder crashed (signal {-code})"
                else:
                    reason = f"decoder exited ({code})"
            elif task is None or w.conn.poll():
                continue
            elif w.ready and now - w.last > self.timeout_s:
                proc.kill()
                reason = f"decoding timed out ({self.timeout_s:g}s without progress)"
            elif not w.ready and now - w.started > STARTUP_TIMEOUT_S:
                proc.kill()
                reason = f"decoder process did not start in {STARTUP_TIMEOUT_S:g}s"
            if reason is None:
                continue
            proc.join(5)
            w.conn.close()
            del self.workers[wid]
            self._start()
            if task is not None:
                failed.append((task, reason))
        return failed

    def close(self) -> None:
        for w in self.workers.values():
            if w.proc.is_alive():
                w.proc.kill()
        for w in self.workers.values():
            w.proc.join(5)
            w.conn.close()
        self.workers.clear()


def _durations_main(conn, paths: list[str]) -> None:
    from vidsearch.media.readers import open_container

    total = 0.0
    for path in paths:
        try:
            with open_container(path) as c:
                total += (c.duration or 0) / 1e6
        except Exception:  # unreadable files fail later, in a worker, with their reason
            continue
    conn.send(total)


def probe_durations(paths: list[str], timeout_s: float = 30.0) -> float | None:
    """Total container-declared duration of ``paths``, read in a child process (None if it fails)."""
    ctx = mp.get_context("spawn")
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_durations_main, args=(child_end, paths), daemon=True)
    proc.start()
    child_end.close()
    try:
        return parent_end.recv() if parent_end.poll(timeout_s) else None
    except (EOFError, OSError):
        return None
    finally:
        proc.kill()
        proc.join(5)
        parent_end.close()
