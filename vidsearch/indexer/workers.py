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
import queue
import signal
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeTask:
    token: int
    path: str


@dataclass(frozen=True)
class DecodeSettings:
    short_edge: int | None
    resample: str
    num_frames: int
    clip_seconds: float
    hop_seconds: float
    backend: str = "auto"


# messages on the result queue: (kind, worker_id, token, payload)
INFO, CLIP, DONE, ERROR = "info", "clip", "done", "error"


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


def worker_main(worker_id: int, tasks, results, settings: DecodeSettings, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    import torch

    torch.set_num_threads(1)
    from vidsearch.errors import DecodeError
    from vidsearch.indexer.decode import FrameSize, iter_clips, open_video, plan_clips

    frame_size = FrameSize(settings.short_edge, settings.resample)
    # tests: VIDSEARCH_FAULT_WORKER="hang:NAME" or "crash:NAME" makes decoding file NAME hang or segfault
    fault_kind, _, fault_name = os.environ.get("VIDSEARCH_FAULT_WORKER", "").partition(":")
    while True:
        task = tasks.get()
        if task is None:
            return
        try:
            if fault_name and os.path.basename(task.path) == fault_name:
                if fault_kind == "crash":
                    os.kill(os.getpid(), signal.SIGSEGV)
                time.sleep(3600)
            with open_video(task.path, frame_size, settings.backend, num_threads=1) as reader:
                plans = plan_clips(reader.frame_times, settings.num_frames, settings.clip_seconds, settings.hop_seconds)
                results.put((INFO, worker_id, task.token, (reader.info, len(plans))))
                warnings: list[str] = []
                n = 0
                for clip in iter_clips(reader, plans, warnings):
                    results.put((CLIP, worker_id, task.token, clip))
                    n += 1
                results.put((DONE, worker_id, task.token, (n, warnings)))
        except DecodeError as exc:
            results.put((ERROR, worker_id, task.token, exc.reason))
        except Exception as exc:  # any decoder failure is this video's, not the job's
            results.put((ERROR, worker_id, task.token, f"{type(exc).__name__}: {exc}"))


class WorkerPool:
    """Spawned decode workers, each fed one task at a time so its video is known."""

    def __init__(self, n: int, settings: DecodeSettings, timeout_s: float, queue_size: int):
        self.ctx = mp.get_context("spawn")
        self.settings = settings
        self.timeout_s = timeout_s
        self.results = self.ctx.Queue(maxsize=queue_size)
        self.workers: dict[int, dict] = {}
        self._next_id = 0
        for _ in range(max(1, n)):
            self._start()

    def _start(self) -> None:
        wid = self._next_id
        self._next_id += 1
        tasks = self.ctx.SimpleQueue()
        proc = self.ctx.Process(
            target=worker_main, args=(wid, tasks, self.results, self.settings, os.getpid()),
            daemon=True, name=f"vidsearch-decode-{wid}",
        )
        proc.start()
        self.workers[wid] = {"proc": proc, "tasks": tasks, "task": None, "last": time.monotonic()}

    def idle(self) -> list[int]:
        return [wid for wid, w in self.workers.items() if w["task"] is None]

    def busy(self) -> int:
        return sum(w["task"] is not None for w in self.workers.values())

    def assign(self, wid: int, task: DecodeTask) -> None:
        w = self.workers[wid]
        w["task"], w["last"] = task, time.monotonic()
        w["tasks"].put(task)

    def get(self, timeout: float):
        try:
            msg = self.results.get(timeout=timeout)
        except queue.Empty:
            return None
        kind, wid, token, _ = msg
        w = self.workers.get(wid)
        if w is not None and w["task"] is not None and w["task"].token == token:
            w["last"] = time.monotonic()
            if kind in (DONE, ERROR):
                w["task"] = None
            return msg
        return None  # from a worker already given up on

    def pause_clock(self, seconds: float) -> None:
        """Time the parent spent embedding does not count against the workers."""
        for w in self.workers.values():
            w["last"] += seconds

    def reap(self) -> list[tuple[DecodeTask, str]]:
        """Kill hung workers, collect crashed ones; returns their tasks with reasons."""
        failed = []
        now = time.monotonic()
        for wid, w in list(self.workers.items()):
            proc, task = w["proc"], w["task"]
            reason = None
            if not proc.is_alive():
                code = proc.exitcode
                reason = f"decoder crashed (signal {-code})" if code and code < 0 else f"decoder exited ({code})"
            elif task is not None and now - w["last"] > self.timeout_s:
                proc.kill()
                reason = f"decoding timed out ({self.timeout_s:g}s without progress)"
            if reason is None:
                continue
            proc.join(5)
            del self.workers[wid]
            self._start()
            if task is not None:
                failed.append((task, reason))
        return failed

    def close(self) -> None:
        for w in self.workers.values():
            if w["proc"].is_alive():
                w["proc"].kill()
        for w in self.workers.values():
            w["proc"].join(5)
        self.workers.clear()
        self.results.cancel_join_thread()
        self.results.close()
