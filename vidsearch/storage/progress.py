"""A running index job's progress, in ``progress.json`` beside the catalog, for other processes
(the web app) to read. It is advisory: replaced about once a second, removed when the job ends,
and ignored when the process that wrote it is gone (a killed job)."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROGRESS = "progress.json"


@dataclass(frozen=True)
class JobProgress:
    videos_done: int
    videos_total: int
    clips: int
    clips_per_s: float
    eta_s: float | None
    started_at: float
    pid: int
    host: str


def write_progress(root: str | os.PathLike, progress: JobProgress) -> None:
    """Replace the progress file (no fsync: losing it in a crash loses nothing)."""
    path = Path(root) / PROGRESS
    tmp = path.with_name(f".tmp-{os.getpid()}-{PROGRESS}")
    tmp.write_text(json.dumps(asdict(progress)))
    os.replace(tmp, path)


def clear_progress(root: str | os.PathLike) -> None:
    try:
        os.unlink(Path(root) / PROGRESS)
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_progress(root: str | os.PathLike) -> JobProgress | None:
    """The running job's progress; None when no job runs (or its file is unreadable, or left by a
    job that was killed: its process is gone)."""
    try:
        data = json.loads((Path(root) / PROGRESS).read_text())
        progress = JobProgress(**data)
    except (OSError, ValueError, TypeError):
        return None
    if progress.host == socket.gethostname() and not _alive(progress.pid):
        return None
    return progress


class ProgressFile:
    """What an index job calls as it goes: counts in, ``progress.json`` out, at most once a second."""

    def __init__(self, root: str | os.PathLike, total: int, every_s: float = 1.0) -> None:
        self.root, self.total, self.every_s = root, total, every_s
        self.started = time.time()
        self.done = self.clips = 0
        self._last = 0.0

    def update(self, videos_done: int, clips: int) -> None:
        self.done, self.clips = videos_done, clips
        now = time.time()
        if now - self._last < self.every_s and self.done < self.total:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else None
        try:
            write_progress(
                self.root,
                JobProgress(
                    videos_done=self.done,
                    videos_total=self.total,
                    clips=self.clips,
                    clips_per_s=round(self.clips / elapsed, 3),
                    eta_s=None if eta is None else round(eta, 1),
                    started_at=self.started,
                    pid=os.getpid(),
                    host=socket.gethostname(),
                ),
            )
        except OSError:
            pass  # progress is advisory: a full disk is reported by the commit, not here

    def close(self) -> None:
        clear_progress(self.root)
